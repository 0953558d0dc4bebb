"""Arithmetic of parallelism: shards, Amdahl's law, memory per GPU, network time.

:func:`make_shards` and :func:`amdahl_parallel_fraction` (Lab 5's arithmetic);
:func:`sharded_training_bytes` (data, tensor and pipeline parallelism and ZeRO stages 1-3 /
FSDP on top of :func:`labkit.planning.memory.training_breakdown`), :func:`parallelism_plan`
and :func:`min_nodes` for an instance type of :mod:`labkit.planning.catalog`,
:func:`ring_allreduce_seconds` with the EFA bandwidth of the catalog, and
:func:`pipeline_bubble`. Every result is derived by a formula shown in its docstring; nothing
here runs anything. Imports :mod:`labkit.planning` (``catalog``, ``memory``).
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.planning import catalog, memory


def make_shards(items: Sequence, n_shards: int) -> list[list]:
    """Split ``items`` into ``n_shards`` contiguous shards, in order, whose sizes differ by
    at most one (the first ``len(items) % n_shards`` shards get the extra item).

    Example:
        >>> make_shards(list(range(7)), 3)
        [[0, 1, 2], [3, 4], [5, 6]]
    """
    if not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
    if n_shards > len(items):
        raise ValueError(f"cannot make {n_shards} non-empty shards of {len(items)} items")
    base, extra = divmod(len(items), n_shards)
    shards, start = [], 0
    for i in range(n_shards):
        size = base + (1 if i < extra else 0)
        shards.append(list(items[start:start + size]))
        start += size
    return shards


def amdahl_parallel_fraction(speedup: float, workers: int) -> float:
    """The parallel fraction p that explains ``speedup`` on ``workers`` by Amdahl's law,
    ``S = 1 / ((1 - p) + p / N)``, so ``p = (1 - 1/S) / (1 - 1/N)``."""
    if workers < 2:
        raise ValueError("Amdahl's fraction needs at least 2 workers")
    if speedup <= 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    return (1 - 1 / speedup) / (1 - 1 / workers)


def sharded_training_bytes(n_params: float, *, dp: int = 1, tp: int = 1, pp: int = 1,
                           zero_stage: int = 0, recipe: str = "mixed-adamw") -> dict:
    """Training state per GPU (bytes) when ``n_params`` are split across GPUs.

    - **Tensor** (``tp``) and **pipeline** (``pp``) parallelism split the model itself: each
      GPU holds ``1/(tp·pp)`` of the weights, gradients and optimizer states.
    - **Data** parallelism (``dp`` replicas) copies that slice ``dp`` times; ZeRO shards the
      copies' state across the ``dp`` replicas (Rajbhandari et al., 2020): stage 1 the
      optimizer states, stage 2 also the gradients, stage 3 (= PyTorch FSDP) also the weights.

    Built on :func:`labkit.planning.memory.training_breakdown` (``recipe``); activations,
    buffers and the temporary full layers that ZeRO-3 gathers are not counted. Returns ``weights``,
    ``gradients``, ``optimizer_states`` and ``total`` in bytes.

    Example (7B, mixed precision, ZeRO-3 over 8 GPUs: 112 GB / 8):
        >>> sharded_training_bytes(7e9, dp=8, zero_stage=3)["total"] / 1e9
        14.0
    """
    for name, value in (("dp", dp), ("tp", tp), ("pp", pp)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    parts = memory.training_breakdown(n_params / (tp * pp), recipe)
    if zero_stage >= 1:
        parts["optimizer_states"] /= dp
    if zero_stage >= 2:
        parts["gradients"] /= dp
    if zero_stage >= 3:
        parts["weights"] /= dp
    parts["total"] = parts["weights"] + parts["gradients"] + parts["optimizer_states"]
    return parts


def parallelism_plan(n_params: float, instance: str, nodes: int, *,
                     recipe: str = "mixed-adamw", headroom: float = 0.2) -> list[dict]:
    """Training state per GPU for the common ways of using ``nodes`` × ``instance``.

    GPU count and memory are **cited** from :mod:`labkit.planning.catalog`; bytes are **derived** by
    :func:`sharded_training_bytes`. A layout ``fits`` when the state leaves ``headroom``
    (default 20 %) of the GPU free for activations and buffers. Rows (their ``kind``): data
    parallel (``ddp``), ZeRO-1, -2, -3/FSDP over every GPU (``zero1``, ``zero2``,
    ``zero3``), tensor parallel inside each node × data parallel across nodes (``tp-dp``),
    and tensor parallel inside nodes × pipeline parallel across them (``tp-pp``).
    """
    node = catalog.instance(instance)
    per_node = int(node["accelerator_count"])
    gpu_gb = catalog.gpu_memory_gb(node["accelerator"])
    gpus = per_node * nodes
    layouts = [
        ("ddp", "data parallel (DDP)", {"dp": gpus}),
        ("zero1", "ZeRO-1", {"dp": gpus, "zero_stage": 1}),
        ("zero2", "ZeRO-2", {"dp": gpus, "zero_stage": 2}),
        ("zero3", "ZeRO-3 / FSDP", {"dp": gpus, "zero_stage": 3}),
        ("tp-dp", f"tensor {per_node} × data {nodes}", {"tp": per_node, "dp": nodes}),
        ("tp-pp", f"tensor {per_node} × pipeline {nodes}", {"tp": per_node, "pp": nodes}),
    ]
    rows = []
    for kind, name, kwargs in layouts:
        parts = sharded_training_bytes(n_params, recipe=recipe, **kwargs)
        rows.append({"kind": kind, "layout": name, "gpus": gpus,
                     "per_gpu_GB": parts["total"] / 1e9,
                     "gpu_GB": gpu_gb, "fits": parts["total"] <= (1 - headroom) * gpu_gb * 1e9,
                     **{k: kwargs.get(k, 1 if k != "zero_stage" else 0)
                        for k in ("dp", "tp", "pp", "zero_stage")}})
    return rows


#: The ``kind`` of each row of :func:`parallelism_plan`.
LAYOUTS = ("ddp", "zero1", "zero2", "zero3", "tp-dp", "tp-pp")


def min_nodes(n_params: float, instance: str, layout: str, *, recipe: str = "mixed-adamw",
              headroom: float = 0.2, max_nodes: int = 256) -> int | None:
    """The fewest nodes of ``instance`` on which ``layout`` (a ``kind`` of
    :func:`parallelism_plan`: one of :data:`LAYOUTS`) fits; None if none up to
    ``max_nodes`` (data parallelism never fits a model whose state exceeds one GPU)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    for nodes in range(1, max_nodes + 1):
        for row in parallelism_plan(n_params, instance, nodes, recipe=recipe,
                                    headroom=headroom):
            if row["kind"] == layout and row["fits"]:
                return nodes
    return None


def efa_GBps(instance: str) -> float:
    """Inter-node network bandwidth of ``instance`` in GB/s: the catalog's **cited**
    ``network_Gbps`` / 8. Raises ValueError for an instance type without EFA."""
    node = catalog.instance(instance)
    if not node["efa"] or not node["network_Gbps"]:
        raise ValueError(f"{instance} has no EFA in the catalog; multi-node training needs "
                         "an EFA instance type such as p4d.24xlarge or p5.48xlarge")
    return float(node["network_Gbps"]) / 8


def ring_allreduce_seconds(n_bytes: float, workers: int, bandwidth_GBps: float) -> float:
    """Time of a ring all-reduce of ``n_bytes`` over ``workers`` links of
    ``bandwidth_GBps``: each worker sends and receives ``2 (n−1)/n × n_bytes`` (derived;
    latency and protocol overhead ignored, so this is a lower bound)."""
    if workers < 1 or bandwidth_GBps <= 0:
        raise ValueError("workers must be >= 1 and bandwidth_GBps > 0")
    return 2 * (workers - 1) / workers * n_bytes / (bandwidth_GBps * 1e9)


def gradient_sync_seconds(n_params: float, instance: str, nodes: int,
                          grad_dtype: str = "bf16") -> float:
    """Lower bound of one data-parallel gradient all-reduce across ``nodes`` of
    ``instance`` over EFA: gradients are first reduced inside each node (NVLink, assumed
    free here), then a ring across the nodes, each using its full EFA bandwidth."""
    return ring_allreduce_seconds(memory.weight_bytes(n_params, grad_dtype), nodes,
                                  efa_GBps(instance))


def pipeline_bubble(stages: int, microbatches: int) -> float:
    """Idle fraction of a GPipe pipeline: ``(p − 1) / (m + p − 1)`` for ``p`` stages and
    ``m`` micro-batches."""
    if stages < 1 or microbatches < 1:
        raise ValueError("stages and microbatches must be >= 1")
    return (stages - 1) / (microbatches + stages - 1)
