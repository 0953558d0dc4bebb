"""Lower-precision copies of weights.

:func:`convert_state_dict` gives the same weights in fp32, fp16, bf16 or int8; int8 uses
symmetric per-output-channel quantization (one fp32 scale per row of each weight matrix),
written plainly so it can be read: ``q = round(w / scale)``, ``scale = max|row| / 127``.
"""

from __future__ import annotations

import torch

from labkit.memory import normalize_dtype

_FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a 2-D weight to int8 with one fp32 scale per output row; returns ``(q, scale)``.

    ``weight ≈ q * scale[:, None]``; the largest-magnitude value of each row maps to ±127.
    """
    if weight.ndim != 2:
        raise ValueError(f"per-channel quantization needs a 2-D weight, got shape {tuple(weight.shape)}")
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The fp32 weight that ``(q, scale)`` from :func:`quantize_int8_per_channel` stands for."""
    return q.float() * scale[:, None]


def convert_state_dict(state_dict: dict, dtype: str) -> dict:
    """A copy of ``state_dict`` in ``dtype`` (fp32, fp16, bf16 or int8).

    For int8, every 2-D weight ``name`` becomes ``name`` (int8) plus ``name.scale`` (fp32);
    other tensors (norms, biases) stay fp32, as real int8 schemes keep them.
    """
    name = normalize_dtype(dtype)
    if name in _FLOAT_DTYPES:
        return {k: v.detach().to(_FLOAT_DTYPES[name]).contiguous() for k, v in state_dict.items()}
    if name == "int8":
        out = {}
        for key, value in state_dict.items():
            if value.ndim == 2 and value.is_floating_point():
                out[key], out[key + ".scale"] = quantize_int8_per_channel(value)
            else:
                out[key] = value.detach().float().contiguous()
        return out
    raise ValueError(f"convert_state_dict supports fp32, fp16, bf16 and int8, not {dtype!r}")
