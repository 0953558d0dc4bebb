"""Facts about this machine and its measured limits.

:func:`machine_facts` says what the machine is; :func:`measure_memory_bandwidth` and
:func:`measure_matmul_flops` say how fast it can move bytes and do arithmetic. The course puts
every measurement next to these limits, so a learner sees how close a workload gets to what
the hardware can do ("% of roofline").
"""

from __future__ import annotations

import contextlib

import os
import platform
import shutil
import sys
from pathlib import Path

from labkit.machine.timing import timeit
from labkit.machine.dtypes import normalize_dtype

_CPU_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                          "amx_int8", "asimd", "sve")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in _CPU_FLAGS_OF_INTEREST if f in flags]
    except OSError:
        pass
    return []


def cache_sizes() -> dict[int, int]:
    """Data/unified CPU cache size per level, in bytes, as the OS reports it for CPU 0.

    Read from ``/sys/devices/system/cpu/cpu0/cache`` (what ``lscpu`` shows); where that is
    missing, from ``sysconf`` (glibc). Levels that cannot be read are left out, so the dict
    may be empty (macOS, Windows, some containers). A virtual machine reports its host's
    caches: a 2-vCPU VM may show a 480 MiB L3 shared with every other tenant of the socket.
    """
    sizes: dict[int, int] = {}
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        entries = sorted(root.glob("index*"))
    except OSError:
        entries = []
    for entry in entries:
        try:
            kind = (entry / "type").read_text().strip()
            level = int((entry / "level").read_text())
            text = (entry / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or not text:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        number = int(text.rstrip("KMGB")) * units.get(text.rstrip("B")[-1:], 1)
        sizes[level] = max(sizes.get(level, 0), number)
    if not sizes:
        for level, name in ((1, "SC_LEVEL1_DCACHE_SIZE"), (2, "SC_LEVEL2_CACHE_SIZE"),
                            (3, "SC_LEVEL3_CACHE_SIZE"), (4, "SC_LEVEL4_CACHE_SIZE")):
            try:
                value = os.sysconf(name)
            except (ValueError, OSError, AttributeError):
                continue
            if value and value > 0:
                sizes[level] = int(value)
    return sizes


def last_level_cache_bytes() -> int | None:
    """Size of the last-level CPU cache in bytes (the L3 on most servers), or None if the OS
    does not say. See :func:`cache_sizes`."""
    sizes = cache_sizes()
    return sizes[max(sizes)] if sizes else None


#: A bandwidth probe's working set must be at least this many times the last-level cache
#: (STREAM's rule), or part of it is served from the cache and the GB/s read too high.
LLC_MULTIPLE = 4


def probe_size_mib(minimum_mib: int, arrays: int = 1, multiple: int = LLC_MULTIPLE) -> int:
    """MiB per array for a memory-bandwidth probe over ``arrays`` arrays: at least
    ``minimum_mib``, and large enough that all arrays together are ``multiple`` x the
    last-level cache (:func:`last_level_cache_bytes`). Machines that report no cache size get
    ``minimum_mib``."""
    llc = last_level_cache_bytes()
    need = 0 if llc is None else -(-multiple * llc // (arrays * 2**20))
    return max(int(minimum_mib), int(need))


def usable_cores() -> int:
    """CPU cores this process may run on (respects container CPU sets and taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def pick_device(prefer: str | None = None) -> str:
    """``"cuda"`` when an NVIDIA GPU is usable, otherwise ``"cpu"``.

    Args:
        prefer: force a device (``"cpu"`` or ``"cuda"``); also read from the environment
            variable ``LABKIT_DEVICE``. Asking for CUDA on a machine without it raises
            ValueError saying so.
    """
    import torch

    choice = (prefer or os.environ.get("LABKIT_DEVICE") or "").strip().lower()
    if choice in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA was asked for (prefer='cuda' or LABKIT_DEVICE=cuda) but no CUDA "
                             "GPU is usable here; unset LABKIT_DEVICE or use 'cpu'")
        return "cuda"
    raise ValueError(f"unknown device {choice!r}; use 'cpu', 'cuda' or 'auto'")


def machine_facts(path: str | os.PathLike = ".") -> dict:
    """What this machine is: CPU, cores, memory, free disk at ``path``, Python, torch, CUDA.

    Memory and disk are in GiB (2**30 bytes). Every key is always present; values that cannot
    be read are ``None``.
    """
    import psutil
    import torch

    mem = psutil.virtual_memory()
    disk_path = Path(path)
    while not disk_path.exists() and disk_path != disk_path.parent:
        disk_path = disk_path.parent
    disk = shutil.disk_usage(disk_path)
    cuda = torch.cuda.is_available()
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "llc_MiB": None if (llc := last_level_cache_bytes()) is None else round(llc / 2**20, 1),
        "memory_total_GiB": round(mem.total / 2**30, 1),
        "memory_available_GiB": round(mem.available / 2**30, 1),
        "disk_free_GiB": round(disk.free / 2**30, 1),
        "disk_path": str(disk_path.resolve()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "device": "cuda" if cuda else "cpu",
    }


def describe_machine(facts: dict | None = None) -> str:
    """One line for printing beside a measurement: where it was taken."""
    f = facts or machine_facts()
    gpu = f"GPU {f['cuda_device']}" if f["cuda_available"] else "no GPU"
    llc = f"last-level cache {f['llc_MiB']:g} MiB, " if f.get("llc_MiB") else ""
    return (f"{f['cpu_model']}, {f['usable_cores']} usable cores, {llc}"
            f"{f['memory_total_GiB']} GiB RAM, {gpu}; Python {f['python']}, torch {f['torch']} "
            f"({f['torch_threads']} threads)")


def measure_memory_bandwidth(size_mib: int | None = None, repeats: int = 5,
                             device: str | None = None, threads: int | None = None) -> float:
    """Memory bandwidth in GB/s (10**9 bytes/s), STREAM-"copy" style.

    Copies one ``size_mib`` MiB tensor into another and counts the bytes read plus the bytes
    written (2 x size), as STREAM does. Returns the best of ``repeats`` copies (STREAM's
    convention: the best run is the closest to the hardware's limit).

    ``size_mib=None`` (the default) sizes the two arrays together at 4 x the last-level cache
    the OS reports (at least 256 MiB each; :func:`probe_size_mib`), so the copy cannot run
    from the cache: a current server may report 0.5 GB of L3 or more. ``threads`` sets
    PyTorch's threads for the copy (restored after): one core rarely draws all of a
    machine's bandwidth, so compare 1 with :func:`usable_cores`.
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


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with PyTorch on ``threads`` threads (None: leave as is), then restore."""
    import torch

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_matmul_flops(dtype: str = "fp32", n: int = 1024, repeats: int = 5,
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
        raise ValueError(f"measure_matmul_flops supports fp32, fp16, bf16 and int8, not {dtype!r}")
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


def tool_path(name: str) -> str | None:
    """Path of a command-line tool (``fio``, ``chromium``...) on PATH, or None."""
    return shutil.which(name)


def python_ok(minimum: tuple[int, int] = (3, 10)) -> bool:
    """Whether this Python is at least ``minimum``."""
    return sys.version_info[:2] >= minimum
