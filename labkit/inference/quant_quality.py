"""Bytes and quality of a (quantized) language model: what a file of it holds
(:func:`stored_state`, :func:`model_bytes`), perplexity and top-1 agreement with fp32 on the
held-out text (:func:`quality`), and where int8 activations hurt (:func:`activation_outliers`).
"""

from __future__ import annotations


import torch
from torch import nn

from labkit.inference.language_model import DATA_DIR
from labkit.inference.quant import PROJECTIONS, format_bytes_of, swap_projections
from labkit.machine.dtypes import tensor_bytes


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
    mods = [getattr(layer, n) for layer in net.layers for n in PROJECTIONS] + [net.lm_head]
    linear = sum(format_bytes_of(m) for m in mods)
    total = tensor_bytes(stored_state(model), dedupe=False)   # stored_state holds each once
    return {"linear": int(linear), "total": int(total)}


def heldout_text() -> str:
    """The held-out text shipped in ``labkit/data/heldout.txt`` (original prose, not in the
    tiny model's training corpus)."""
    return (DATA_DIR / "heldout.txt").read_text()


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
    """Wraps a projection and records, per input channel, the largest ``|activation|`` seen."""

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
    ``|activation|`` at its input over the held-out text, and ``ratio`` = that / the median of
    the per-channel maxima (how far one channel stretches a per-token int8 scale).

    Returns one dict per projection: ``layer``, ``name``, ``absmax``, ``ratio``, ``channel``
    (the input channel holding the maximum).
    """
    recorders = {}

    def make(name, linear):
        if name == "lm_head":
            return linear
        rec = _Recorder(linear)
        recorders[(len(recorders) // len(PROJECTIONS), name)] = rec
        return rec

    net = swap_projections(model.net, make)
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
