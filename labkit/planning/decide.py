"""The course's decision guide as a function: from a model and a workload to an EKS setup.

:func:`recommend` turns a few facts about a workload (parameters, precision, context, batch,
training or inference, and its pattern) into the choices the course taught, each with the
reason behind it: accelerator and instance type (from :mod:`labkit.planning.capacity` and the cited
catalog), devices per replica, storage for the weights, inference library and server, the
autoscaling signal, and for training the parallelism. It replaces the draft's size-band matrix,
which put 1-10B models on V100s and 10-100B models on "A100" regardless of precision or
context, with arithmetic.

Every rule is a plain ``if`` on a number the course derives (bytes, devices); the tests in
``tests/test_decide.py`` pin the reference points (a 7B model in fp16 fits one 24 GB GPU; a 70B
model needs tensor parallelism; training needs about 16 bytes per parameter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from labkit.planning import capacity, catalog, memory

PATTERNS = ("real-time", "batch", "streaming", "interactive")
WORKLOADS = ("inference", "training")

#: Weight sizes (GB) that change the storage advice. Below the first, copying from S3 at start
#: is quick; above the second, a parallel file system or streaming loader is worth it.
SMALL_WEIGHTS_GB, LARGE_WEIGHTS_GB = 10.0, 100.0


@dataclass(frozen=True)
class Recommendation:
    """What to run and why. Sizes in GB (10**9 bytes); prices in USD per hour (cited)."""

    size_band: str
    memory_gb: float
    accelerator: str
    instance: str | None
    devices_per_replica: int
    nodes_per_replica: int
    usd_per_hour: float | None
    storage: str
    library: str
    server: str
    scaling: str
    training: str | None
    alternative: str | None
    reasons: tuple[str, ...]

    def rows(self) -> list[list[str]]:
        """``[[decision, choice], ...]`` for a two-column table."""
        hourly = "no cited price" if self.usd_per_hour is None else f"${self.usd_per_hour:,.2f}"
        where = self.instance or "CPU nodes (c/m families)"
        rows = [["size band", self.size_band],
                ["memory per replica (GB)", f"{self.memory_gb:,.1f}"],
                ["accelerator", self.accelerator],
                ["instance type", f"{where} ({hourly} per node-hour)"],
                ["devices per replica", str(self.devices_per_replica)],
                ["nodes per replica", str(self.nodes_per_replica)],
                ["weights storage", self.storage],
                ["inference library", self.library],
                ["serving", self.server],
                ["scaling", self.scaling]]
        if self.training:
            rows.append(["training", self.training])
        if self.alternative:
            rows.append(["alternative", self.alternative])
        return rows


def size_band(n_params: float) -> str:
    """The draft's size bands, kept as labels: <1B, 1-10B, 10-100B, >100B parameters."""
    if n_params < 1e9:
        return "<1B"
    if n_params < 10e9:
        return "1–10B"
    return "10–100B" if n_params <= 100e9 else ">100B"


def _memory_need(n_params: float, model, dtype: str, context: int, batch: int,
                 workload: str) -> float:
    """Accelerator bytes one replica (or one training job) needs."""
    if workload == "training":
        return memory.training_bytes(n_params, "mixed-adamw") * 1.2   # + activations margin
    if model is not None:
        return capacity.memory_breakdown(model, context=context, batch=batch, dtype=dtype).total
    return memory.weight_bytes(n_params, dtype) * 1.2               # chapter 01's 20 % rule


#: Accelerators without bf16 Tensor Cores (kept here for older imports; the rule is in catalog).
NO_BF16 = catalog.NO_BF16


def supports(accelerator: str, dtype: str) -> bool:
    """Whether ``accelerator`` runs ``dtype`` natively: :func:`labkit.planning.catalog.runs_natively`."""
    return catalog.runs_natively(accelerator, dtype)


def candidates(kind: str, workload: str, dtype: str) -> list[str]:
    """Instance types of ``kind`` (``"gpu"`` or ``"neuron"``) suited to the workload and dtype.

    Inference: every NVIDIA type that runs ``dtype`` natively; on AWS silicon, Inferentia2 and
    Trainium (trn1, trn2): the Amazon EKS inference guide serves inference "with NVIDIA GPUs or
    AWS Trainium accelerators" (https://docs.aws.amazon.com/eks/latest/userguide/ml-inference.html,
    checked 2026-12-05), and a model too large for an inf2 node (405B in bf16) fits one trn2.
    Training: types with EFA and 8+ devices (p-family GPUs, g5.48xlarge), or Trainium.
    """
    names = []
    for name in catalog.instances():
        inst = catalog.instance(name)
        acc = catalog.accelerator(inst["accelerator"])
        neuron = acc["vendor"] == "AWS"
        if (kind == "neuron") != neuron or not supports(acc["name"], dtype):
            continue
        if workload == "training":
            ok = acc["name"].startswith("Trainium") if neuron else \
                inst["efa"] and inst["accelerator_count"] >= 8
        else:
            ok = acc["name"] == "Inferentia2" or acc["name"].startswith("Trainium") \
                if neuron else True
        if ok:
            names.append(name)
    return names


def _placements(need: float, names: list[str]):
    """(instance, devices, nodes, usd_per_hour or None) for each of ``names`` that can hold it.

    Within one node the devices are a power of two; beyond one node, whole nodes. Each device
    holds at most :data:`capacity.MEMORY_UTILIZATION` (0.9) of its memory, as in
    :func:`capacity.options`.
    """
    for name in names:
        inst = catalog.instance(name)
        per_device = capacity.device_budget_bytes(inst["accelerator"])
        count = int(inst["accelerator_count"])
        devices = next((d for d in capacity.TP_DEGREES if d <= count and need / d <= per_device),
                       None)
        nodes = 1
        if devices is None:
            if not inst["efa"]:
                continue                    # no EFA: one replica cannot span nodes well
            nodes = math.ceil(need / (per_device * count))
            devices = nodes * count
        try:
            price = capacity.on_demand_price(name)["usd_per_hour"]
        except ValueError:
            price = None
        yield name, devices, nodes, price


def _choose(need: float, names: list[str], workload: str = "inference"):
    """The cheapest priced placement on one node; else the fewest devices; else whole nodes.

    Inference is priced per replica-hour: replicas of a serving fleet pack onto a node, so a
    node of 8 GPUs holding 4 replicas costs a quarter of its price per replica. A training job
    is priced per hour of the whole nodes it occupies (``price x nodes``): one job does not
    share its node with another. Returns None when none of ``names`` can hold it.
    """
    placements = list(_placements(need, names))
    if not placements:
        return None

    def cost(p):
        name, devices, nodes, price = p
        if workload == "training":
            return price * nodes
        count = catalog.instance(name)["accelerator_count"]
        replicas_per_node = count // devices if nodes == 1 else 1 / nodes
        return price / replicas_per_node

    priced = [p for p in placements if p[3] is not None]
    single = [p for p in priced if p[2] == 1]
    if single:
        return min(single, key=lambda p: (cost(p), p[1]))
    unpriced_single = [p for p in placements if p[2] == 1]
    if unpriced_single:
        return min(unpriced_single, key=lambda p: p[1])
    if priced:
        return min(priced, key=lambda p: (cost(p), p[2]))
    return min(placements, key=lambda p: (p[2], p[1]))


def _storage(weights_gb: float, workload: str) -> str:
    if workload == "training":
        return ("FSx for Lustre linked to S3 for the dataset; checkpoints to local NVMe, "
                "then S3 in the background")
    if weights_gb < SMALL_WEIGHTS_GB:
        return "S3, copied to local disk by an init container (or Mountpoint for S3)"
    if weights_gb <= LARGE_WEIGHTS_GB:
        return ("S3 with parallel ranged reads (streaming loader) or FSx for Lustre; "
                "cache on local NVMe")
    return "FSx for Lustre (throughput sized for the fleet) backed by S3"


def _scaling(pattern: str) -> str:
    return {
        "real-time": "HPA on requests in flight per Pod, warm spare replicas, "
                     "a Karpenter NodePool for the accelerator",
        "batch": "Indexed Job on Spot capacity, parallelism as the cost ceiling; scale to zero",
        "streaming": "KEDA on consumer lag",
        "interactive": "JupyterHub profiles with MIG or time-sliced GPUs and an idle culler",
    }[pattern]


def recommend(n_params: float | None = None, *, model: str | capacity.Model | None = None,
              workload: str = "inference", pattern: str = "real-time", dtype: str = "bf16",
              context: int = 4096, batch: int = 1, prefer: str = "gpu") -> Recommendation:
    """The course's recommendation for serving or training a model on EKS.

    Args:
        n_params: parameter count; or give ``model`` (a key of :data:`~labkit.planning.capacity.MODELS` or a
            :class:`~labkit.planning.capacity.Model`) to include its KV cache at ``context`` x ``batch``.
        workload: ``"inference"`` or ``"training"`` (mixed-precision AdamW, 16 bytes per
            parameter plus a 20 % margin for activations).
        pattern: ``"real-time"``, ``"batch"``, ``"streaming"`` or ``"interactive"``.
        prefer: ``"gpu"`` (NVIDIA, the broadest software support; the default) or
            ``"neuron"`` (Inferentia2 / Trainium, compiled with the Neuron SDK). The other
            kind is returned as ``alternative``.

    Models under 1B parameters whose inference memory is under 4 GB are sent to CPU nodes:
    they fit in host memory, and at that size decode speed on a CPU is acceptable for low and
    moderate traffic (chapters 01 and 08 measure why).
    """
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if prefer not in ("gpu", "neuron"):
        raise ValueError(f"prefer must be 'gpu' or 'neuron', got {prefer!r}")
    m = capacity.model(model) if model is not None else None
    if n_params is None:
        if m is None:
            raise ValueError("give n_params (e.g. 7e9) or model (e.g. 'llama-3-8b')")
        n_params = m.n_params
    n = memory._check_count(n_params, "n_params")
    need = _memory_need(n, m, dtype, context, batch, workload)
    weights_gb = memory.weight_bytes(n, dtype) / 1e9
    reasons = [f"{n / 1e9:,.2f} B parameters in {dtype}: {weights_gb:,.1f} GB of weights; "
               f"{need / 1e9:,.1f} GB in all for one "
               f"{'training job' if workload == 'training' else 'replica'}"]
    training = None
    if workload == "inference" and n < 1e9 and need < 4e9:
        reasons.append("small enough for host memory: CPU nodes, int8 if latency matters")
        return Recommendation(size_band(n), need / 1e9, "CPU", None, 0, 1, None,
                              _storage(weights_gb, workload),
                              "ONNX Runtime or PyTorch (int8), llama.cpp for GGUF",
                              "a plain Deployment with a small HTTP server (or KServe)",
                              _scaling(pattern), None, None, tuple(reasons))
    other = "neuron" if prefer == "gpu" else "gpu"
    chosen = _choose(need, candidates(prefer, workload, dtype), workload) or \
        _choose(need, candidates(other, workload, dtype), workload)
    if chosen is None:
        raise ValueError(f"no instance type in the catalog holds {need / 1e9:,.0f} GB in "
                         f"{dtype}; quantize (int8, fp8) or shard the model further")
    name, devices, nodes, price = chosen
    alt = _choose(need, candidates(other, workload, dtype), workload)
    alternative = None
    if alt and alt[0] != name:
        alt_price = "no cited price" if alt[3] is None else f"${alt[3]:,.2f} per node-hour"
        alternative = (f"{alt[0]}: {alt[1]} x {catalog.instance(alt[0])['accelerator']}, "
                       f"{alt[2]} node(s), {alt_price}")
    acc = catalog.instance(name)["accelerator"]
    count = int(catalog.instance(name)["accelerator_count"])
    per_device = capacity.device_memory_bytes(acc) / 1e9
    budget = capacity.device_budget_bytes(acc) / 1e9
    basis = "per hour of the whole node(s) the job occupies" if workload == "training" else \
        "per replica-hour"
    reasons.append(f"{name}: {devices} x {acc} ({per_device:,.1f} GB each, "
                   f"{capacity.MEMORY_UTILIZATION:.0%} = {budget:,.1f} GB usable) hold it"
                   + ("" if price is None else f"; cheapest cited price {basis}"))
    neuron = catalog.accelerator(acc)["vendor"] == "AWS"
    if workload == "training":
        if devices == 1:
            training = (f"fits one accelerator, but the job pays for all {count} of the node: "
                        "data parallelism over them for speed")
        elif nodes == 1:
            training = (f"shard weights, gradients and optimizer state (FSDP or ZeRO) over "
                        f"the {devices} devices of one node"
                        + ("" if devices == count else
                           f"; the job pays for all {count}, so use them all for speed"))
        else:
            training = (f"FSDP/ZeRO across {nodes} nodes with EFA, launched as a JobSet or "
                        "PyTorchJob (torchrun), checkpointing to FSx/S3")
        reasons.append("training keeps weights, gradients and AdamW states: "
                       "16 bytes per parameter before activations")
        if price is not None:
            reasons.append(f"the job occupies {nodes} whole node(s): ${price * nodes:,.2f} per "
                           "hour; a faster accelerator can still cost less per finished job")
    if neuron and acc == "Trainium2":
        library = ("vLLM with the vLLM Neuron plugin (vllm-neuron), compiled ahead of time; "
                   "NxD Inference has no support on trn2 from Neuron 2.34 (checked 2026-12-05)")
    elif neuron:
        library = ("vLLM on Neuron with NxD Inference, compiled ahead of time (in maintenance "
                   "mode on inf2/trn1 since Neuron 2.30; checked 2026-12-05)")
    elif devices == 1:
        library = "vLLM (PagedAttention, continuous batching)"
    elif nodes == 1:
        library = f"vLLM with tensor parallelism over the {devices} GPUs of one node"
    else:
        library = (f"vLLM with tensor parallelism inside each node and pipeline parallelism "
                   f"across {nodes} nodes")
    if workload == "training":
        if acc == "Trainium2":
            library = ("native PyTorch on Neuron (TorchNeuron: FSDP, DTensor; public beta in "
                       "Neuron 2.33, checked 2026-12-05)")
        elif neuron:
            library = ("NxD Training / torch-neuronx (XLA): end of support in Neuron 2.32 "
                       "(checked 2026-12-05); pin an earlier Neuron release, or use trn2")
        else:
            library = "PyTorch with FSDP, or DeepSpeed ZeRO"
        server = "none: a JobSet or PyTorchJob runs it to completion"
        scaling = ("a fixed-size job on a Karpenter NodePool of EFA instances; a queue "
                   "(Kueue, Volcano) decides which job gets the accelerators")
        return Recommendation(size_band(n), need / 1e9, acc, name, devices, nodes, price,
                              _storage(weights_gb, workload), library, server, scaling,
                              training, alternative, tuple(reasons))
    if nodes > 1:
        server = "LeaderWorkerSet (one leader and workers per replica) behind a Service"
    elif pattern == "batch":
        server = "offline batch inference inside the Job (no HTTP server)"
    else:
        server = "OpenAI-compatible server (vLLM) as a Deployment, or KServe / Ray Serve"
    return Recommendation(size_band(n), need / 1e9, acc, name, devices, nodes, price,
                          _storage(weights_gb, workload), library, server, _scaling(pattern),
                          training, alternative, tuple(reasons))
