"""Facts about this machine: CPU model and flags, cache sizes, usable cores, the device,
PyTorch's thread count, and one summary (:func:`machine_facts`) to print beside a measurement.

How fast the machine moves bytes and does arithmetic is measured in :mod:`labkit.machine.probes`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path

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


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with PyTorch on ``threads`` threads (None: leave as is), then restore.

    PyTorch's thread count is process-wide, so this is the one place the course touches
    that global state, and it always undoes it (also on an exception).
    """
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
