"""Precisions: the course's dtype names, bytes per value, torch dtypes, and bytes of tensors.

``torch`` is imported inside the functions that need it, so the arithmetic in
:mod:`labkit.planning` stays importable without it.
"""

from __future__ import annotations

#: Bytes needed to store one value of each supported precision.
BYTES_PER_PARAM: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

#: Other spellings accepted by :func:`normalize_dtype`.
DTYPE_ALIASES: dict[str, str] = {
    "float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16",
    "bfloat16": "bf16", "float8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8",
    "qint8": "int8", "quint4x2": "int4"}

#: Precisions a language model runs in with plain torch kernels (int8/int4 need
#: :mod:`labkit.inference.quant`).
MODEL_DTYPES = ("fp32", "bf16", "fp16")


def normalize_dtype(dtype) -> str:
    """The course's name for a precision: ``'float16'`` -> ``'fp16'``.

    Accepts the names in :data:`BYTES_PER_PARAM`, common aliases and ``torch.dtype`` objects.
    Raises ValueError for anything else, naming what is allowed.
    """
    name = str(dtype).removeprefix("torch.").lower()
    name = DTYPE_ALIASES.get(name, name)
    if name not in BYTES_PER_PARAM:
        raise ValueError(f"unknown dtype {dtype!r}; use one of: {', '.join(BYTES_PER_PARAM)}")
    return name


def bytes_per_param(dtype) -> float:
    """Bytes to store one parameter in ``dtype`` (fp32 4, fp16/bf16 2, fp8/int8 1, int4 0.5)."""
    return BYTES_PER_PARAM[normalize_dtype(dtype)]


def model_dtypes() -> dict:
    """The torch dtype of each name in :data:`MODEL_DTYPES`: ``{"fp32": torch.float32, ...}``."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(dtype):
    """The torch dtype of a course precision name (``"fp32"``, ``"bf16"``, ``"fp16"``).

    Raises ValueError naming the allowed values for anything else (int8 and int4 need the
    quantized kernels of :mod:`labkit.inference.quant`).
    """
    import torch

    table = model_dtypes()
    if isinstance(dtype, torch.dtype):
        if dtype in table.values():
            return dtype
        raise ValueError(f"dtype {dtype} is not one of the course's model dtypes: "
                         f"{', '.join(table)}")
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r} for a language model; use one of "
                         f"{', '.join(table)} (int8/int4 weights: see labkit.inference.quant)")
    return table[dtype]


def tensor_bytes(tensors, dedupe: bool = True) -> int:
    """Bytes held by the tensors of a model, a state_dict, one tensor or any iterable of tensors.

    With ``dedupe=True`` (the default) tensors that share storage (a head tied to the
    embedding, views such as a transpose) are counted once, at the size of the storage they
    keep alive (``untyped_storage().nbytes()``): the memory they hold. With ``dedupe=False``
    each tensor counts ``numel() x element_size()``, as if every one were its own copy.
    ``None`` entries (a parameter without a gradient) are skipped.

    Counted from the tensors themselves (**derived** from their dtypes and shapes); a file's
    size on disk (``Path.stat().st_size``) is the measurement that can disagree (headers,
    alignment, metadata).

    Example:
        >>> import torch
        >>> w = torch.zeros(4, 4)
        >>> tensor_bytes({"embed": w, "head": w}), tensor_bytes({"embed": w, "head": w}, dedupe=False)
        (64, 128)
    """
    import torch

    if isinstance(tensors, torch.nn.Module):
        tensors = tensors.state_dict(keep_vars=True).values()
    elif isinstance(tensors, dict):
        tensors = tensors.values()
    elif isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"tensor_bytes expects tensors, a state_dict or a module, "
                             f"got {type(t).__name__}")
        if not dedupe:
            total += t.numel() * t.element_size()
            continue
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key[0] and key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total
