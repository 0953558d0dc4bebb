"""Probes: how fast this machine moves bytes and does arithmetic, each with an explicit name.

- :func:`stream_copy_GBps`: a STREAM-style copy, counting bytes read + written (2 x size), on
  all threads by default, best of the repeats. The machine's memory bandwidth as Lab 0,
  chapter 6 and chapter 10 quote it.
- :func:`gemv_read_GBps`: a read-only matrix-vector product, one thread by default: the same
  kind of work as a decode step. The decode roofline (Lab 1, Lab 2,
  :func:`labkit.inference.decode_bench.decode_benchmark`) uses this one.
- :func:`matmul_flops`: ``n x n`` matrix multiplies in GFLOP/s (the compute roof).

The two bandwidths are different numbers for different work: do not mix them with ``max()``.
"""

from __future__ import annotations

from labkit.machine.dtypes import normalize_dtype
from labkit.machine.facts import last_level_cache_bytes, pick_device, torch_threads
from labkit.machine.timing import timeit

#: A bandwidth probe's working set must be at least this many times the last-level cache
#: (STREAM's rule), or part of it is served from the cache and the GB/s read too high.
LLC_MULTIPLE = 4


def probe_size_mib(minimum_mib: int, arrays: int = 1, multiple: int = LLC_MULTIPLE) -> int:
    """MiB per array for a memory-bandwidth probe over ``arrays`` arrays: at least
    ``minimum_mib``, and large enough that all arrays together are ``multiple`` x the
    last-level cache (:func:`~labkit.machine.facts.last_level_cache_bytes`). Machines that report no cache size get
    ``minimum_mib``."""
    llc = last_level_cache_bytes()
    need = 0 if llc is None else -(-multiple * llc // (arrays * 2**20))
    return max(int(minimum_mib), int(need))


def stream_copy_GBps(size_mib: int | None = None, repeats: int = 5,
                             device: str | None = None, threads: int | None = None) -> float:
    """Memory bandwidth in GB/s (10**9 bytes/s), STREAM-"copy" style.

    Copies one ``size_mib`` MiB tensor into another and counts the bytes read plus the bytes
    written (2 x size), as STREAM does. Returns the best of ``repeats`` copies (STREAM's
    convention: the best run is the closest to the hardware's limit).

    ``size_mib=None`` (the default) sizes the two arrays together at 4 x the last-level cache
    the OS reports (at least 256 MiB each; :func:`probe_size_mib`), so the copy cannot run
    from the cache: a current server may report 0.5 GB of L3 or more. ``threads`` sets
    PyTorch's threads for the copy (restored after): one core rarely draws all of a
    machine's bandwidth, so compare 1 with :func:`~labkit.machine.facts.usable_cores`.
    """
    import torch

    if size_mib is None:
        size_mib = probe_size_mib(256, arrays=2) if (device or pick_device()) == "cpu" else 256
    if int(size_mib) < 16:
        raise ValueError(f"size_mib must be >= 16 so the copy does not fit in CPU caches, got {size_mib}")
    dev = device or pick_device()
    n = int(size_mib) * 2**20 // 4
    with torch_threads(threads):
        src = torch.ones(n, dtype=torch.float32, device=dev)
        dst = torch.empty_like(src)
        sync = torch.cuda.synchronize if dev == "cuda" else None
        timing = timeit(lambda: dst.copy_(src), repeats=repeats, warmup=1, sync=sync, name="copy")
    return 2 * src.numel() * src.element_size() / timing.min_s / 1e9


def gemv_read_GBps(size_mib: int | None = None, repeats: int = 8,
                           threads: int | None = None) -> dict:
    """Memory read bandwidth as seen by a matrix-vector product, in GB/s (10**9 bytes/s).

    Times ``x @ W`` for one float32 vector ``x`` and a ``size_mib`` MiB matrix ``W``,
    ``repeats`` times after one warm-up, and divides W's bytes by the time. This is the probe
    the decode roofline uses rather than a STREAM-style copy
    (:func:`stream_copy_GBps`), because it is *the same kind of work
    as a decode step*: read every weight once, read-only, through the same BLAS kernel and
    thread count. A copy moves bytes both ways, which decoding never does, so its GB/s is a
    different number.

    ``size_mib=None`` (the default) makes W at least 512 MiB and at least 4 x the last-level
    cache the OS reports (:func:`probe_size_mib`): current server CPUs report
    0.5 GB of L3 or more, and a matrix that fits there measures the cache, not the memory.
    An explicit smaller ``size_mib`` is allowed (tests use it); ``dram_bound`` then says False.

    Returns a dict: ``best_GBps``, ``median_GBps``, ``worst_GBps`` (over the calls),
    ``bytes``, ``threads``, ``llc_bytes`` (None when unknown) and ``dram_bound`` (W >= 4 x
    the last-level cache).
    """
    import torch

    if size_mib is None:
        size_mib = probe_size_mib(512)
    if size_mib < 64:
        raise ValueError(f"size_mib must be >= 64 (bigger than the caches), got {size_mib}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n_cols = 32768
    n_rows = size_mib * 2**20 // (4 * n_cols)
    with torch_threads(threads), torch.inference_mode():
        used = torch.get_num_threads()
        weight = torch.empty(n_rows, n_cols, dtype=torch.float32).fill_(1.0 / n_rows)
        x = torch.ones(1, n_rows, dtype=torch.float32)
        timing = timeit(lambda: torch.mm(x, weight), repeats=repeats, warmup=1, name="gemv")
        del weight
    rate = timing.rate(n_rows * n_cols * 4).scaled(1e-9)
    llc = last_level_cache_bytes()
    return {"best_GBps": rate.best, "median_GBps": rate.median, "worst_GBps": rate.worst,
            "bytes": n_rows * n_cols * 4, "threads": used, "llc_bytes": llc,
            "dram_bound": llc is None or n_rows * n_cols * 4 >= LLC_MULTIPLE * llc}


def matmul_flops(dtype: str = "fp32", n: int = 1024, repeats: int = 5,
                         device: str | None = None, threads: int | None = None) -> float:
    """Matrix-multiply throughput in GFLOP/s (GOP/s for int8) for ``n x n`` matrices.

    One ``n x n @ n x n`` product is ``2 n^3`` operations (a multiply and an add per term).
    Returns the best of ``repeats`` (after one warm-up). ``dtype`` is fp32, fp16, bf16 or int8
    (int8 uses ``torch._int_mm`` with int32 accumulation). On CPUs without native bf16/fp16
    instructions those run emulated and slowly: shrink ``n`` if it takes too long.
    ``threads`` sets PyTorch's threads for the measurement (restored after).
    """
    import torch

    name = normalize_dtype(dtype)
    torch_dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in (*torch_dtypes, "int8"):
        raise ValueError(f"matmul_flops supports fp32, fp16, bf16 and int8, not {dtype!r}")
    if int(n) < 16:
        raise ValueError(f"n must be >= 16, got {n}")
    dev = device or pick_device()
    gen = torch.Generator(device="cpu").manual_seed(0)
    if name == "int8":
        a = torch.randint(-128, 128, (n, n), generator=gen, dtype=torch.int8).to(dev)
        b = torch.randint(-128, 128, (n, n), generator=gen, dtype=torch.int8).to(dev)
        op = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        a = torch.randn(n, n, generator=gen).to(dev, torch_dtypes[name])
        b = torch.randn(n, n, generator=gen).to(dev, torch_dtypes[name])
        op = lambda: a @ b  # noqa: E731
    sync = torch.cuda.synchronize if dev == "cuda" else None
    with torch_threads(threads):
        timing = timeit(op, repeats=repeats, warmup=1, sync=sync, name=f"matmul {name}")
    return 2 * n**3 / timing.min_s / 1e9
