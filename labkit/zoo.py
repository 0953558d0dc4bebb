"""Deprecated: moved to :mod:`labkit.inference.zoo` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.zoo",
           "labkit.inference.zoo")

from labkit.inference.zoo import count_params  # noqa: E402,F401
from labkit.inference.zoo import denoise  # noqa: E402,F401
from labkit.inference.zoo import small_cnn  # noqa: E402,F401
from labkit.inference.zoo import tiny_unet  # noqa: E402,F401
from labkit.inference.zoo import TinyUNet  # noqa: E402,F401
from labkit.inference.zoo import transformer_lm  # noqa: E402,F401
from labkit.inference.zoo import transformer_params_formula  # noqa: E402,F401
from labkit.inference.zoo import TransformerLM  # noqa: E402,F401
