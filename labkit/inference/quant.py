"""Lower precision for the course's language models: conversions and quantized layers.

- :func:`convert_state_dict` gives the same weights in fp32, fp16, bf16 or int8; int8 uses
  symmetric per-output-channel quantization (one fp32 scale per row of each weight matrix),
  written plainly so it can be read: ``q = round(w / scale)``, ``scale = max|row| / 127``.
- :func:`quantize_model` turns an fp32
  :class:`~labkit.inference.language_model.LanguageModel` into one of :data:`PRECISIONS`:
  fp32/bf16/fp16, ``int8`` (weight-only, per channel, dequantized inside the matrix product:
  the recommended int8), ``int8-dynamic`` (int8 activations too), ``int8-dynamic-smart`` (the
  same, with the outlier-prone MLP down projection weight-only), and
  ``int4-g32``/``-g64``/``-g128`` (weight-only, groups of 32/64/128 inputs, two values per
  byte). The quantized layers plug into :mod:`labkit.inference.decoder` through its documented
  hook.

Quality is measured in :mod:`labkit.inference.quant_quality`, speed in
:mod:`labkit.inference.quant_bench`. No function here uses the deprecated
``torch.ao.quantization`` or quantized tensors.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from labkit.inference.language_model import LanguageModel
from labkit.machine.dtypes import normalize_dtype, torch_dtype

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


# ============================================================================================
# Quantized layers for the course's decoder (labkit.inference.decoder), and their quality and speed
# ============================================================================================
#
# A quantized layer replaces one ``nn.Linear`` projection of :class:`labkit.inference.decoder.Decoder`
# through the decoder's hook (see "The hook for other weight formats" in labkit/decoder.py):
# any module with ``in_features``, ``out_features`` that maps ``[..., in]`` to ``[..., out]``.
#
# Kernels. The weight-only layers dequantize *inside* the matrix product, so the int8 or int4
# bytes are what streams from memory. They call the CPU kernels PyTorch itself ships for this
# (``torch._weight_int8pack_mm``, ``torch._weight_int4pack_mm_for_cpu``: private operators,
# the ones torchao's version-1 CPU layouts called; torchao deprecated those version-1 configs
# in 0.14, pytorch/ao#2948 and #3596, checked 2026-12-05) with bf16 activations, and the
# dynamic layer calls ``torch._int_mm``. None of them uses the deprecated
# ``torch.ao.quantization`` or quantized tensors. A production CPU kernel for comparison:
# ONNX Runtime's ``MatMulNBits`` (:func:`measure_onnx_precisions`). Each layer also has ``reference(x)``: the same maths written out (unpack,
# dequantize, multiply), slow but readable, and what the tests compare the kernels with.


#: Every precision :func:`quantize_model` knows, in the order the lab shows them.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8", "int8-dynamic",
                               "int8-dynamic-smart", "int4-g32", "int4-g64", "int4-g128")

#: What each precision means, in one line (for tables).
DESCRIPTIONS: dict[str, str] = {
    "fp32": "float32 weights and activations (the reference)",
    "bf16": "bfloat16 weights and activations",
    "fp16": "float16 weights and activations",
    "int8": "int8 weights (per output channel), bf16 activations: weight-only, recommended",
    "int8-dynamic": "int8 weights per channel and int8 activations (dynamic, per token) in "
                    "every projection",
    "int8-dynamic-smart": "as int8-dynamic, but w_down (the MLP's down projection, whose input "
                          "has outlier channels) keeps int8 weight-only with bf16 activations",
    "int4-g32": "int4 weights, one scale and zero per group of 32 inputs, bf16 activations",
    "int4-g64": "int4 weights, groups of 64",
    "int4-g128": "int4 weights, groups of 128",
}

#: The projections of each decoder block that quantization replaces.
PROJECTIONS = ("wqkv", "wo", "w_gate_up", "w_down")


def _as_2d(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    return x.reshape(-1, x.shape[-1]), x.shape[:-1]


class _Int8PerChannelWeights(nn.Module):
    """Holds a weight as int8 (``qweight``) with one fp32 scale per output row (``scale``)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        q, scale = quantize_int8_per_channel(weight)
        self.register_buffer("qweight", q.contiguous())
        self.register_buffer("scale", scale)


class Int8WeightOnlyLinear(_Int8PerChannelWeights):
    """``y = x @ (q * scale)^T``: int8 weights with one scale per output row; activations stay
    floating point (bf16 inside the kernel). Reads 1 byte per weight instead of 4."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight)
        self.register_buffer("_scale_bf16", self.scale.to(torch.bfloat16), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2, lead = _as_2d(x)
        y = torch._weight_int8pack_mm(x2.to(torch.bfloat16).contiguous(), self.qweight,
                                      self._scale_bf16)
        return y.to(x.dtype).view(*lead, self.out_features)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same product written plainly: dequantize the weight, then multiply."""
        return x.float() @ dequantize_int8(self.qweight, self.scale).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


class Int8DynamicLinear(_Int8PerChannelWeights):
    """int8 weights per output channel *and* int8 activations, quantized on the fly with one
    scale per token (``scale_x = max|x_row| / 127``). The product is an integer matrix product
    (``torch._int_mm``, int32 accumulation) rescaled by ``scale_x * scale_w``. Fast, but one
    large activation value (an outlier channel) stretches ``scale_x`` and rounds every small
    value of that token to zero: see the lab."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2, lead = _as_2d(x.float())
        sx = x2.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        xq = torch.round(x2 / sx).clamp_(-127, 127).to(torch.int8)
        y = torch._int_mm(xq, self.qweight.t()).float().mul_(sx).mul_(self.scale)
        return y.to(x.dtype).view(*lead, self.out_features)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Plain maths: quantize-dequantize the activations and the weight, multiply."""
        x2 = x.float()
        sx = x2.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127.0
        xdq = torch.round(x2 / sx).clamp(-127, 127) * sx
        return xdq @ dequantize_int8(self.qweight, self.scale).t()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int8 weights per channel, int8 activations per token")


def quantize_int4_groupwise(weight: torch.Tensor, group_size: int = 64
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 quantization of a 2-D weight in groups of ``group_size`` inputs.

    For each row and each group of ``group_size`` consecutive columns (the last group padded
    with zeros if the width is not a multiple): ``scale = (max - min) / 15``,
    ``q = round((w - min) / scale)`` in 0..15, so ``w ≈ q * scale + min``. Returns
    ``(q, scale, minimum)`` with ``q`` uint8 ``[out, padded_in]`` (one value 0..15 per byte:
    see :func:`pack_int4`), ``scale`` and ``minimum`` fp32 ``[out, n_groups]``.
    """
    if weight.ndim != 2:
        raise ValueError(f"int4 quantization needs a 2-D weight, got shape {tuple(weight.shape)}")
    if not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise ValueError(f"group_size must be an even integer >= 2, got {group_size!r}")
    w = weight.detach().float()
    n_out, n_in = w.shape
    padded = math.ceil(n_in / group_size) * group_size
    if padded != n_in:
        w = torch.nn.functional.pad(w, (0, padded - n_in))
    groups = w.view(n_out, padded // group_size, group_size)
    lo, hi = groups.amin(dim=2), groups.amax(dim=2)
    scale = ((hi - lo) / 15.0).clamp(min=1e-12)
    q = torch.round((groups - lo[..., None]) / scale[..., None]).clamp(0, 15)
    return q.view(n_out, padded).to(torch.uint8), scale, lo


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit values per byte: column ``2j`` in the low nibble, ``2j+1`` in the high one."""
    if q.shape[-1] % 2:
        raise ValueError("pack_int4 needs an even number of columns")
    q = q.to(torch.uint8)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 values 0..15, twice as many columns."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).view(*packed.shape[:-1], packed.shape[-1] * 2)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor,
                    group_size: int, in_features: int | None = None) -> torch.Tensor:
    """The fp32 weight that a packed int4 weight stands for: ``q * scale + min`` per group
    (cut back to ``in_features`` columns if the width was padded)."""
    q = unpack_int4(packed).float()
    n_out, padded = q.shape
    w = (q.view(n_out, -1, group_size) * scale[..., None] + minimum[..., None]).view(n_out, padded)
    return w[:, :in_features] if in_features is not None else w


class Int4WeightOnlyLinear(nn.Module):
    """int4 weight-only layer: :func:`quantize_int4_groupwise`, two values per byte
    (:func:`pack_int4`), dequantized inside the product.

    ``qweight`` (uint8, ``[out, in/2]``), ``scale`` and ``minimum`` are the format (what a file
    would store: half a byte per weight plus 8 bytes per group). For speed the forward pass
    uses PyTorch's CPU int4 kernel, whose own packed copy (``_kernel_weight``, the same
    size) is made once at construction; ``reference(x)`` does the maths plainly.
    """

    def __init__(self, weight: torch.Tensor, group_size: int = 64) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.group_size = group_size
        q, scale, lo = quantize_int4_groupwise(weight, group_size)
        self.padded_in = q.shape[1]
        self.register_buffer("qweight", pack_int4(q))
        self.register_buffer("scale", scale)
        self.register_buffer("minimum", lo)
        # The kernel computes (q - 8) * s + z per group: z = min + 8 s gives q * s + min.
        kernel_sz = torch.stack([scale.t(), (lo + 8.0 * scale).t()], dim=-1)
        self.register_buffer("_kernel_weight",
                             torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1),
                             persistent=False)
        self.register_buffer("_kernel_sz", kernel_sz.to(torch.bfloat16).contiguous(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2, lead = _as_2d(x)
        x2 = x2.to(torch.bfloat16)
        if self.padded_in != self.in_features:
            x2 = torch.nn.functional.pad(x2, (0, self.padded_in - self.in_features))
        y = torch._weight_int4pack_mm_for_cpu(x2.contiguous(), self._kernel_weight,
                                              self.group_size, self._kernel_sz)
        return y.to(x.dtype).view(*lead, self.out_features)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Unpack, dequantize, multiply: the readable version of ``forward``."""
        w = dequantize_int4(self.qweight, self.scale, self.minimum, self.group_size,
                            self.in_features)
        return x.float() @ w.t()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int4, group_size={self.group_size}")


def format_bytes_of(module: nn.Module) -> int:
    """Bytes of a layer's stored format: the weight (or ``qweight``) plus scales and minima;
    the kernels' private copies (names starting with ``_``) are not counted."""
    if type(module) is nn.Linear:
        return module.weight.numel() * module.weight.element_size()
    return sum(t.numel() * t.element_size() for name, t in module.named_buffers()
               if not name.startswith("_"))


def _make_layer(precision: str, weight: torch.Tensor) -> nn.Module:
    if precision == "int8":
        return Int8WeightOnlyLinear(weight)
    if precision == "int8-dynamic":
        return Int8DynamicLinear(weight)
    if precision.startswith("int4-g"):
        return Int4WeightOnlyLinear(weight, int(precision.removeprefix("int4-g")))
    raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")


def layer_plan(precision: str, skip: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Which format each kind of projection gets under ``precision``: a dict from
    ``wqkv``/``wo``/``w_gate_up``/``w_down``/``lm_head`` to a layer precision (or None: kept
    as it is). ``skip`` names projections to leave in floating point."""
    if precision == "int8-dynamic-smart":
        plan = {name: "int8-dynamic" for name in PROJECTIONS}
        plan["w_down"] = "int8"
        plan["lm_head"] = "int8"
    elif precision == "int8-dynamic":
        plan = {name: "int8-dynamic" for name in PROJECTIONS}
        plan["lm_head"] = "int8"   # logits keep full-precision activations (see the lab)
    else:
        plan = {name: precision for name in (*PROJECTIONS, "lm_head")}
    for name in skip:
        if name not in plan:
            raise ValueError(f"skip: unknown projection {name!r}; use {', '.join(plan)}")
        plan[name] = None
    return plan


class QuantizedLanguageModel(LanguageModel):
    """A :class:`labkit.inference.language_model.LanguageModel` whose projections were swapped for quantized
    layers (see :func:`quantize_model`). ``dtype`` is the precision name; the activations
    and the embedding stay fp32."""

    @property
    def weight_bytes_per_token(self) -> float:
        """Bytes of the stored formats of every projection and the head, what one decode
        step reads (plus the negligible norms and one embedding row)."""
        net = self.net
        mods = [getattr(layer, n) for layer in net.layers for n in PROJECTIONS]
        return float(sum(format_bytes_of(m) for m in mods) + format_bytes_of(net.lm_head))


def swap_projections(src, make) -> nn.Module:
    """A copy of the decoder ``src`` whose projections (:data:`PROJECTIONS`) are replaced by
    ``make(layer_index, name, linear)``; the embedding and head are shared, not copied."""
    """A copy of the decoder ``src`` whose projections are ``make(name, linear)``; the module
    tree is copied, the fp32 tensors are shared (never modified), so it is cheap."""
    net = copy.copy(src)
    net._modules = dict(src._modules)
    net._parameters = dict(src._parameters)
    net.layers = nn.ModuleList()
    with torch.no_grad():
        for block in src.layers:
            new_block = copy.copy(block)
            new_block._modules = dict(block._modules)
            for name in PROJECTIONS:
                setattr(new_block, name, make(name, getattr(block, name)))
            net.layers.append(new_block)
        net.lm_head = make("lm_head", src.lm_head)
    return net


def quantize_model(model, precision: str, *, skip: tuple[str, ...] = ()):
    """A copy of ``model`` (a :class:`labkit.inference.language_model.LanguageModel` in fp32) in ``precision``.

    ``fp32``/``bf16``/``fp16`` convert every tensor. The integer precisions replace each
    projection (``wqkv``, ``wo``, ``w_gate_up``, ``w_down`` of every block, and the
    ``lm_head``) with a quantized layer through the decoder's hook (:func:`layer_plan` says
    which gets what; ``skip`` keeps named projections in fp32). The embedding stays fp32: a
    token reads only its own row of it. The original model is not changed.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if model.dtype != "fp32":
        raise ValueError(f"quantize_model starts from the fp32 model, got {model.dtype}")
    if precision in ("fp32", "bf16", "fp16"):
        net = copy.deepcopy(model.net).to(torch_dtype(precision))
        if net.config.tie_embeddings:
            net.lm_head.weight = net.embed.weight
        return LanguageModel(model.name, net, model.tokenizer, precision,
                             chat_template=model.chat_template, source=model.source)
    plan = layer_plan(precision, skip)

    def make(name, linear):
        return linear if plan[name] is None else _make_layer(plan[name], linear.weight)

    net = swap_projections(model.net, make)
    return QuantizedLanguageModel(model.name, net.eval(), model.tokenizer, precision,
                                  chat_template=model.chat_template, source=model.source)
