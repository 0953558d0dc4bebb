"""Small, real PyTorch models of the three architectures the course discusses.

They are randomly initialised (nothing is downloaded) and small enough to build in well under a
second on a laptop, but they are built from the same layers as the big ones, so their parameter
counts, bytes and compute scale the way the big ones do:

- :func:`transformer_lm`: a decoder-only transformer language model (the shape of GPT, Llama);
- :func:`small_cnn`: a convolutional image classifier (the shape of ResNet-style models);
- :func:`tiny_unet`: a denoising U-Net of the kind diffusion models run once per step.
"""

from __future__ import annotations

import torch
from torch import nn


class TransformerLM(nn.Module):
    """Token embedding -> ``n_layers`` pre-norm transformer blocks with causal attention -> logits."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, context: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.context = context
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(context, d_model)
        block = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=4 * d_model,
                                           dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True, bias=False)
        self.blocks = nn.TransformerEncoder(block, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model, bias=False)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``[batch, tokens, vocab]`` for token ids ``[batch, tokens]``."""
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"sequence of {length} tokens is longer than the context of {self.context}")
        positions = torch.arange(length, device=tokens.device)
        x = self.embed(tokens) + self.position(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.head(self.norm(x))


def transformer_lm(vocab_size: int = 8000, d_model: int = 256, n_layers: int = 4, n_heads: int = 4,
                   context: int = 512, seed: int = 0) -> TransformerLM:
    """A decoder-only transformer LM with random weights (seeded)."""
    for name, value in (("vocab_size", vocab_size), ("d_model", d_model), ("n_layers", n_layers),
                        ("n_heads", n_heads), ("context", context)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    torch.manual_seed(seed)
    return TransformerLM(vocab_size, d_model, n_layers, n_heads, context).eval()


def transformer_params_formula(vocab_size: int, d_model: int, n_layers: int, context: int) -> int:
    """Parameters of :func:`transformer_lm`, derived: ``12 L d^2 + 2 L d + (2 V + T + 1) d``.

    Per block: attention projections 4 d^2 (Q, K, V, output) + MLP 8 d^2 (d -> 4d -> d)
    + two LayerNorm weights 2 d. Outside the blocks: token embedding V d, position embedding
    T d, final norm d, output head V d. The ``12 L d^2`` term dominates for big models,
    which is why parameter counts are quoted from width and depth.
    """
    d, n_layer = d_model, n_layers
    return 12 * n_layer * d * d + 2 * n_layer * d + (2 * vocab_size + context + 1) * d


def small_cnn(n_classes: int = 10, width: int = 32, seed: int = 0) -> nn.Sequential:
    """A small convolutional classifier: 3 conv blocks (conv, ReLU, 2x2 max-pool) and a linear head.

    Works for any image size: global average pooling before the head.
    """
    if int(width) < 1 or int(n_classes) < 1:
        raise ValueError("width and n_classes must be >= 1")
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for i in range(3):
        out = width * 2**i
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes)]
    return nn.Sequential(*layers).eval()


class TinyUNet(nn.Module):
    """A two-level U-Net that predicts the noise in an image (the network a diffusion model runs)."""

    def __init__(self, channels: int = 3, width: int = 32):
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.SiLU())
        self.down2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU())
        self.mid = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.out = nn.Conv2d(2 * width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted noise, same shape as ``x`` (``[batch, channels, H, W]``, H and W even)."""
        skip = self.down1(x)
        h = self.up(self.mid(self.down2(skip)))
        return self.out(torch.cat([h, skip], dim=1))


def tiny_unet(channels: int = 3, width: int = 32, seed: int = 0) -> TinyUNet:
    """A :class:`TinyUNet` with random weights (seeded)."""
    if int(width) < 1 or int(channels) < 1:
        raise ValueError("width and channels must be >= 1")
    torch.manual_seed(seed)
    return TinyUNet(channels, width).eval()


@torch.inference_mode()
def denoise(unet: nn.Module, image: torch.Tensor, steps: int) -> torch.Tensor:
    """Run ``steps`` denoising steps (a simplified DDPM-style update): one network call per step.

    The arithmetic of the update is kept minimal; what matters for infrastructure is that a
    diffusion model calls its network once per step, so generation time grows with ``steps``.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = image
    for _ in range(int(steps)):
        x = x - unet(x) / steps
    return x


def count_params(model: nn.Module) -> int:
    """Number of parameters (weights and biases) of a model."""
    return sum(p.numel() for p in model.parameters())
