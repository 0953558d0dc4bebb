"""Memory arithmetic for models: weights, KV cache, training state, and whether it fits.

These are the formulas the course uses to size nodes. They count *bytes of tensors*; real
processes add a runtime overhead (CUDA context, allocator fragmentation, activations,
framework buffers), which :func:`fits` models as a fraction on top.

Units: sizes are returned in bytes; GPU memory is given in GB as vendors publish it and is
converted with 1 GB = 10**9 bytes (vendors' "80 GB" is in fact a little more than
80 * 10**9 bytes, so this errs on the safe side).
"""

from __future__ import annotations

import math
from numbers import Real
from pathlib import Path
from typing import NamedTuple

from labkit.machine.dtypes import (BYTES_PER_PARAM, bytes_per_param,  # noqa: F401 (re-exported)
                                   normalize_dtype, tensor_bytes)

#: Bytes per parameter of each training recipe, as (weights, gradients, optimizer states).
#: Activations are not included: they depend on batch size and sequence length.
TRAINING_RECIPES: dict[str, tuple[float, float, float]] = {
    # fp32 weights and gradients; AdamW keeps two fp32 moments (m, v).
    "fp32-adamw": (4.0, 4.0, 8.0),
    # Mixed precision as in the ZeRO paper (Rajbhandari et al., 2020): fp16/bf16 weights and
    # gradients for the math, plus an fp32 master copy of the weights and the two fp32 moments.
    "mixed-adamw": (2.0, 2.0, 12.0),
    # bf16 weights and gradients with fp32 moments and no master copy.
    "bf16-adamw": (2.0, 2.0, 8.0),
    # Plain SGD in fp32: no optimizer state.
    "fp32-sgd": (4.0, 4.0, 0.0),
    # SGD with momentum in fp32: one fp32 buffer.
    "fp32-sgd-momentum": (4.0, 4.0, 4.0),
}


def _check_count(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return float(value)


def weight_bytes(n_params: float, dtype: str) -> float:
    """Bytes of a model's weights: ``n_params`` x bytes per parameter of ``dtype``.

    Quantization metadata is **not** counted, and for int4 it is not small. With an fp16 scale
    per group of ``g`` weights it adds 16/g bits per weight to the 4-bit payload: 6.25 % at
    g = 64, 3.1 % at g = 128 (about 7.8 % and 3.9 % with a 4-bit zero-point as well). GGUF
    Q4_1 (groups of 32 with an fp16 scale and an fp16 minimum: 20 bytes per 32 weights) is
    5 bits per weight, 25 % over 4; the course's own int4 format
    (:class:`labkit.inference.quant.Int4WeightOnlyLinear`, an fp32 scale and an fp32 minimum per group)
    adds 25 % at g = 64 and 12.5 % at g = 128. int8 with one fp32 scale per output row adds
    4 / (input width) bytes per weight, under 1 % for rows of 512 or more. Measure a quantized
    checkpoint's size on disk when the margin matters.

    Example:
        >>> weight_bytes(7e9, "fp16") / 1e9   # a 7B model in fp16: 14 GB of weights
        14.0
    """
    return _check_count(n_params, "n_params") * bytes_per_param(dtype)


def kv_cache_bytes(*, n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int,
                   batch_size: int = 1, dtype: str = "fp16") -> float:
    """Bytes of the KV cache: 2 (K and V) x layers x KV heads x head size x tokens x batch x bytes.

    ``n_kv_heads`` is the number of *key/value* heads: fewer than the query heads in models that
    use grouped-query attention (Llama 3 8B: 32 query heads, 8 KV heads).

    Example (Llama 3 8B, 8k tokens, fp16):
        >>> kv_cache_bytes(n_layers=32, n_kv_heads=8, head_dim=128, seq_len=8192) / 2**30
        1.0
    """
    values = {"n_layers": n_layers, "n_kv_heads": n_kv_heads, "head_dim": head_dim,
              "seq_len": seq_len, "batch_size": batch_size}
    for name, value in values.items():
        _check_count(value, name)
    return (2.0 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_param(dtype))


def training_breakdown(n_params: float, recipe: str = "mixed-adamw") -> dict[str, float]:
    """Bytes of weights, gradients and optimizer states for ``recipe``, and their total.

    Recipes and their bytes per parameter (weights + gradients + optimizer states):

    - ``fp32-adamw``: 4 + 4 + 8 = 16
    - ``mixed-adamw``: 2 + 2 + 12 (fp32 master weights and two fp32 moments) = 16
    - ``bf16-adamw``: 2 + 2 + 8 = 12
    - ``fp32-sgd``: 4 + 4 + 0 = 8
    - ``fp32-sgd-momentum``: 4 + 4 + 4 = 12

    Activations are excluded: they grow with batch size and sequence length.
    """
    if recipe not in TRAINING_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; use one of: {', '.join(TRAINING_RECIPES)}")
    n = _check_count(n_params, "n_params")
    weights, grads, optim = TRAINING_RECIPES[recipe]
    parts = {"weights": n * weights, "gradients": n * grads, "optimizer_states": n * optim}
    parts["total"] = sum(parts.values())
    return parts


def training_bytes(n_params: float, recipe: str = "mixed-adamw") -> float:
    """Bytes of training state (weights + gradients + optimizer states) for ``recipe``.

    See :func:`training_breakdown` for the recipes. Example: a 7B model with mixed-precision
    AdamW needs 16 bytes per parameter, 112 GB, before activations:

        >>> training_bytes(7e9) / 1e9
        112.0
    """
    return training_breakdown(n_params, recipe)["total"]


def fits(n_params: float, dtype: str, gpu_memory_gb: float, overhead: float = 0.2) -> bool:
    """Whether the weights of ``n_params`` in ``dtype``, plus ``overhead``, fit one GPU.

    Args:
        n_params: number of parameters.
        dtype: one of fp32, fp16, bf16, fp8, int8, int4.
        gpu_memory_gb: memory of one GPU in GB as published (e.g. 24 for an A10G).
        overhead: extra fraction on top of the weights for the runtime, activations and a
            small KV cache (0.2 = 20 %). Serving long contexts or big batches needs more: add
            :func:`kv_cache_bytes` to the weights instead.

    Example:
        >>> fits(7e9, "fp16", 24)      # 14 GB x 1.2 = 16.8 GB <= 24 GB
        True
        >>> fits(70e9, "fp16", 80)     # 140 GB x 1.2 = 168 GB > 80 GB
        False
    """
    return gpus_needed(n_params, dtype, gpu_memory_gb, overhead=overhead) <= 1


def gpus_needed(n_params: float, dtype: str, gpu_memory_gb: float, overhead: float = 0.2) -> int:
    """The smallest number of GPUs of ``gpu_memory_gb`` that hold the weights plus ``overhead``.

    Assumes the weights can be split evenly over any number of GPUs, so it is a lower bound,
    not a deployable count (3, 7 or 13 GPUs are not): see :func:`deployable_gpus`.
    """
    memory = _check_count(gpu_memory_gb, "gpu_memory_gb")
    if memory == 0:
        raise ValueError("gpu_memory_gb must be > 0, e.g. 24 for an A10G or 80 for an H100")
    extra = _check_count(overhead, "overhead")
    need = weight_bytes(n_params, dtype) * (1.0 + extra)
    return max(1, math.ceil(need / (memory * 1e9)))


class Deployment(NamedTuple):
    """A GPU count a serving engine can actually run, from :func:`deployable_gpus`.

    Attributes:
        gpus: GPUs per replica (``tensor_parallel x pipeline_parallel``).
        tensor_parallel: GPUs that split every layer (within one node).
        pipeline_parallel: groups of layers, one per node (1 = a single node).
        nodes: nodes per replica.
        minimum: the memory lower bound, :func:`gpus_needed`.
    """

    gpus: int
    tensor_parallel: int
    pipeline_parallel: int
    nodes: int
    minimum: int


def tensor_parallel_ok(tp: int, n_heads: int, n_kv_heads: int) -> bool:
    """Whether a tensor-parallel degree ``tp`` can split a model's attention.

    vLLM's rule: the query heads must divide evenly (``n_heads % tp == 0``), and the KV heads
    must either divide evenly or, when there are fewer KV heads than GPUs, be replicated a
    whole number of times (``tp % n_kv_heads == 0``). Llama 3 70B (64 heads, 8 KV heads):
    1, 2, 4, 8 or 16, never 3.
    """
    for name, value in (("tp", tp), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if n_heads % n_kv_heads:
        raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
    kv_ok = n_kv_heads % tp == 0 if n_kv_heads >= tp else tp % n_kv_heads == 0
    return n_heads % tp == 0 and kv_ok


def deployable_gpus(n_params: float, dtype: str, gpu_memory_gb: float, *, n_heads: int,
                    n_kv_heads: int, gpus_per_node: int = 8, overhead: float = 0.2
                    ) -> Deployment:
    """The GPU count a replica really needs: the memory bound rounded up to a shape a
    serving engine accepts.

    Within one node the replica uses tensor parallelism of degree ``tp``: a divisor of
    ``gpus_per_node`` (EC2 GPU instances come with 1, 4 or 8 GPUs, so 1, 2, 4 or 8 pack a
    node without leftovers) that splits the attention heads (:func:`tensor_parallel_ok`).
    When even a full node is too small, the replica spans nodes with pipeline parallelism:
    ``tp`` = the largest valid degree within a node and one pipeline stage per node.

    Example (Llama 3 70B, fp16, 80 GB GPUs): the memory bound is 3, but the model runs on 4.

        >>> deployable_gpus(70e9, "fp16", 80, n_heads=64, n_kv_heads=8).gpus
        4
    """
    minimum = gpus_needed(n_params, dtype, gpu_memory_gb, overhead=overhead)
    if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or gpus_per_node < 1:
        raise ValueError(f"gpus_per_node must be an integer >= 1, got {gpus_per_node!r}")
    degrees = [t for t in range(1, gpus_per_node + 1)
               if gpus_per_node % t == 0 and tensor_parallel_ok(t, n_heads, n_kv_heads)]
    for tp in degrees:
        if tp >= minimum:
            return Deployment(tp, tp, 1, 1, minimum)
    tp = degrees[-1]
    stages = math.ceil(minimum / tp)
    return Deployment(tp * stages, tp, stages, stages, minimum)


def process_memory() -> dict[str, int]:
    """This process's resident memory by kind, in bytes (Linux, from ``/proc/self/status``).

    ``anon``: private memory the process allocated (tensors it built or copied). ``file``:
    pages of memory-mapped files, i.e. page cache the kernel can drop and re-read. ``shmem``:
    shared memory (``/dev/shm``, which in a Pod is a memory-backed ``emptyDir`` and counts
    against the container's memory limit). ``peak``: the high-water mark of the total
    (``VmHWM``). Raises RuntimeError where ``/proc`` is not available.
    """
    keys = {"RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem", "VmHWM": "peak",
            "VmRSS": "total"}
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError as err:
        raise RuntimeError("process_memory needs Linux's /proc/self/status") from err
    out = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in keys:
            out[keys[name]] = int(value.split()[0]) * 1024
    return out


_LOAD_SCRIPT = r"""
import json, sys
import torch
from labkit.planning.memory import process_memory
how, path, device = sys.argv[1:4]
before = process_memory()
peak = {"anon": 0, "file": 0}

def note():
    now = process_memory()
    for k in peak:
        peak[k] = max(peak[k], now[k] - before[k])

if how == "torch.load":
    held = torch.load(path)
    note()
else:
    from safetensors import safe_open
    kept = []
    with safe_open(path, framework="pt") as f:
        for name in f.keys():
            tensor = f.get_tensor(name)
            if device == "cuda":
                kept.append(tensor.to(device))
            else:
                float(tensor.sum())
            del tensor
            note()
print(json.dumps(peak))
"""

#: The loaders :func:`measure_load_memory` knows.
LOADERS = ("torch.load", "safetensors-stream")


def measure_load_memory(path, how: str, device: str = "cpu", timeout_s: float = 120) -> dict:
    """Peak growth of private (``anon``) and file-backed (``file``) resident memory, in bytes,
    while a fresh Python process loads the weights at ``path``.

    ``how="torch.load"`` unpickles a ``.pt`` file (every tensor copied into the process);
    ``how="safetensors-stream"`` opens a ``.safetensors`` file with ``safe_open`` and takes one
    tensor at a time, as vLLM's default loader does, copying it to ``device`` when that is
    ``"cuda"`` (kept there) or reading every byte of it on a CPU. A fresh process, so that
    memory freed earlier by the caller cannot hide the growth. Linux only.
    """
    import json
    import subprocess
    import sys

    if how not in LOADERS:
        raise ValueError(f"unknown loader {how!r}; use one of {', '.join(LOADERS)}")
    if not Path(path).is_file():
        raise ValueError(f"{path} is not a file")
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, how, str(path), device],
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the load in a subprocess failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
