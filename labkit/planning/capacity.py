"""Capacity planning: which instance serves model X at context Y and batch Z, how many, what cost.

Built on :mod:`labkit.planning.memory` (bytes of weights and KV cache) and :mod:`labkit.planning.catalog` (cited
accelerator and instance facts). Four steps, each a function a notebook can show on its own:

1. :func:`memory_breakdown`: the accelerator memory one replica needs, split into weights,
   KV cache, activations and runtime overhead.
2. :func:`options`: for every instance type in the catalog, the smallest tensor-parallel degree
   whose devices hold that memory within the server's budget (:data:`MEMORY_UTILIZATION` of each
   device, the --gpu-memory-utilization the course's manifests set), and how many replicas fit on one node.
3. :func:`replicas_needed`: replicas for a request rate, given what one replica sustains.
4. :func:`plan`: nodes and cost per hour and per million requests, from the cited On-Demand
   prices (:func:`on_demand_price`), cheapest first.

:func:`decode_roofline` estimates, from cited memory bandwidth and TFLOPS, the most tokens per
second one replica can generate: an upper bound for step 3 when nothing has been measured.

Units: bytes internally; GB = 10**9 bytes in results. Accelerator memory is converted from the
unit the vendor publishes (NVIDIA: GB; AWS Neuron: GiB), see :func:`device_memory_bytes`.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Callable, Iterable

from labkit.planning import catalog, memory

#: Tensor-parallel degrees considered (attention heads split evenly over powers of two.
TP_DEGREES = (1, 2, 4, 8, 16)

#: Share of each device's memory a replica may fill (the course sizes with 0.9, the
#: ``--gpu-memory-utilization`` its vLLM manifests set explicitly (vLLM's own default is 0.92 in
#: current releases and was 0.9 before, per vllm/config/cache.py; checked 2026-12-05): one vLLM
#: instance keeps its weights, activations and KV cache within that share of the device's memory,
#: and fills what the weights and activations leave with KV-cache blocks. The course applies the
#: same budget to Neuron devices, as an assumption.
MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class Model:
    """A decoder-only transformer as its ``config.json`` describes it (Llama-style blocks).

    ``vocab_size``, ``d_model``, ``n_layers``, ``n_heads``, ``n_kv_heads`` and ``ffn_dim`` are
    the config's ``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``num_key_value_heads`` and ``intermediate_size``.

    Attributes:
        name: display name.
        tied_embeddings: whether the output head reuses the token embedding.
        source: where the config was published.
    """

    name: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    tied_embeddings: bool = False
    source: str = ""

    @property
    def head_dim(self) -> int:
        """Size of one attention head, ``d_model / n_heads``."""
        return self.d_model // self.n_heads

    @property
    def n_params(self) -> int:
        """Parameters, derived from the config (a Llama block has attention, a gated MLP, 2 norms).

        Per layer: Q and output projections ``2 d^2``, K and V ``2 d (n_kv_heads x head_dim)``,
        gated MLP ``3 d f``, two RMSNorm weights ``2 d``. Outside the layers: embedding ``V d``,
        final norm ``d`` and, unless tied, an output head ``V d``.
        """
        d, kv = self.d_model, self.n_kv_heads * self.head_dim
        per_layer = 2 * d * d + 2 * d * kv + 3 * d * self.ffn_dim + 2 * d
        heads = 1 if self.tied_embeddings else 2
        return self.n_layers * per_layer + heads * self.vocab_size * d + d

    @property
    def streamed_params(self) -> int:
        """Parameters read from memory at every decode step, all but the input embedding table.

        A decode step looks up one row of the input embedding per sequence, so that table is not
        streamed; the output head multiplies the whole ``V x d`` matrix and is. A tied embedding
        *is* the output head, so it stays in.
        """
        table = 0 if self.tied_embeddings else self.vocab_size * self.d_model
        return self.n_params - table

    def kv_bytes_per_token(self, dtype: str = "fp16") -> float:
        """KV-cache bytes per token: 2 x layers x KV heads x head size x bytes."""
        return memory.kv_cache_bytes(n_layers=self.n_layers, n_kv_heads=self.n_kv_heads,
                                     head_dim=self.head_dim, seq_len=1, dtype=dtype)


_HF = "https://huggingface.co/{}/blob/main/config.json"
#: Published configurations (the fields of each model's config.json on Hugging Face).
MODELS: dict[str, Model] = {
    "llama-2-7b": Model("Llama 2 7B", 32000, 4096, 32, 32, 32, 11008,
                        source=_HF.format("meta-llama/Llama-2-7b-hf")),
    "llama-3-8b": Model("Llama 3 8B", 128256, 4096, 32, 32, 8, 14336,
                        source=_HF.format("meta-llama/Meta-Llama-3-8B")),
    # v0.3, not v0.1: v0.1's config has "sliding_window": 4096 (a rolling KV cache of 4,096
    # tokens), v0.3 has none, so its KV cache grows with the full 32k context as computed here.
    "mistral-7b": Model("Mistral 7B v0.3", 32768, 4096, 32, 32, 8, 14336,
                        source="https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.3/blob/"
                               "c170c708c41dac9275d15a8fff4eca08d52bab71/config.json "
                               "(checked 2026-12-05: sliding_window null, vocab_size 32768)"),
    "llama-3-70b": Model("Llama 3 70B", 128256, 8192, 80, 64, 8, 28672,
                         source=_HF.format("meta-llama/Meta-Llama-3-70B")),
    "smollm2-135m": Model("SmolLM2 135M", 49152, 576, 30, 9, 3, 1536, tied_embeddings=True,
                          source=_HF.format("HuggingFaceTB/SmolLM2-135M")),
}


def model(name: str | Model) -> Model:
    """A model from :data:`MODELS` by key (``"llama-3-8b"``), or the :class:`Model` given."""
    if isinstance(name, Model):
        return name
    key = str(name).lower().replace(" ", "-").replace("_", "-")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; use one of {', '.join(MODELS)} "
                         "or build a labkit.planning.capacity.Model from the model's config.json")
    return MODELS[key]


@dataclass(frozen=True)
class MemoryBreakdown:
    """Accelerator memory of one replica, in bytes, by what it holds."""

    weights: float
    kv_cache: float
    activations: float
    overhead: float

    @property
    def total(self) -> float:
        """Sum of the four parts, in bytes."""
        return self.weights + self.kv_cache + self.activations + self.overhead

    def as_gb(self) -> dict[str, float]:
        """The parts and the total in GB (10**9 bytes)."""
        parts = {"weights": self.weights, "kv_cache": self.kv_cache,
                 "activations": self.activations, "overhead": self.overhead,
                 "total": self.total}
        return {k: v / 1e9 for k, v in parts.items()}


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def memory_breakdown(model_: str | Model, *, context: int, batch: int = 1,
                     dtype: str = "bf16", kv_dtype: str | None = None,
                     step_tokens: int | None = None, overhead: float = 0.10) -> MemoryBreakdown:
    """Memory one replica needs to serve ``batch`` sequences of ``context`` tokens each.

    - **weights**: parameters x bytes per parameter of ``dtype`` (:func:`~labkit.planning.memory.weight_bytes`).
    - **KV cache**: 2 x layers x KV heads x head size x ``context`` x ``batch`` x bytes of
      ``kv_dtype`` (default: ``dtype``), reserved for the full context as servers do.
    - **activations**: the working set of one layer during the largest forward step
      (``step_tokens``, default one full context: a prefill), since inference frees each layer's
      activations before the next: ``step_tokens x (2 d + 2 kv + 2 f) x bytes`` for the
      residual, Q/K/V and the two MLP projections, plus fp32 logits ``batch x vocab x 4``.
      Fused attention kernels never store the L x L scores, so they add nothing here.
    - **overhead**: ``overhead`` x the rest (default 10 %): CUDA or Neuron runtime, allocator
      fragmentation, graphs. An assumption; measure yours (``nvidia-smi``, ``neuron-top``).

    Example (Llama 3 8B, 8k tokens, one sequence, bf16):
        >>> b = memory_breakdown("llama-3-8b", context=8192)
        >>> round(b.weights / 1e9, 1), round(b.kv_cache / 2**30, 2)
        (16.1, 1.0)
    """
    m = model(model_)
    context, batch = _positive_int(context, "context"), _positive_int(batch, "batch")
    kv_dtype = kv_dtype or dtype
    step = _positive_int(step_tokens, "step_tokens") if step_tokens else context
    width = memory.bytes_per_param(dtype)
    weights = memory.weight_bytes(m.n_params, dtype)
    kv = memory.kv_cache_bytes(n_layers=m.n_layers, n_kv_heads=m.n_kv_heads,
                               head_dim=m.head_dim, seq_len=context, batch_size=batch,
                               dtype=kv_dtype)
    kv_dim = m.n_kv_heads * m.head_dim
    acts = step * (2 * m.d_model + 2 * kv_dim + 2 * m.ffn_dim) * width + batch * m.vocab_size * 4
    extra = memory._check_count(overhead, "overhead")
    return MemoryBreakdown(weights, kv, acts, extra * (weights + kv + acts))


def device_memory_bytes(accelerator: str) -> float:
    """Memory of one accelerator in bytes, honouring the unit its vendor publishes.

    NVIDIA publishes GB (10**9 bytes); the AWS Neuron documentation publishes GiB (2**30), so an
    Inferentia2's "32 GiB" is 34.4 GB.
    """
    acc = catalog.accelerator(accelerator)
    unit = 2**30 if acc.get("memory_unit_published") == "GiB" else 1e9
    return float(acc["memory_GB"]) * unit


def device_budget_bytes(accelerator: str,
                        utilization: float = MEMORY_UTILIZATION) -> float:
    """Bytes of one device a replica may use: ``utilization`` x :func:`device_memory_bytes`.

    Example (an L4 at the course's 0.9):
        >>> device_budget_bytes("L4") / 1e9
        21.6
    """
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    return utilization * device_memory_bytes(accelerator)


@dataclass(frozen=True)
class Option:
    """How one instance type can host a replica (see :func:`options`)."""

    instance: str
    accelerator: str
    accelerator_count: int
    tensor_parallel: int | None
    replicas_per_node: int
    need_per_device_GB: float | None
    device_memory_GB: float
    host_memory_ok: bool
    device_budget_GB: float = 0.0
    runs_dtype: bool = True         #: False where the accelerator has no native support for the dtype

    @property
    def fits(self) -> bool:
        """Whether a replica fits this instance type at all."""
        return self.tensor_parallel is not None


def smallest_tensor_parallel(breakdown: MemoryBreakdown, accelerator: str,
                             max_devices: int, n_heads: int | None = None,
                             utilization: float = MEMORY_UTILIZATION) -> int | None:
    """The smallest degree in :data:`TP_DEGREES` (<= ``max_devices``) whose devices hold it.

    Splitting is assumed even: each of ``tp`` devices holds ``total / tp``, which must fit
    ``utilization`` x the device's memory (:func:`device_budget_bytes`; default the course's 0.9);
    with ``n_heads`` given, ``tp`` must also divide the attention heads. Returns None if even
    ``max_devices`` devices are too small.
    """
    per_device = device_budget_bytes(accelerator, utilization)
    for tp in TP_DEGREES:
        if n_heads and n_heads % tp:
            continue
        if tp <= max_devices and breakdown.total / tp <= per_device:
            return tp
    return None


def options(model_: str | Model, *, context: int, batch: int = 1, dtype: str = "bf16",
            kv_dtype: str | None = None, instances: Iterable[str] | None = None,
            overhead: float = 0.10,
            utilization: float = MEMORY_UTILIZATION) -> list[Option]:
    """For each instance type, whether and how a replica fits (smallest tensor parallelism first).

    A replica fits ``tp`` devices when ``total / tp`` is at most ``utilization`` of one device's
    memory (default 0.9, the ``--gpu-memory-utilization`` the course's manifests set), not all of it.

    An accelerator that does not run ``dtype`` natively (bf16 on a T4 or V100:
    :func:`labkit.planning.catalog.runs_natively`) does not fit, with ``runs_dtype`` False.

    ``host_memory_ok`` says whether the node's RAM is at least one replica's weights. A server
    that streams safetensors tensor by tensor does not need that (chapter 01 measures it); a
    loader that unpickles a ``.bin`` checkpoint into host memory first does. Instance types are
    those of the catalog unless ``instances`` names others in it.
    """
    need = memory_breakdown(model_, context=context, batch=batch, dtype=dtype,
                            kv_dtype=kv_dtype, overhead=overhead)
    heads = model(model_).n_heads
    result = []
    for name in instances or catalog.instances():
        inst = catalog.instance(name)
        acc, count = inst["accelerator"], int(inst["accelerator_count"])
        native = catalog.runs_natively(acc, dtype)
        tp = smallest_tensor_parallel(need, acc, count, heads, utilization) if native else None
        result.append(Option(
            instance=inst["name"], accelerator=acc, accelerator_count=count,
            tensor_parallel=tp, replicas_per_node=count // tp if tp else 0,
            need_per_device_GB=need.total / tp / 1e9 if tp else None,
            device_memory_GB=device_memory_bytes(acc) / 1e9,
            host_memory_ok=inst["memory_GiB"] * 2**30 >= need.weights,
            device_budget_GB=device_budget_bytes(acc, utilization) / 1e9, runs_dtype=native))
    return result


def replicas_needed(request_rate: float, per_replica_rate: float,
                    target_utilization: float = 0.7) -> int:
    """Replicas so that each runs at most ``target_utilization`` of what it can sustain.

    ``ceil(request_rate / (per_replica_rate x target_utilization))``, at least 1. Headroom
    below 100 % keeps queues short (chapter 09 shows why) and absorbs a failed replica.

    Example:
        >>> replicas_needed(100, per_replica_rate=10, target_utilization=0.5)
        20
    """
    rate = memory._check_count(request_rate, "request_rate")
    per = memory._check_count(per_replica_rate, "per_replica_rate")
    if per == 0:
        raise ValueError("per_replica_rate must be > 0 (requests per second one replica serves)")
    if not 0 < target_utilization <= 1:
        raise ValueError(f"target_utilization must be in (0, 1], got {target_utilization}")
    return max(1, math.ceil(rate / (per * target_utilization) - 1e-9))


@lru_cache(maxsize=1)
def _prices() -> dict:
    text = resources.files("labkit").joinpath("data", "hardware.json").read_text(encoding="utf-8")
    return json.loads(text)["on_demand_prices"]


def priced_instances() -> list[str]:
    """Instance types with a cited On-Demand price."""
    return [p["name"] for p in _prices()["prices"]]


def on_demand_price(instance: str) -> dict:
    """The cited On-Demand price of ``instance``: ``usd_per_hour``, ``region``, ``price_date``,
    ``sources``.

    Raises:
        ValueError: no cited price; the message says why (``not_sourced``) rather than guess.
    """
    data = _prices()
    for entry in data["prices"]:
        if entry["name"] == instance:
            return copy.deepcopy(entry)
    why = data["not_sourced"].get(instance, "it is not in the course's price list")
    raise ValueError(f"no cited On-Demand price for {instance!r}: {why} "
                     f"Priced types: {', '.join(priced_instances())}")


@dataclass(frozen=True)
class Plan:
    """A deployment: ``replicas`` replicas on ``nodes`` nodes of one instance type."""

    option: Option
    per_replica_rate: float
    replicas: int
    nodes: int
    usd_per_hour: float
    price_date: str
    request_rate: float
    notes: tuple[str, ...] = field(default=())

    @property
    def instance(self) -> str:
        """The instance type."""
        return self.option.instance

    @property
    def usd_per_million_requests(self) -> float:
        """Cost of a million requests at ``request_rate``: hourly cost / requests per hour."""
        return self.usd_per_hour / (self.request_rate * 3600) * 1e6


def plan(model_: str | Model, *, context: int, request_rate: float,
         per_replica_rate: float | Callable[[Option], float | None], batch: int = 1,
         dtype: str = "bf16", kv_dtype: str | None = None,
         instances: Iterable[str] | None = None, target_utilization: float = 0.7,
         overhead: float = 0.10, utilization: float = MEMORY_UTILIZATION) -> list[Plan]:
    """Deployments that serve ``request_rate`` requests/s, cheapest per hour first.

    Args:
        per_replica_rate: requests/s one replica sustains (measured, or from
            :func:`decode_roofline`); a number, or a function of the :class:`Option` returning
            a number or None (skip that instance type), since an H100 replica serves more than
            an L4 one.
        instances: instance types to consider (default: every type with a cited price).

    Instance types where the replica does not fit, or that have no cited price, are left out.
    """
    plans = []
    names = list(instances) if instances is not None else priced_instances()
    names = [n for n in names if n in catalog.instances()]
    for opt in options(model_, context=context, batch=batch, dtype=dtype, kv_dtype=kv_dtype,
                       instances=names, overhead=overhead, utilization=utilization):
        if not opt.fits or opt.instance not in priced_instances():
            continue
        rate = per_replica_rate(opt) if callable(per_replica_rate) else per_replica_rate
        if rate is None:
            continue
        replicas = replicas_needed(request_rate, rate, target_utilization)
        nodes = math.ceil(replicas / opt.replicas_per_node)
        price = on_demand_price(opt.instance)
        notes = () if opt.host_memory_ok else (
            "node RAM smaller than the weights: fine for a streamed safetensors load, "
            "not for a loader that unpickles a .bin checkpoint",)
        plans.append(Plan(opt, float(rate), replicas, nodes, nodes * price["usd_per_hour"],
                          price["price_date"], float(request_rate), notes))
    return sorted(plans, key=lambda p: (p.usd_per_hour, p.nodes))


def decode_roofline(model_: str | Model, accelerator: str, *, batch: int = 1,
                    context: int = 0, dtype: str = "bf16",
                    tensor_parallel: int = 1) -> float | None:
    """Upper bound on decode tokens/s of one replica, from cited bandwidth and TFLOPS.

    One decode step reads every streamed weight once (:attr:`Model.streamed_params`: all but an
    untied input embedding, of which it reads only one row per sequence) and the KV cache of
    every sequence, and does about ``2 x streamed_params x batch`` operations, spread over
    ``tensor_parallel`` devices:

        step time >= max(bytes read / (tp x bandwidth), FLOPs / (tp x dense TFLOPS))
        tokens/s  <= batch / step time

    ``context`` is the tokens already in each sequence's cache. Returns None when the catalog
    has no bandwidth for the accelerator (the A10G: no vendor figure). Real servers reach a
    fraction of this bound (chapter 08 measures the fraction on this machine).
    """
    m = model(model_)
    acc = catalog.accelerator(accelerator)
    bandwidth = acc.get("memory_bandwidth_GBps")
    tflops = acc.get("bf16_dense_TFLOPS") or acc.get("fp16_dense_TFLOPS")
    if bandwidth is None:
        return None
    tp = _positive_int(tensor_parallel, "tensor_parallel")
    batch = _positive_int(batch, "batch")
    read = (memory.weight_bytes(m.streamed_params, dtype)
            + batch * context * m.kv_bytes_per_token(dtype))
    step = read / (tp * bandwidth * 1e9)
    if tflops:
        step = max(step, 2 * m.streamed_params * batch / (tp * tflops * 1e12))
    return batch / step
