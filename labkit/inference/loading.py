"""Load a course model by name (``bench decode --model``, the serving engine)."""

from __future__ import annotations

from labkit.inference.language_model import LanguageModel, load_tiny_gpt
from labkit.inference.smollm2 import load_smollm2

#: Names accepted by :func:`load_model` and ``bench decode --model``.
MODEL_NAMES: tuple[str, ...] = ("smollm2", "tiny-gpt")


def load_model(name: str = "smollm2", dtype: str = "fp32", **kwargs) -> LanguageModel:
    """Load a course model by name: ``"smollm2"`` (:func:`~labkit.inference.smollm2.load_smollm2`) or ``"tiny-gpt"``
    (:func:`~labkit.inference.language_model.load_tiny_gpt`)."""
    if name == "smollm2":
        return load_smollm2(dtype, **kwargs)
    if name in ("tiny-gpt", "tiny_gpt", "tiny"):
        return load_tiny_gpt(dtype, **kwargs)
    raise ValueError(f"unknown model {name!r}; use one of {', '.join(MODEL_NAMES)}")
