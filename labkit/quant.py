"""Lower precision for the course's language models: conversions, quantized layers, quality.

- :func:`convert_state_dict` gives the same weights in fp32, fp16, bf16 or int8; int8 uses
  symmetric per-output-channel quantization (one fp32 scale per row of each weight matrix),
  written plainly so it can be read: ``q = round(w / scale)``, ``scale = max|row| / 127``.
- :func:`quantize_model` turns an fp32 :class:`labkit.models.LanguageModel` into one of
  :data:`PRECISIONS`: fp32/bf16/fp16, ``int8`` (weight-only, per channel, dequantized inside
  the matrix product: the recommended int8), ``int8-dynamic`` (int8 activations too),
  ``int8-dynamic-smart`` (the same, with the outlier-prone MLP down projection weight-only),
  and ``int4-g32``/``-g64``/``-g128`` (weight-only, groups of 32/64/128 inputs, two values per
  byte). The quantized layers plug into :mod:`labkit.decoder` through its documented hook.
- Quality: :func:`quality` (perplexity on ``labkit/data/heldout.txt`` and top-1 agreement
  with fp32), :func:`activation_outliers` (where int8 activations hurt).
- :func:`measure_precisions` and ``python -m labkit bench quant [--json]``
  (:func:`bench_quant_cli`): bytes, decode tokens/s (% of roofline) and quality per precision.
- :func:`measure_onnx_precisions`: the same rows for a production CPU kernel, ONNX Runtime's
  block-quantized ``MatMulNBits`` (:data:`ONNX_PRECISIONS`: ``ort-fp32``, ``ort-int8``,
  ``ort-int4``), on the same model, same prompt, same text, same bandwidth probe.
- :func:`llc_bytes`: the last-level cache, read from sysfs, to say when a copy fits in it.

No function here uses the deprecated ``torch.ao.quantization`` or quantized tensors.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import torch
from torch import nn

from labkit.machine.dtypes import normalize_dtype
from labkit.models import LanguageModel, torch_dtype

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
# Quantized layers for the course's decoder (labkit.decoder), and their quality and speed
# ============================================================================================
#
# A quantized layer replaces one ``nn.Linear`` projection of :class:`labkit.decoder.Decoder`
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

_PROJECTIONS = ("wqkv", "wo", "w_gate_up", "w_down")


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
        """Unpack, dequantize, multiply: the readable version of :meth:`forward`."""
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
        plan = {name: "int8-dynamic" for name in _PROJECTIONS}
        plan["w_down"] = "int8"
        plan["lm_head"] = "int8"
    elif precision == "int8-dynamic":
        plan = {name: "int8-dynamic" for name in _PROJECTIONS}
        plan["lm_head"] = "int8"   # logits keep full-precision activations (see the lab)
    else:
        plan = {name: precision for name in (*_PROJECTIONS, "lm_head")}
    for name in skip:
        if name not in plan:
            raise ValueError(f"skip: unknown projection {name!r}; use {', '.join(plan)}")
        plan[name] = None
    return plan


class QuantizedLanguageModel(LanguageModel):
    """A :class:`labkit.models.LanguageModel` whose projections were swapped for quantized
    layers (see :func:`quantize_model`). ``dtype`` is the precision name; the activations
    and the embedding stay fp32."""

    @property
    def weight_bytes_per_token(self) -> float:
        """Bytes of the stored formats of every projection and the head: what one decode
        step reads (plus the negligible norms and one embedding row)."""
        net = self.net
        mods = [getattr(layer, n) for layer in net.layers for n in _PROJECTIONS]
        return float(sum(format_bytes_of(m) for m in mods) + format_bytes_of(net.lm_head))


def _swap_projections(src, make) -> nn.Module:
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
            for name in _PROJECTIONS:
                setattr(new_block, name, make(name, getattr(block, name)))
            net.layers.append(new_block)
        net.lm_head = make("lm_head", src.lm_head)
    return net


def quantize_model(model, precision: str, *, skip: tuple[str, ...] = ()):
    """A copy of ``model`` (a :class:`labkit.models.LanguageModel` in fp32) in ``precision``.

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

    net = _swap_projections(model.net, make)
    return QuantizedLanguageModel(model.name, net.eval(), model.tokenizer, precision,
                                  chat_template=model.chat_template, source=model.source)


# --------------------------------------------------------------------------------------------
# bytes, quality
# --------------------------------------------------------------------------------------------
def stored_state(model) -> dict[str, torch.Tensor]:
    """The tensors a file of this model would hold, by name: every parameter and stored buffer
    once (a tied head is the embedding; the kernels' private copies and the RoPE tables,
    which are recomputed at load, are left out). ``safetensors.torch.save_file`` writes it."""
    net = model.net
    out, seen = {}, set()
    for name, t in list(net.named_parameters()) + list(net.named_buffers()):
        if name.rsplit(".", 1)[-1].startswith("_") or name.startswith("rope_"):
            continue
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        out[name] = t.detach().contiguous()
    return out


def model_bytes(model) -> dict:
    """Bytes of a (quantized) model: ``linear`` (every projection and the head in their stored
    formats; a head tied to the embedding counted with the projections only when it is its own
    quantized copy), ``total`` (every distinct tensor of the stored format, embedding included)."""
    net = model.net
    mods = [getattr(layer, n) for layer in net.layers for n in _PROJECTIONS] + [net.lm_head]
    linear = sum(format_bytes_of(m) for m in mods)
    total = sum(t.numel() * t.element_size() for t in stored_state(model).values())
    return {"linear": int(linear), "total": int(total)}


def heldout_text() -> str:
    """The held-out text shipped in ``labkit/data/heldout.txt`` (original prose, not in the
    tiny model's training corpus)."""
    return (Path(__file__).resolve().parent / "data" / "heldout.txt").read_text()


@torch.inference_mode()
def heldout_logits(model, text: str | None = None, max_tokens: int = 256) -> tuple[torch.Tensor,
                                                                                    torch.Tensor]:
    """``(logits, ids)`` of the first ``max_tokens`` tokens of ``text`` (the held-out text by
    default): logits ``[T-1, vocab]`` fp32 predict ids ``[T-1]`` (each next token)."""
    text = heldout_text() if text is None else text
    ids = model.encode(text)[: min(max_tokens, model.context_length)]
    if len(ids) < 2:
        raise ValueError("the text must have at least 2 tokens")
    logits = model.net(torch.tensor([ids], dtype=torch.long))[0, :-1].float()
    return logits, torch.tensor(ids[1:], dtype=torch.long)


def perplexity_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """``exp(mean cross-entropy)`` of the targets under the logits."""
    return float(torch.exp(torch.nn.functional.cross_entropy(logits.float(), targets)))


def top1_agreement(logits: torch.Tensor, reference_logits: torch.Tensor) -> float:
    """Fraction of positions where both models rank the same token first (0..1)."""
    return float((logits.argmax(-1) == reference_logits.argmax(-1)).float().mean())


def quality(model, reference_logits: torch.Tensor | None = None, *, text: str | None = None,
            max_tokens: int = 256) -> dict:
    """Perplexity on the held-out text, and top-1 agreement with ``reference_logits`` (the
    fp32 model's :func:`heldout_logits`; 1.0 when not given)."""
    logits, targets = heldout_logits(model, text, max_tokens)
    agree = 1.0 if reference_logits is None else top1_agreement(logits, reference_logits)
    return {"perplexity": perplexity_from_logits(logits, targets), "top1_agreement": agree,
            "tokens": int(targets.numel()), "logits": logits}


class _Recorder(nn.Module):
    """Wraps a projection and records, per input channel, the largest |activation| seen."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.channel_max = torch.zeros(linear.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = x.detach().float().reshape(-1, x.shape[-1]).abs().amax(dim=0)
        torch.maximum(self.channel_max, seen, out=self.channel_max)
        return torch.nn.functional.linear(x, self.linear.weight)


@torch.inference_mode()
def activation_outliers(model, text: str | None = None, max_tokens: int = 128) -> list[dict]:
    """Where the activation outliers are: for every projection of every block, the largest
    |activation| at its input over the held-out text, and ``ratio`` = that / the median of
    the per-channel maxima (how far one channel stretches a per-token int8 scale).

    Returns one dict per projection: ``layer``, ``name``, ``absmax``, ``ratio``, ``channel``
    (the input channel holding the maximum).
    """
    recorders = {}

    def make(name, linear):
        if name == "lm_head":
            return linear
        rec = _Recorder(linear)
        recorders[(len(recorders) // len(_PROJECTIONS), name)] = rec
        return rec

    net = _swap_projections(model.net, make)
    text = heldout_text() if text is None else text
    ids = model.encode(text)[: min(max_tokens, model.context_length)]
    net(torch.tensor([ids], dtype=torch.long), last_only=True)
    rows = []
    for (layer, name), rec in recorders.items():
        ch = rec.channel_max
        rows.append({"layer": layer, "name": name, "absmax": float(ch.max()),
                     "ratio": float(ch.max() / ch.median().clamp(min=1e-12)),
                     "channel": int(ch.argmax())})
    return rows


# --------------------------------------------------------------------------------------------
# one table per model: bytes, speed, quality, per precision
# --------------------------------------------------------------------------------------------
#: The precision the course recommends for int8 (reported under the key ``int8``).
RECOMMENDED_INT8 = "int8"


def measure_precisions(model, precisions=PRECISIONS, *, new_tokens: int = 24, repeats: int = 3,
                       max_tokens: int = 256, sample_prompt: str | None = None,
                       sample_tokens: int = 16, bandwidth_GBps: float | None = None,
                       threads: int = 1) -> list[dict]:
    """Quantize ``model`` (fp32) to each precision in turn and measure it, in one run.

    Per precision: ``bytes`` (stored format of the projections and head, :func:`model_bytes`
    ``linear``), ``total_bytes``, ``decode_tok_s`` and ``pct_roofline`` (via
    :func:`labkit.models.decode_benchmark`, ``threads`` threads, best of ``repeats``, against
    one GEMV bandwidth probe measured here), ``perplexity`` and ``top1_agreement`` with fp32 on
    the held-out text (first ``max_tokens`` tokens), and a greedy ``sample``. Only one
    quantized copy exists at a time.
    """
    from labkit.models import decode_benchmark, measure_gemv_bandwidth

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precisions {unknown}; use some of {', '.join(PRECISIONS)}")
    if bandwidth_GBps is None:
        bandwidth_GBps = measure_gemv_bandwidth(threads=threads)["best_GBps"]
    ref_logits = heldout_logits(model, max_tokens=max_tokens)[0]
    if sample_prompt is None:
        sample_prompt = (model.chat_prompt("What does a Kubernetes node do?")
                         if model.chat_template else "A Kubernetes node")
    rows = []
    for precision in precisions:
        qm = model if precision == "fp32" else quantize_model(model, precision)
        q = quality(qm, ref_logits, max_tokens=max_tokens)
        speed = decode_benchmark(qm, new_tokens=new_tokens, repeats=repeats, threads=threads,
                                 bandwidth_GBps=bandwidth_GBps)
        size = model_bytes(qm)
        sample = qm.generate(sample_prompt, sample_tokens, threads=threads).text
        rows.append({"precision": precision, "bytes": size["linear"],
                     "total_bytes": size["total"], "decode_tok_s": speed["decode_tok_s"],
                     "decode_tok_s_min": speed["decode_tok_s_min"],
                     "pct_roofline": speed["pct_roofline"],
                     "roofline_tok_s": speed["roofline_tok_s"],
                     "perplexity": round(q["perplexity"], 4),
                     "top1_agreement": round(q["top1_agreement"], 4), "sample": sample,
                     "bandwidth_GBps": round(bandwidth_GBps, 2)})
        del qm
    return rows


#: ONNX Runtime rows of ``bench quant``: name -> MatMulNBits settings (None: plain fp32 MatMul).
#: int8 is symmetric (no zero point), int4 asymmetric (a 4-bit zero point per block), both in
#: blocks of 32 inputs with ``accuracy_level=4`` (int8 arithmetic on the activations).
ONNX_PRECISIONS: dict[str, dict | None] = {
    "ort-fp32": None,
    "ort-int8": {"bits": 8, "block_size": 32, "symmetric": True, "accuracy_level": 4},
    "ort-int4": {"bits": 4, "block_size": 32, "symmetric": False, "accuracy_level": 4},
}


def llc_bytes() -> int | None:
    """Size of the largest CPU cache this process's first CPU sees (sysfs
    ``/sys/devices/system/cpu/cpu*/cache/index*/size``), in bytes; None where there is no
    sysfs (macOS, Windows). A weight copy smaller than this can be served from the cache, and
    then a roofline built on a DRAM bandwidth probe does not bound it."""
    import os

    try:
        cpu = min(os.sched_getaffinity(0))
    except (AttributeError, ValueError):
        cpu = 0
    sizes = []
    for entry in Path(f"/sys/devices/system/cpu/cpu{cpu}/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * unit)
        except ValueError:
            continue
    return max(sizes) if sizes else None


def measure_onnx_precisions(model, names=tuple(ONNX_PRECISIONS), *, new_tokens: int = 24,
                            repeats: int = 3, max_tokens: int = 256, threads: int = 1,
                            bandwidth_GBps: float, reference_logits: torch.Tensor | None = None,
                            sample_prompt: str | None = None, sample_tokens: int = 16,
                            prompt_tokens: int = 16) -> list[dict]:
    """The rows of :func:`measure_precisions` for ONNX Runtime's CPU kernels, same model.

    Writes the fp32 decoder with its KV cache as ONNX (:func:`labkit.backends.decoder_to_onnx`,
    about 540 MB for SmolLM2) into a scratch folder, makes each quantized copy with ONNX
    Runtime's ``MatMulNBitsQuantizer`` (:func:`labkit.backends.quantize_onnx_nbits`), and per
    name in ``names`` (keys of :data:`ONNX_PRECISIONS`) measures: ``bytes`` (the constant
    inputs of the matrix products: weights, scales, zero points), ``decode_tok_s`` (the same
    statistic as :func:`labkit.models.decode_benchmark`: per repetition the median step after a
    ``prompt_tokens``-token prompt, the best of ``repeats`` after one warm-up), ``pct_roofline``
    against ``bandwidth_GBps`` (the probe the PyTorch rows use) and *this copy's* bytes,
    ``perplexity`` and ``top1_agreement`` on the same held-out tokens, and a greedy ``sample``.
    Each row also has ``decode_tok_s_all`` (every repetition: the spread). The scratch folder
    is removed at the end.
    """
    import statistics
    import time

    from labkit import backends
    from labkit.models import bench_prompt
    from labkit.machine.scratch import scratch_dir

    unknown = [n for n in names if n not in ONNX_PRECISIONS]
    if unknown:
        raise ValueError(f"unknown ONNX rows {unknown}; use some of {', '.join(ONNX_PRECISIONS)}")
    if reference_logits is None:
        reference_logits = heldout_logits(model, max_tokens=max_tokens)[0]
    text_ids = model.encode(heldout_text())[: min(max_tokens, model.context_length)]
    targets = torch.tensor(text_ids[1:], dtype=torch.long)
    prompt_ids = model.encode(bench_prompt(model, prompt_tokens))
    if sample_prompt is None:
        sample_prompt = (model.chat_prompt("What does a Kubernetes node do?")
                         if model.chat_template else "A Kubernetes node")
    fp32_bytes = 4 * model.streamed_params + 4 * model.config.vocab_size * model.config.d_model
    rows = []
    with scratch_dir(2 * fp32_bytes, prefix="labkit-onnx-") as folder:
        start = time.perf_counter()
        graph = backends.decoder_to_onnx(model.net)
        fp32_path = folder / "fp32.onnx"
        import onnx

        onnx.save(graph, str(fp32_path))
        del graph                              # 540 MB for SmolLM2: reload it per copy instead
        export_s = time.perf_counter() - start
        for name in names:
            settings = ONNX_PRECISIONS[name]
            start = time.perf_counter()
            if settings is None:
                path = fp32_path
            else:
                path = folder / f"{name}.onnx"
                backends.quantize_onnx_nbits(fp32_path, path, **settings)
            make_s = time.perf_counter() - start
            weight_bytes = backends.matmul_weight_bytes(path)
            dec = backends.OnnxDecoder(path, model.config, threads=threads)
            logits = torch.from_numpy(dec.logits(text_ids)[:-1])
            runs = []
            for i in range(repeats + 1):
                _, steps = dec.generate(prompt_ids, new_tokens)
                if i:
                    runs.append(1.0 / statistics.median(steps))
            tok_s = max(runs)
            roofline = bandwidth_GBps * 1e9 / weight_bytes
            sample_ids, _ = dec.generate(model.encode(sample_prompt), sample_tokens)
            rows.append({"precision": name, "bytes": weight_bytes,
                         "total_bytes": path.stat().st_size, "decode_tok_s": round(tok_s, 2),
                         "decode_tok_s_all": [round(r, 2) for r in runs],
                         "pct_roofline": round(100.0 * tok_s / roofline, 1),
                         "roofline_tok_s": round(roofline, 2),
                         "perplexity": round(perplexity_from_logits(logits, targets), 4),
                         "top1_agreement": round(top1_agreement(logits, reference_logits), 4),
                         "sample": model.decode(sample_ids),
                         "bandwidth_GBps": round(bandwidth_GBps, 2), "runtime": "onnxruntime",
                         "settings": settings, "make_s": round(make_s + (export_s if settings
                                                                          is None else 0), 1)})
            del dec
            if path != fp32_path:
                path.unlink()
    return rows


def bench_quant_cli(argv: list[str]) -> int:
    """``python -m labkit bench quant``: bytes, decode speed and quality per precision.

    With ``--json`` prints one JSON object: one key per precision (``fp32``, ``bf16``, ...,
    the recommended int8 under ``int8``), each ``{"bytes", "decode_tok_s", "perplexity",
    "top1_agreement", ...}``, then one key per ONNX Runtime row (``ort-fp32``, ``ort-int8``,
    ``ort-int4``: :func:`measure_onnx_precisions`; leave them out with ``--no-onnx``), plus
    ``meta`` (model, bandwidth, threads, tokens, versions, cores, last-level cache).

    Every row runs with the same ``--threads`` (default: all usable cores, as a server
    would), against one GEMV bandwidth probe, and reports ``pct_roofline`` against its *own*
    bytes. PyTorch's fused int8 kernel converts every weight to bf16 before multiplying, so
    it is bound by arithmetic and gains more from cores than its bytes suggest; ONNX
    Runtime's ``MatMulNBits`` multiplies int8 activations by the packed weights in integer
    instructions and stays much closer to its bytes roofline.
    """
    parser = argparse.ArgumentParser(
        prog="python -m labkit bench quant",
        description="Bytes, decode tokens/s and quality (held-out perplexity, top-1 agreement "
                    "with fp32) of a course model per precision, measured in one run.")
    parser.add_argument("--model", choices=("smollm2", "tiny-gpt"), default="smollm2")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help=f"comma-separated, from: {', '.join(PRECISIONS)}")
    parser.add_argument("--tokens", type=int, default=24, help="decode tokens per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (best kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every row, PyTorch and ONNX Runtime alike (default: "
                             "every core this process may use, as a server would). How each "
                             "kernel scales with cores depends on the machine: run it with 1 "
                             "thread too")
    parser.add_argument("--no-onnx", action="store_true",
                        help="leave out the ONNX Runtime rows (they export the model to a "
                             "scratch folder: about 540 MB for SmolLM2, removed afterwards)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        parser.error(f"unknown precisions {bad}; choose from {', '.join(PRECISIONS)}")
    if args.threads is None:
        from labkit.hardware import usable_cores

        args.threads = usable_cores()
    if args.tokens < 2 or args.repeats < 1 or args.threads < 1:
        parser.error("--tokens must be >= 2, --repeats and --threads >= 1")
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")
    from labkit.models import load_model

    model = load_model(args.model, "fp32")
    rows = measure_precisions(model, precisions, new_tokens=args.tokens, repeats=args.repeats,
                              threads=args.threads)
    if not args.no_onnx:
        rows += measure_onnx_precisions(model, new_tokens=args.tokens, repeats=args.repeats,
                                        threads=args.threads,
                                        bandwidth_GBps=rows[0]["bandwidth_GBps"])
    if args.json:
        import os
        import platform

        from labkit.hardware import usable_cores

        out = {r["precision"]: {k: v for k, v in r.items() if k != "precision"} for r in rows}
        meta = {"model": args.model, "threads": args.threads, "tokens": args.tokens,
                "repeats": args.repeats, "bandwidth_GBps": rows[0]["bandwidth_GBps"],
                "recommended_int8": RECOMMENDED_INT8, "torch": torch.__version__,
                "usable_cores": usable_cores(), "cpu_count": os.cpu_count(),
                "llc_bytes": llc_bytes(), "machine": platform.machine(),
                "command": "python -m labkit bench quant " + " ".join(argv)}
        if not args.no_onnx:
            import onnxruntime

            meta["onnxruntime"] = onnxruntime.__version__
        out["meta"] = meta
        print(json.dumps(out))
        return 0
    fp32 = rows[0]
    print(f"{args.model}: GEMV bandwidth {fp32['bandwidth_GBps']} GB/s, {args.threads} thread(s)")
    print(f"{'precision':20s} {'MB':>8s} {'tok/s':>7s} {'x fp32':>6s} {'%roof':>6s} "
          f"{'ppl':>8s} {'Δppl %':>7s} {'top-1':>6s}")
    for r in rows:
        print(f"{r['precision']:20s} {r['bytes'] / 1e6:8.1f} {r['decode_tok_s']:7.1f} "
              f"{r['decode_tok_s'] / fp32['decode_tok_s']:6.2f} {r['pct_roofline']:6.1f} "
              f"{r['perplexity']:8.2f} "
              f"{100 * (r['perplexity'] / fp32['perplexity'] - 1):+7.2f} "
              f"{100 * r['top1_agreement']:5.1f}%")
    return 0
