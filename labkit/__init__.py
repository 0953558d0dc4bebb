"""labkit: the helper package of the AI on EKS Foundations course."""
