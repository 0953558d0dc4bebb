"""Storage throughput, measured on this machine, with fio as the reference.

What AI jobs need from storage is bandwidth for big sequential reads (checkpoints, packed
datasets) and operations per second for small ones (many small files, random samples). This
module measures both, on a scratch file, and runs the same pattern with ``fio`` in the same
run so that every Python figure comes with its distance to the hardware's limit.

Vocabulary used throughout:

* **cold**: read from the disk. The file's pages are dropped from the page cache with
  ``posix_fadvise(POSIX_FADV_DONTNEED)`` (:func:`drop_file_cache`), or the read uses
  ``O_DIRECT`` and bypasses the cache (``method="direct"``).
* **warm**: read from the page cache (RAM), the second time a file is read.
* Units: ``MBps`` is 10**6 bytes per second (what disk vendors and AWS quote); sizes are in
  bytes; ``KiB``/``MiB``/``GiB`` are powers of two. Latencies are in microseconds (µs).

Safety: everything is written inside :func:`scratch_dir`, which checks free space first
(refusing below twice the test size), and removes every file on success, on error and on
Ctrl-C. The scratch location is ``$LABKIT_SCRATCH`` or ``<repository>/.scratch``.

Reads land in page-aligned buffers (:func:`aligned_buffer`): on this course's machine a
``bytearray`` destination makes page-cache copies about 5x slower.

The PyTorch parts (DataLoader, checkpoints) live in :mod:`labkit.storage_torch` and are
re-exported here (``storage.bench_dataloader``, ``storage.bench_checkpoint``), imported on
first use so that ``python -m labkit bench storage`` does not pay for ``import torch``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import json
import math
import mmap
import os
import platform
import random
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit import scratch, storage_fio
from labkit.storage_fio import (FIO_INSTALL_HINT, ensure_fio, fio_message, fio_path,
                                fio_required, fio_version)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Block sizes of the sweep: 4 KiB, 8 KiB, ... 16 MiB (13 sizes).
BLOCK_SIZES: tuple[int, ...] = tuple(4 * KiB << i for i in range(13))
#: Largest size any default of this module writes (the course's scratch budget is 2 GiB).
MAX_DEFAULT_BYTES = 1 * GiB
#: Default size of the benchmark file (quick on a laptop disk, big enough to leave the caches).
DEFAULT_FILE_BYTES = 256 * MiB
#: O_DIRECT needs offsets, sizes and buffers aligned to the logical block size; 4 KiB is safe.
ALIGN = 4096
#: Free space is required to be at least this multiple of what a test writes.
SPACE_FACTOR = 2

__all__ = [
    "KiB", "MiB", "GiB", "BLOCK_SIZES", "MAX_DEFAULT_BYTES", "DEFAULT_FILE_BYTES",
    "FIO_INSTALL_HINT", "Stats", "Throughput", "RandomReadResult", "Comparison",
    "default_scratch_root", "check_free_space", "scratch_dir", "aligned_buffer",
    "supports_direct_io", "drop_file_cache", "cached_fraction", "make_file", "write_file",
    "read_file", "sweep_block_sizes", "random_reads", "make_small_files", "read_small_files",
    "read_big_file", "small_vs_big", "compare_seq_read", "compare_rand_read",
    "machine_context", "fio_path", "fio_version", "fio_message", "fio_required",
    "ensure_fio", "fio_seq_read",
    "fio_rand_read", "storage_figures", "storage_option", "storage_table", "storage_sources",
    "fleet_load_seconds", "bench_storage_cli",
    "bench_dataloader", "bench_checkpoint",
]


# --------------------------------------------------------------------------- results


@dataclass
class Stats:
    """Repeated measurements of one quantity: ``values`` plus median, min and max.

    ``unit`` is a label such as ``"MB/s"``, ``"IOPS"`` or ``"x"`` (a ratio).
    """

    values: list[float]
    unit: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def min(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    def __str__(self) -> str:
        if not self.values:
            return f"n/a {self.unit}".strip()
        return (f"{_fmt(self.median)} {self.unit} (min {_fmt(self.min)}, max {_fmt(self.max)}, "
                f"n={len(self.values)})")

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max,
                "values": list(self.values), "unit": self.unit}


def _fmt(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _positive_seconds(seconds: float, label: str = "") -> float:
    """``seconds`` if it is a measurable time; ValueError otherwise (as ``bench.throughput``):
    a rate over 0 s would be infinite and slip silently into medians and ratios."""
    if not seconds > 0:
        raise ValueError(f"{label or 'transfer'}: took no measurable time ({seconds} s); "
                         f"give it more work per timing")
    return seconds


@dataclass
class Throughput:
    """One timed transfer: ``nbytes`` moved in ``seconds``; ``MBps`` = 10**6 bytes/s."""

    nbytes: int
    seconds: float
    ops: int = 0
    label: str = ""

    @property
    def MBps(self) -> float:
        return self.nbytes / _positive_seconds(self.seconds, self.label) / 1e6

    @property
    def ops_per_s(self) -> float:
        return self.ops / _positive_seconds(self.seconds, self.label)

    def __str__(self) -> str:
        return (f"{self.label or 'transfer'}: {self.nbytes / 1e6:.1f} MB in "
                f"{self.seconds:.3f} s = {self.MBps:,.0f} MB/s")


@dataclass
class RandomReadResult:
    """Random reads: IOPS and latency percentiles (µs) of ``ops`` reads of ``block_size``."""

    ops: int
    block_size: int
    threads: int
    seconds: float
    latencies_us: dict[str, float]
    method: str = "direct"

    @property
    def iops(self) -> float:
        return self.ops / _positive_seconds(self.seconds, "random reads")

    @property
    def MBps(self) -> float:
        return self.iops * self.block_size / 1e6

    def __str__(self) -> str:
        lat = ", ".join(f"{k} {v:.0f} µs" for k, v in self.latencies_us.items())
        return (f"random {self.block_size // KiB} KiB reads, {self.threads} thread(s), "
                f"{self.method}: {self.iops:,.0f} IOPS ({lat})")


@dataclass
class Comparison:
    """Python against fio on the same pattern, same file, same run (alternating repetitions).

    ``ratio`` holds one Python/fio ratio per repetition (each pair ran back to back), which is
    robust against a disk whose speed drifts over minutes. ``fio`` and ``ratio`` are ``None``
    without fio; ``message`` then says how to install it.
    """

    metric: str
    python: Stats
    fio: Stats | None
    ratio: Stats | None
    message: str = ""
    details: dict = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.metric}", f"  Python: {self.python}"]
        if self.fio is not None and self.ratio is not None:
            lines += [f"  fio:    {self.fio}", f"  ratio Python/fio: {self.ratio}"]
        if self.message:
            lines.append(f"  {self.message}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- scratch space


def default_scratch_root() -> Path:
    """Where scratch files go: ``$LABKIT_SCRATCH``, else ``<repository>/.scratch``.

    The default keeps test files on the disk that holds the course (not on a RAM-backed
    ``/tmp``). Same rule as :func:`labkit.scratch.scratch_root`.
    """
    return scratch.scratch_root()


def check_free_space(root: str | os.PathLike, need_bytes: int, *,
                     factor: float = SPACE_FACTOR) -> int:
    """Return the free bytes at ``root``; raise RuntimeError if below ``factor`` x ``need_bytes``.

    ``root`` need not exist yet (its nearest existing parent is checked). Raises ValueError for
    a negative ``need_bytes``. (:func:`labkit.scratch.check_free_space` with the path first.)
    """
    return scratch.check_free_space(need_bytes, Path(root), factor=factor)


def scratch_dir(need_bytes: int, root: str | os.PathLike | None = None, *,
                prefix: str = "labkit-storage-",
                limit_bytes: int = scratch.DEFAULT_LIMIT_BYTES):
    """A fresh scratch folder for a test that writes about ``need_bytes``; removed afterwards.

    :func:`labkit.scratch.scratch_dir` with this module's prefix: checks free space first
    (RuntimeError below twice ``need_bytes``), refuses requests above ``limit_bytes``
    (ValueError), and removes the folder on success, exceptions and KeyboardInterrupt.

    >>> with scratch_dir(64 * MiB) as d:          # doctest: +SKIP
    ...     make_file(d / "f.bin", 64 * MiB)
    """
    return scratch.scratch_dir(need_bytes, prefix=prefix, limit_bytes=limit_bytes, root=root)


# --------------------------------------------------------------------------- page cache


def aligned_buffer(nbytes: int) -> mmap.mmap:
    """A zeroed, page-aligned, writable buffer of ``nbytes`` (an anonymous ``mmap``).

    Use it as the destination of ``readinto``/``os.preadv``: it satisfies O_DIRECT, and
    page-cache copies into it run about 5x faster here than into a ``bytearray`` (whose data
    starts 16 bytes past a page boundary).
    """
    if nbytes <= 0:
        raise ValueError(f"buffer size must be > 0, got {nbytes}")
    return mmap.mmap(-1, nbytes)


def supports_direct_io(path: str | os.PathLike) -> bool:
    """True if ``path`` (an existing file of at least 4 KiB) can be read with ``O_DIRECT``.

    tmpfs, some network and overlay filesystems and macOS do not allow it.
    """
    flag = getattr(os, "O_DIRECT", None)
    if flag is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError:
        return False
    try:
        buf = aligned_buffer(ALIGN)
        try:
            os.preadv(fd, [buf], 0)
            return True
        except OSError:
            return False
        finally:
            buf.close()
    finally:
        os.close(fd)


def drop_file_cache(path: str | os.PathLike) -> None:
    """Drop ``path``'s pages from the page cache, so the next read comes from the disk.

    Dirty pages are written first (``fsync``), because ``POSIX_FADV_DONTNEED`` only drops clean
    ones. Affects this file only, unlike ``echo 3 > /proc/sys/vm/drop_caches``. Raises
    RuntimeError where ``posix_fadvise`` does not exist (macOS, Windows).
    """
    if not hasattr(os, "posix_fadvise"):
        raise RuntimeError("cold reads need os.posix_fadvise (Linux). On this system, read a "
                           "file bigger than RAM instead, or use method='direct' if supported.")
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            os.fsync(fd)
        except OSError:
            pass
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


_libc = None


def _get_libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.mmap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long]
        _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return _libc


def cached_fraction(path: str | os.PathLike) -> float | None:
    """Fraction (0..1) of ``path``'s pages that are in the page cache now (``mincore``).

    Lets a notebook *show* that a read was cold (about 0) or warm (about 1). Returns ``None``
    where ``mincore`` is not available.
    """
    if sys.platform != "linux":
        return None
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    libc = _get_libc()
    page = mmap.PAGESIZE
    npages = (size + page - 1) // page
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            vec = (ctypes.c_ubyte * npages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return None
            resident = sum(b & 1 for b in bytes(vec))
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)
    return resident / npages


# --------------------------------------------------------------------------- sequential I/O


def _fsync_path(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pattern_block(nbytes: int, seed: int = 0) -> mmap.mmap:
    """An aligned buffer of incompressible bytes (a 64 KiB random pattern, repeated)."""
    buf = aligned_buffer(nbytes)
    chunk = random.Random(seed).randbytes(min(nbytes, 64 * KiB))
    for off in range(0, nbytes, len(chunk)):
        n = min(len(chunk), nbytes - off)
        buf[off:off + n] = chunk[:n]
    return buf


def write_file(path: str | os.PathLike, size: int, block_size: int = 1 * MiB, *,
               direct: bool = False, fsync: bool = True) -> Throughput:
    """Write ``size`` bytes to ``path`` in ``block_size`` writes; time it including ``fsync``.

    The data is incompressible. ``direct=True`` writes with ``O_DIRECT`` (then ``size`` and
    ``block_size`` must be multiples of 4 KiB). Without ``fsync`` the figure is the speed of
    copying into the page cache, not of the disk. The caller checks free space
    (:func:`scratch_dir` does).
    """
    if size <= 0 or block_size <= 0:
        raise ValueError(f"size and block_size must be > 0, got {size} and {block_size}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if direct:
        if size % ALIGN or block_size % ALIGN:
            raise ValueError("O_DIRECT writes need size and block_size in multiples of 4 KiB")
        flags |= getattr(os, "O_DIRECT", 0)
    buf = _pattern_block(block_size)
    view = memoryview(buf)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if direct and err.errno == errno.EINVAL:
            raise RuntimeError(f"this filesystem does not allow O_DIRECT at {path}; "
                               f"use direct=False") from err
        raise
    try:
        t0 = time.perf_counter()
        done = 0
        ops = 0
        while done < size:
            n = min(block_size, size - done)
            written = os.write(fd, view[:n])
            done += written
            ops += 1
        if fsync:
            os.fsync(fd)
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
        view.release()
        buf.close()
    return Throughput(done, seconds, ops, label=f"write {_size_label(block_size)}"
                      f"{' O_DIRECT' if direct else ''}{' + fsync' if fsync else ''}")


def make_file(path: str | os.PathLike, size: int) -> Path:
    """Create a test file of ``size`` bytes (incompressible, fsync'd) and return its path."""
    write_file(path, size, min(4 * MiB, max(ALIGN, size)))
    return Path(path)


def _size_label(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def _resolve_method(path, cache: str, method: str) -> str:
    if cache not in ("cold", "warm"):
        raise ValueError(f"cache must be 'cold' or 'warm', got {cache!r}")
    if method not in ("auto", "direct", "buffered"):
        raise ValueError(f"method must be 'auto', 'direct' or 'buffered', got {method!r}")
    if cache == "warm":
        if method == "direct":
            raise ValueError("a warm read comes from the page cache, which O_DIRECT bypasses; "
                             "use method='buffered' (or 'auto')")
        return "buffered"
    if method == "auto":
        return "direct" if supports_direct_io(path) else "buffered"
    if method == "direct" and not supports_direct_io(path):
        raise RuntimeError(f"this filesystem does not allow O_DIRECT reads of {path}; use "
                           f"method='buffered' (page cache dropped with posix_fadvise)")
    return method


def _read_loop(fd: int, buf: mmap.mmap, limit: int) -> tuple[int, int]:
    done = 0
    ops = 0
    bs = len(buf)
    readv = os.readv
    if limit % bs == 0:
        bufs = [buf]
        while done < limit:
            n = readv(fd, bufs)
            if n <= 0:
                break
            done += n
            ops += 1
    else:
        view = memoryview(buf)
        while done < limit:
            n = readv(fd, [view[:min(bs, limit - done)]])
            if n <= 0:
                break
            done += n
            ops += 1
        view.release()
    return done, ops


def read_file(path: str | os.PathLike, block_size: int = 1 * MiB, *, cache: str = "cold",
              method: str = "auto", limit_bytes: int | None = None) -> Throughput:
    """Read ``path`` sequentially in ``block_size`` reads into an aligned buffer; time it.

    ``cache="cold"`` reads from the disk: ``method="direct"`` opens with ``O_DIRECT``;
    ``method="buffered"`` drops the file's pages first (:func:`drop_file_cache`) and goes
    through the page cache with the kernel's readahead; ``"auto"`` takes O_DIRECT where the
    filesystem allows. ``cache="warm"`` first makes sure the file is in the page cache, then
    times a read from RAM. ``limit_bytes`` stops after that many bytes (default: whole file).
    """
    size = os.path.getsize(path)
    limit = size if limit_bytes is None else min(size, limit_bytes)
    if block_size <= 0 or limit <= 0:
        raise ValueError(f"need block_size > 0 and a non-empty read; got block_size="
                         f"{block_size}, {limit} bytes to read")
    method = _resolve_method(path, cache, method)
    flags = os.O_RDONLY
    if method == "direct":
        if block_size % ALIGN:
            raise ValueError("O_DIRECT reads need block_size in multiples of 4 KiB")
        flags |= os.O_DIRECT
        limit -= limit % ALIGN
    elif cache == "cold":
        drop_file_cache(path)
    buf = aligned_buffer(block_size)
    fd = os.open(path, flags)
    try:
        if cache == "warm":  # make sure it is all in RAM (untimed)
            warm = aligned_buffer(max(block_size, 1 * MiB))
            try:
                _read_loop(fd, warm, limit)
            finally:
                warm.close()
            os.lseek(fd, 0, os.SEEK_SET)
        elif hasattr(os, "posix_fadvise") and method == "buffered":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        t0 = time.perf_counter()
        done, ops = _read_loop(fd, buf, limit)
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
        buf.close()
    label = f"read {_size_label(block_size)} {cache}" + (" O_DIRECT" if method == "direct" else "")
    return Throughput(done, seconds, ops, label=label)


def _bytes_for_block(block_size: int, file_bytes: int, max_ops: int, min_bytes: int,
                     max_bytes: int | None) -> int:
    want = max(min_bytes, block_size * 16, block_size * max_ops)
    if max_bytes is not None:
        want = min(want, max(max_bytes, block_size))
    return min(file_bytes, want)


def sweep_block_sizes(path: str | os.PathLike, block_sizes: Sequence[int] = BLOCK_SIZES, *,
                      caches: Sequence[str] = ("cold", "warm"), method: str = "auto",
                      repeats: int = 3, max_ops: int = 2048, min_bytes: int = 16 * MiB,
                      max_bytes: int | None = None, with_fio: bool = True) -> list[dict]:
    """Throughput against block size, cold and warm, by Python and (if installed) by fio.

    For each block size reads ``min(file, max(min_bytes, 16 x block_size, max_ops x
    block_size))`` bytes, capped at ``max_bytes`` if given, so small blocks do not take
    minutes. Python and fio alternate within each repetition.
    Returns rows ``{"block_size", "cache", "source": "python"|"fio", "MBps": Stats,
    "bytes"}``; fio rows are missing without fio (see :func:`fio_message`).
    """
    path = Path(path)
    size = os.path.getsize(path)
    rows = []
    use_fio = with_fio and fio_path() is not None
    for cache in caches:
        m = _resolve_method(path, cache, method)
        for bs in block_sizes:
            nbytes = _bytes_for_block(bs, size, max_ops, min_bytes, max_bytes)
            if m == "direct":
                nbytes -= nbytes % ALIGN
            py, fi = [], []
            for rep in range(repeats):
                order = ("py", "fio") if rep % 2 == 0 else ("fio", "py")
                for who in order:
                    if who == "py":
                        py.append(read_file(path, bs, cache=cache, method=m,
                                            limit_bytes=nbytes).MBps)
                    elif use_fio:
                        r = fio_seq_read(path, bs, cache=cache, method=m, size=nbytes)
                        if r is not None:
                            fi.append(r.MBps)
            rows.append({"block_size": bs, "cache": cache, "method": m, "source": "python",
                         "MBps": Stats(py, "MB/s"), "bytes": nbytes})
            if fi:
                rows.append({"block_size": bs, "cache": cache, "method": m, "source": "fio",
                             "MBps": Stats(fi, "MB/s"), "bytes": nbytes})
    return rows


# --------------------------------------------------------------------------- random I/O


def _percentiles(samples: Sequence[float], qs=(50, 90, 99, 99.9)) -> dict[str, float]:
    """Percentiles with linear interpolation (numpy's default), keyed ``"p50"`` etc."""
    if not samples:
        return {f"p{q:g}": math.nan for q in qs}
    xs = sorted(samples)
    out = {}
    for q in qs:
        pos = (len(xs) - 1) * q / 100.0
        lo = int(math.floor(pos))
        hi = min(lo + 1, len(xs) - 1)
        out[f"p{q:g}"] = xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
    return out


def random_reads(path: str | os.PathLike, *, ops: int = 4000, block_size: int = 4 * KiB,
                 threads: int = 1, method: str = "auto", seed: int | None = None
                 ) -> RandomReadResult:
    """``ops`` random reads of ``block_size`` from ``path``, from the disk; IOPS and latency.

    One read in flight per thread (``os.preadv`` at a random aligned offset), so
    ``threads=1`` is queue depth 1 and ``threads=N`` is up to N (``preadv`` releases the
    GIL). Offsets are drawn without repetition while the file has enough blocks, like fio's
    random map. ``method`` as in :func:`read_file` (cold only): O_DIRECT, or the page cache
    dropped first with readahead switched off (``POSIX_FADV_RANDOM``). Latency percentiles are
    per read, in µs. ``seed=None`` draws fresh offsets (repetitions then do not re-read blocks
    a host-side cache may still hold).
    """
    if ops < 1 or threads < 1 or block_size < 1:
        raise ValueError("ops, threads and block_size must be >= 1")
    if ops < threads:
        raise ValueError(f"need at least one read per thread (ops={ops}, threads={threads})")
    size = os.path.getsize(path)
    nblocks = size // block_size
    if nblocks < 1:
        raise ValueError(f"{path} is smaller than one block of {block_size} bytes")
    method = _resolve_method(path, "cold", method)
    flags = os.O_RDONLY
    if method == "direct":
        if block_size % ALIGN:
            raise ValueError("O_DIRECT reads need block_size in multiples of 4 KiB")
        flags |= os.O_DIRECT
    else:
        drop_file_cache(path)
    rng = random.Random(seed)
    if ops <= nblocks:
        blocks = rng.sample(range(nblocks), ops)
    else:
        blocks = [rng.randrange(nblocks) for _ in range(ops)]
    offsets = [b * block_size for b in blocks]
    shares = [offsets[i::threads] for i in range(threads)]
    lats: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1) if threads > 1 else None
    fd = -1

    def worker(i: int) -> None:
        buf = None
        out = lats[i]
        clock = time.perf_counter_ns
        preadv = os.preadv
        try:
            buf = aligned_buffer(block_size)
            bufs = [buf]
            if barrier is not None:
                barrier.wait()
            for off in shares[i]:
                t = clock()
                preadv(fd, bufs, off)
                out.append(clock() - t)
        except BaseException as err:  # reported to the caller
            errors.append(err)
            if barrier is not None:
                barrier.abort()
        finally:
            if buf is not None:
                buf.close()

    try:
        fd = os.open(path, flags)  # inside the try: whatever fails next, the fd is closed
        if method == "buffered" and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        if threads == 1:
            t0 = time.perf_counter()
            worker(0)
            seconds = time.perf_counter() - t0
        else:
            pool = [threading.Thread(target=worker, args=(i,), daemon=True)
                    for i in range(threads)]
            for t in pool:
                t.start()
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            t0 = time.perf_counter()
            for t in pool:
                t.join()
            seconds = time.perf_counter() - t0
    finally:
        if fd >= 0:
            os.close(fd)
    if errors:
        raise RuntimeError(f"random read failed: {errors[0]!r}") from errors[0]
    all_us = [ns / 1000.0 for lst in lats for ns in lst]
    lat = _percentiles(all_us)
    lat["mean"] = statistics.fmean(all_us)
    return RandomReadResult(ops=len(all_us), block_size=block_size, threads=threads,
                            seconds=seconds, latencies_us=lat, method=method)


# --------------------------------------------------------------------------- fio wrappers


def fio_seq_read(path: str | os.PathLike, block_size: int = 1 * MiB, *, cache: str = "cold",
                 method: str = "auto", size: int | None = None, workdir=None
                 ) -> storage_fio.FioJobResult | None:
    """fio's sequential read of ``path`` with the same pattern as :func:`read_file`.

    Returns ``None`` without fio (:func:`fio_message` says how to install it). For a warm
    read, call it when the file is in the page cache (this function reads it once first).
    """
    if fio_path() is None:
        return None
    path = Path(path)
    fsize = os.path.getsize(path)
    size = fsize if size is None else min(size, fsize)
    method = _resolve_method(path, cache, method)
    if method == "direct":
        size -= size % ALIGN
    if cache == "warm":
        read_file(path, max(block_size, 1 * MiB), cache="warm", limit_bytes=size)
    job = storage_fio.seq_read_job(path, size, block_size, cache=cache, method=method)
    res = storage_fio.run_fio([job], workdir or path.parent)
    return res[0] if res else None


def fio_rand_read(path: str | os.PathLike, *, ops: int = 4000, block_size: int = 4 * KiB,
                  threads: int = 1, method: str = "auto", workdir=None
                  ) -> storage_fio.FioJobResult | None:
    """fio's random reads with the same pattern as :func:`random_reads`; ``None`` without fio."""
    if fio_path() is None:
        return None
    path = Path(path)
    method = _resolve_method(path, "cold", method)
    job = storage_fio.rand_read_job(path, os.path.getsize(path), ops, block_size=block_size,
                                    threads=threads, method=method)
    res = storage_fio.run_fio([job], workdir or path.parent)
    return res[0] if res else None


def _alternate(repeats: int, python_fn, fio_fn) -> tuple[list, list]:
    """Run python_fn and fio_fn ``repeats`` times, alternating which goes first."""
    py, fi = [], []
    for rep in range(repeats):
        order = (0, 1) if rep % 2 == 0 else (1, 0)
        pair: list = [None, None]
        for who in order:
            pair[who] = python_fn() if who == 0 else fio_fn()
        py.append(pair[0])
        fi.append(pair[1])
    return py, fi


def _comparison(metric: str, unit: str, py: list[float], fi: list[float | None],
                details: dict) -> Comparison:
    if any(v is None for v in fi):
        return Comparison(metric, Stats(py, unit), None, None, FIO_INSTALL_HINT, details)
    ratios = [p / f for p, f in zip(py, fi) if f]
    return Comparison(metric, Stats(py, unit), Stats(list(fi), unit), Stats(ratios, "x"),
                      fio_message(), details)


def compare_seq_read(path: str | os.PathLike, block_size: int = 1 * MiB, *,
                     cache: str = "cold", method: str = "auto", repeats: int = 3
                     ) -> Comparison:
    """Sequential read by Python (:func:`read_file`) against fio, same file, alternating.

    The default is the course target: cold, 1 MiB blocks, O_DIRECT where allowed.
    """
    method = _resolve_method(path, cache, method)
    py, fi = _alternate(
        repeats,
        lambda: read_file(path, block_size, cache=cache, method=method).MBps,
        lambda: (lambda r: r.MBps if r else None)(
            fio_seq_read(path, block_size, cache=cache, method=method)))
    metric = f"sequential read, {_size_label(block_size)} blocks, {cache}, {method}, QD1"
    return _comparison(metric, "MB/s", py, fi, {"block_size": block_size, "cache": cache,
                                               "method": method})


def compare_rand_read(path: str | os.PathLike, *, ops: int = 4000, block_size: int = 4 * KiB,
                      threads: int = 1, method: str = "auto", repeats: int = 3) -> Comparison:
    """Random reads by Python (:func:`random_reads`) against fio, in IOPS, alternating.

    ``details["python_latency_us"]`` and ``details["fio_latency_us"]`` hold the latency
    percentiles of the last repetition.
    """
    method = _resolve_method(path, "cold", method)
    last: dict = {}

    def py_run() -> float:
        r = random_reads(path, ops=ops, block_size=block_size, threads=threads, method=method)
        last["python_latency_us"] = r.latencies_us
        return r.iops

    def fio_run() -> float | None:
        r = fio_rand_read(path, ops=ops, block_size=block_size, threads=threads, method=method)
        if r is None:
            return None
        last["fio_latency_us"] = dict(r.clat_percentiles_us, mean=r.lat_mean_us)
        return r.iops

    py, fi = _alternate(repeats, py_run, fio_run)
    metric = (f"random {_size_label(block_size)} reads, {threads} thread(s) = QD{threads}, "
              f"{method}")
    return _comparison(metric, "IOPS", py, fi,
                       dict(last, ops=ops, threads=threads, method=method))


# --------------------------------------------------------------------------- small files


def make_small_files(folder: str | os.PathLike, n_files: int, file_bytes: int = 4 * KiB
                     ) -> tuple[list[Path], Throughput]:
    """Write ``n_files`` files of ``file_bytes`` into ``folder``, then flush them to disk.

    Returns the paths and the time taken (writes plus one flush of the filesystem with
    ``syncfs``, the honest cost of making them durable). 100 files per sub-folder.
    """
    if n_files < 1 or file_bytes < 1:
        raise ValueError("n_files and file_bytes must be >= 1")
    folder = Path(folder)
    data = _pattern_block(file_bytes, seed=1)
    view = memoryview(data)
    paths = [folder / f"{i // 100:04d}" / f"{i:06d}.bin" for i in range(n_files)]
    t0 = time.perf_counter()
    try:
        for i, p in enumerate(paths):
            if i % 100 == 0:
                p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, view)
            finally:
                os.close(fd)
        _syncfs(folder)
        seconds = time.perf_counter() - t0
    finally:
        view.release()
        data.close()
    return paths, Throughput(n_files * file_bytes, seconds, n_files, label="write small files")


def _syncfs(folder: Path) -> None:
    """Flush the filesystem holding ``folder`` (Linux ``syncfs``; ``os.sync`` elsewhere)."""
    if sys.platform == "linux":
        fd = os.open(folder, os.O_RDONLY)
        try:
            if _get_libc().syncfs(fd) == 0:
                return
        except AttributeError:
            pass
        finally:
            os.close(fd)
    os.sync()


def _drop_many(paths: Sequence[Path]) -> None:
    for p in paths:
        drop_file_cache(p)


def read_small_files(paths: Sequence[str | os.PathLike], *, cache: str = "cold",
                     threads: int = 1) -> Throughput:
    """Open, read and close every file in ``paths``; time it (``ops`` = files read).

    ``cache="cold"`` drops each file's data from the page cache first (the directory entries
    and inodes stay cached, so this is the kind case). ``threads > 1`` splits the list into
    contiguous shares, one per thread.
    """
    if cache not in ("cold", "warm"):
        raise ValueError(f"cache must be 'cold' or 'warm', got {cache!r}")
    if not paths:
        raise ValueError("no files to read")
    if threads < 1:
        raise ValueError("threads must be >= 1")
    paths = [os.fspath(p) for p in paths]
    biggest = max(os.path.getsize(p) for p in paths[:16])
    if cache == "cold":
        _drop_many(paths)
    else:
        _read_files(paths, biggest)
    if threads == 1:
        t0 = time.perf_counter()
        nbytes = _read_files(paths, biggest)
        seconds = time.perf_counter() - t0
    else:
        k = math.ceil(len(paths) / threads)
        shares = [paths[i:i + k] for i in range(0, len(paths), k)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(shares)) as pool:
            t0 = time.perf_counter()
            nbytes = sum(pool.map(lambda s: _read_files(s, biggest), shares))
            seconds = time.perf_counter() - t0
    return Throughput(nbytes, seconds, len(paths),
                      label=f"read {len(paths)} small files {cache}, {threads} thread(s)")


def _read_files(paths: Sequence[str], bufsize: int) -> int:
    buf = aligned_buffer(max(bufsize, ALIGN))
    bufs = [buf]
    total = 0
    try:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                while True:
                    n = os.readv(fd, bufs)
                    total += n
                    if n < len(buf):
                        break
            finally:
                os.close(fd)
    finally:
        buf.close()
    return total


def read_big_file(path: str | os.PathLike, block_size: int = 1 * MiB, *, cache: str = "cold",
                  threads: int = 1) -> Throughput:
    """Read one file through the page cache (cold: dropped first), with ``threads`` readers.

    The counterpart of :func:`read_small_files`: buffered, with the kernel's readahead.
    ``threads > 1`` gives each thread a contiguous range.
    """
    if threads == 1:
        return read_file(path, block_size, cache=cache, method="buffered")
    size = os.path.getsize(path)
    if cache == "cold":
        drop_file_cache(path)
    else:
        read_file(path, block_size, cache="warm", method="buffered")
    k = -(-size // threads)
    k += (-k) % block_size
    fd = os.open(path, os.O_RDONLY)

    def part(start: int) -> int:
        buf = aligned_buffer(block_size)
        total = 0
        try:
            end = min(size, start + k)
            off = start
            while off < end:
                n = os.preadv(fd, [buf], off)
                if n <= 0:
                    break
                total += n
                off += n
        finally:
            buf.close()
        return total

    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(threads) as pool:
            t0 = time.perf_counter()
            nbytes = sum(pool.map(part, range(0, size, k)))
            seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
    return Throughput(nbytes, seconds, math.ceil(nbytes / block_size),
                      label=f"read big file {cache}, {threads} thread(s)")


def small_vs_big(folder: str | os.PathLike, *, n_files: int = 4000, file_bytes: int = 4 * KiB,
                 threads: Sequence[int] = (1,), caches: Sequence[str] = ("cold", "warm"),
                 repeats: int = 3) -> dict:
    """Many small files against one big file of the same total size, written and read.

    Writes ``n_files`` files of ``file_bytes`` and one file of ``n_files x file_bytes`` into
    ``folder`` (a scratch folder: the caller checks space), then reads both ``repeats`` times
    per cache state and thread count, alternating. Returns ``{"write": {"small": Throughput,
    "big": Throughput}, "rows": [{"layout", "cache", "threads", "MBps": Stats,
    "files_per_s": Stats}], "penalty": {(cache, threads): big/small median ratio}}``.
    """
    folder = Path(folder)
    total = n_files * file_bytes
    small_dir = folder / "small"
    paths, w_small = make_small_files(small_dir, n_files, file_bytes)
    big = folder / "big.bin"
    w_big = write_file(big, total, min(1 * MiB, total))
    rows = []
    penalty = {}
    for cache in caches:
        for t in threads:
            s_mb, s_fps, b_mb = [], [], []
            for rep in range(repeats):
                first_small = rep % 2 == 0
                for which in ((0, 1) if first_small else (1, 0)):
                    if which == 0:
                        r = read_small_files(paths, cache=cache, threads=t)
                        s_mb.append(r.MBps)
                        s_fps.append(r.ops_per_s)
                    else:
                        b_mb.append(read_big_file(big, min(1 * MiB, total), cache=cache,
                                                  threads=t).MBps)
            rows.append({"layout": "small files", "cache": cache, "threads": t,
                         "MBps": Stats(s_mb, "MB/s"), "files_per_s": Stats(s_fps, "files/s")})
            rows.append({"layout": "one big file", "cache": cache, "threads": t,
                         "MBps": Stats(b_mb, "MB/s"), "files_per_s": None})
            penalty[(cache, t)] = statistics.median(b_mb) / statistics.median(s_mb)
    return {"write": {"small": w_small, "big": w_big}, "rows": rows, "penalty": penalty,
            "n_files": n_files, "file_bytes": file_bytes}


# --------------------------------------------------------------------------- context, figures


def machine_context(path: str | os.PathLike | None = None) -> dict:
    """Facts to print beside any storage figure: CPUs, load, filesystem, device, fio version."""
    path = Path(path) if path is not None else default_scratch_root()
    where = _existing_parent(path)
    ctx = {"python": platform.python_version(), "kernel": platform.release(),
           "cpus": os.cpu_count(), "path": str(where)}
    try:
        ctx["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        ctx["free_GiB"] = round(shutil.disk_usage(where).free / GiB, 1)
    except OSError:
        pass
    fs = _filesystem_of(where)
    if fs:
        ctx["filesystem"], ctx["device"] = fs
        dev = Path(fs[1]).name
        ra = Path(f"/sys/class/block/{dev}/queue/read_ahead_kb")
        if not ra.exists():
            ra = Path(f"/sys/class/block/{dev}/../queue/read_ahead_kb")
        try:
            ctx["read_ahead_KiB"] = int(ra.read_text())
        except (OSError, ValueError):
            pass
    ctx["fio"] = fio_version()
    return ctx


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _filesystem_of(path: Path) -> tuple[str, str] | None:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best = None
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        dev, mnt, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        if target == mnt or target.startswith(mnt.rstrip("/") + "/"):
            if best is None or len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    return (best[1], best[2]) if best else None


def storage_figures(path: str | os.PathLike | None = None) -> dict:
    """The cited storage figures of the course (AWS storage options), from one data file.

    Reads ``labkit/data/storage.json``: ``{"_meta": ..., "options": [...]}``; every option has
    text fields for the chapter's table (``throughput``, ``scaling``, ``latency``,
    ``cost_class``, ``semantics``), numeric fields for estimates, and ``sources`` (URL,
    title, retrieval date, the fields each supports). Raises RuntimeError if the file is
    missing or malformed.
    """
    path = Path(path) if path is not None else Path(__file__).parent / "data" / "storage.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RuntimeError(f"{path} is missing; reinstall the course (`make setup`)") from err
    except json.JSONDecodeError as err:
        raise RuntimeError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data.get("options"), list):
        raise RuntimeError(f"{path} has no 'options' list")
    return data


def storage_option(key: str) -> dict:
    """One storage option's cited figures by key (``"s3"``, ``"efs"``, ``"fsx_lustre"``...).

    Raises ValueError naming the known keys.
    """
    options = storage_figures()["options"]
    for opt in options:
        if opt["key"] == key:
            return dict(opt)
    raise ValueError(f"unknown storage option {key!r}; known: "
                     f"{', '.join(o['key'] for o in options)}")


#: Columns of :func:`storage_table` (for ``labkit.plots.Table``).
TABLE_COLUMNS = ("option", "type", "throughput (cited)", "how it scales", "latency (cited)",
                 "cost class", "access semantics")


def storage_table() -> list[list[str]]:
    """Rows for the chapter's cited comparison table, one per option (see TABLE_COLUMNS)."""
    return [[o["name"], o["type"], o["throughput"], o["scaling"], o["latency"],
             o["cost_class"], o["semantics"]] for o in storage_figures()["options"]]


def storage_sources() -> list[list[str]]:
    """Rows ``[option, title, url, retrieved]`` for every source of the cited table."""
    return [[o["name"], s["title"], s["url"], s["retrieved"]]
            for o in storage_figures()["options"] for s in o["sources"]]


def fleet_load_seconds(total_bytes: float, pods: int, option: str, *,
                       client_Gbps: float = 100.0, connections: int = 64,
                       range_MB: float = 16.0, fsx_capacity_TiB: float = 48.0,
                       fsx_cached: bool = False,
                       ebs_MiBps: float | None = None,
                       ebs_instance_Gbps: float | None = None) -> dict:
    """Derived: seconds until each of ``pods`` Pods has read ``total_bytes`` from ``option``.

    All Pods start together and read the same files (a model checkpoint). The rate of one Pod
    is the smallest of its own limits (the client's network, ``client_Gbps``; a per-client or
    per-volume cap; for S3-style stores ``connections`` x the cited per-connection rate) and
    its share of the option's aggregate limit (EFS per-file-system throughput; FSx for Lustre
    ``fsx_capacity_TiB`` x the cited MB/s per TiB; S3's GET rate per prefix x ``range_MB``).

    FSx for Lustre is PERSISTENT-1000. By default every read is served from the file servers'
    disks (disk baseline, 1,000 MB/s per TiB: the conservative case). With ``fsx_cached=True``
    the Pods read the same checkpoint at once, so the file servers read it from disk once and
    serve the other copies from their RAM cache: the shared limit becomes the network baseline
    (2,600 MB/s per TiB), and the disks must still deliver one copy at 1,000 MB/s per TiB
    (AWS: reads from the in-memory or SSD cache are limited by network throughput). ValueError
    if the checkpoint is larger than the cited RAM cache (GiB per TiB x capacity).

    EBS volumes are one per Pod (no sharing), already filled and initialised. Their
    throughput is a choice: ``ebs_MiBps`` (gp3: 125 MiB/s by default in AWS, here
    ``provisioned_MiBps`` = 1,000 unless given, at most the cited maximum; io2: its cited
    maximum), and the instance's EBS bandwidth ``ebs_instance_Gbps`` caps it when given.
    Returns ``{"option", "name", "seconds", "per_pod_MBps", "bound", "formula"}``. Raises
    ValueError for the instance store (data must be copied there first) and for bad
    arguments.
    """
    if total_bytes <= 0 or pods < 1 or client_Gbps <= 0 or connections < 1 or range_MB <= 0:
        raise ValueError("need total_bytes > 0, pods >= 1, client_Gbps > 0, connections >= 1 "
                         "and range_MB > 0")
    if ebs_instance_Gbps is not None and ebs_instance_Gbps <= 0:
        raise ValueError("ebs_instance_Gbps must be > 0 (or None)")
    opt = storage_option(option)
    if option == "instance_store":
        raise ValueError("the instance store is where a node keeps its own copy; fill it from "
                         "S3 or FSx first, then it reads at local NVMe speed")
    if fsx_cached and option != "fsx_lustre":
        raise ValueError(f"fsx_cached applies to fsx_lustre only, not {option!r}")
    if ebs_MiBps is not None and option not in ("ebs_gp3", "ebs_io2"):
        raise ValueError(f"ebs_MiBps applies to EBS options only, not {option!r}")
    client = client_Gbps * 1e9 / 8 / 1e6  # MB/s
    limits: dict[str, float] = {"client network": client}
    aggregate = None
    if option in ("s3", "mountpoint_s3", "s3_express"):
        per_conn = storage_option("s3")["per_connection_MBps"]
        limits["parallel GETs"] = connections * per_conn
        limits["per-instance S3 limit"] = opt["per_client_MBps"]
        rate_key = "get_per_s_default" if option == "s3_express" else "get_per_s_per_prefix"
        src = opt if option == "s3_express" else storage_option("s3")
        aggregate = ("request rate", src[rate_key] * range_MB)
    elif option == "efs":
        limits["per-client limit"] = opt["per_client_MBps"]
        aggregate = ("file system throughput", opt["aggregate_MBps"])
    elif option == "fsx_lustre":
        disk = fsx_capacity_TiB * opt["aggregate_MBps_per_TiB"]
        if fsx_cached:
            tier = opt["per_unit_MBps_per_TiB"].index(opt["aggregate_MBps_per_TiB"])
            cache_bytes = fsx_capacity_TiB * opt["cache_GiB_RAM_per_TiB"][tier] * 2**30
            if total_bytes > cache_bytes:
                raise ValueError(f"fsx_cached: {total_bytes / 1e9:.0f} GB does not fit the file "
                                 f"servers' RAM cache ({cache_bytes / 1e9:.0f} GB at "
                                 f"{fsx_capacity_TiB:g} TiB)")
            limits["file system disks, one copy for all Pods"] = disk
            aggregate = ("file system network (cached reads)",
                         fsx_capacity_TiB * opt["network_baseline_MBps_per_TiB"][tier])
        else:
            aggregate = ("file system disk throughput", disk)
    elif option in ("ebs_gp3", "ebs_io2"):
        low = opt.get("baseline_MiBps", 0)
        MiBps = ebs_MiBps if ebs_MiBps is not None else opt.get("provisioned_MiBps",
                                                                 opt["max_MiBps"])
        if not low <= MiBps <= opt["max_MiBps"]:
            raise ValueError(f"{option}: ebs_MiBps must be within {low}-{opt['max_MiBps']} "
                             f"MiB/s (cited), got {MiBps}")
        limits[f"volume at {MiBps:,.0f} MiB/s"] = MiBps * MiB / 1e6
        if ebs_instance_Gbps is not None:
            limits["instance EBS bandwidth"] = ebs_instance_Gbps * 1e9 / 8 / 1e6
    else:  # a new option in the data file without a model here
        raise ValueError(f"no load model for {option!r}")
    bound, rate = min(limits.items(), key=lambda kv: kv[1])
    if aggregate is not None and aggregate[1] / pods < rate:
        bound, rate = f"shared {aggregate[0]} / {pods} Pods", aggregate[1] / pods
    seconds = total_bytes / 1e6 / rate
    formula = f"{total_bytes / 1e9:.0f} GB / {rate:,.0f} MB/s ({bound})"
    return {"option": option, "name": opt["name"], "seconds": seconds, "per_pod_MBps": rate,
            "bound": bound, "formula": formula}


# --------------------------------------------------------------------------- command line

#: Keys of ``python -m labkit bench storage --json``, in this order.
BENCH_KEYS = ("path", "file_bytes", "seq_read_MBps", "fio_seq_read_MBps", "seq_read_ratio",
              "rand4k_iops", "fio_rand4k_iops", "rand4k_ratio", "small_files_MBps",
              "big_file_MBps")


def _round(x: float | None, nd: int = 1) -> float | None:
    if x is None or x != x:
        return None
    return round(x, nd)


def run_benchmark(*, file_bytes: int = DEFAULT_FILE_BYTES, root: str | os.PathLike | None = None,
                  repeats: int = 3, rand_ops: int = 4000, n_files: int = 4000,
                  small_file_bytes: int = 4 * KiB, method: str = "auto",
                  progress=None) -> tuple[dict, dict]:
    """The storage benchmark; returns (the JSON summary with :data:`BENCH_KEYS`, the details).

    On one scratch file of ``file_bytes``: cold sequential 1 MiB reads and random 4 KiB reads
    at queue depth 1, each against fio on the same file, alternating, ``repeats`` times
    (medians); then ``n_files`` small files against one file of the same total (cold).
    Everything is removed afterwards.
    """
    if file_bytes < 4 * MiB:
        raise ValueError(f"file_bytes must be at least 4 MiB, got {file_bytes}")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    say = progress or (lambda msg: None)
    small_total = n_files * small_file_bytes
    need = file_bytes + 2 * small_total + 64 * KiB * n_files // 16
    root = Path(root) if root is not None else default_scratch_root()
    with scratch_dir(need, root) as d:
        f = d / "bench.bin"
        say(f"writing {file_bytes / MiB:.0f} MiB test file in {d} ...")
        w = write_file(f, file_bytes, 1 * MiB)
        say(f"sequential cold reads, 1 MiB, {repeats}x (Python and fio alternating) ...")
        seq = compare_seq_read(f, 1 * MiB, cache="cold", method=method, repeats=repeats)
        say(f"random 4 KiB reads at QD1, {rand_ops} per run, {repeats}x ...")
        rnd = compare_rand_read(f, ops=rand_ops, method=method, repeats=repeats)
        say(f"{n_files} small files of {small_file_bytes} B against one file ...")
        sb = small_vs_big(d / "files", n_files=n_files, file_bytes=small_file_bytes,
                          caches=("cold",), repeats=repeats)
        ctx = machine_context(d)
        ctx["path"] = str(root.absolute())
    small = next(r for r in sb["rows"] if r["layout"] == "small files")
    big = next(r for r in sb["rows"] if r["layout"] == "one big file")
    summary = {
        "path": str(Path(root).absolute()),
        "file_bytes": file_bytes,
        "seq_read_MBps": _round(seq.python.median),
        "fio_seq_read_MBps": _round(seq.fio.median) if seq.fio else None,
        "seq_read_ratio": _round(seq.ratio.median, 3) if seq.ratio else None,
        "rand4k_iops": int(round(rnd.python.median)),
        "fio_rand4k_iops": int(round(rnd.fio.median)) if rnd.fio else None,
        "rand4k_ratio": _round(rnd.ratio.median, 3) if rnd.ratio else None,
        "small_files_MBps": _round(small["MBps"].median),
        "big_file_MBps": _round(big["MBps"].median),
    }
    details = {"write": w, "seq": seq, "rand": rnd, "small_vs_big": sb, "context": ctx}
    return summary, details


def _parse_size(text: str) -> int:
    """'256M', '1G', '512MiB', '4096' -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": KiB, "M": MiB, "G": GiB}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256M or 1G)") from None


def bench_storage_cli(argv: list[str]) -> int:
    """``python -m labkit bench storage [--json] [--size 256M] [--path DIR] ...``.

    Prints one JSON object with :data:`BENCH_KEYS` when given ``--json`` (MB/s = 10**6 B/s;
    fio fields are null without fio, and a note on stderr says how to install it); otherwise
    a readable report. Returns 0 on success, 1 when it cannot run (for example too little
    free space), 2 on bad options.
    """
    p = argparse.ArgumentParser(
        prog="python -m labkit bench storage",
        description="Disk throughput (cold 1 MiB sequential reads, random 4 KiB reads at QD1, "
                    "small files vs one file), each against fio on the same file.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--size", type=_parse_size, default=DEFAULT_FILE_BYTES,
                   help="test file size, e.g. 256M (default), at most 1G")
    p.add_argument("--path", default=None,
                   help="scratch folder (default: $LABKIT_SCRATCH or <repo>/.scratch)")
    p.add_argument("--repeats", type=int, default=5, help="repetitions, medians reported")
    p.add_argument("--rand-ops", type=int, default=4000, help="random reads per repetition")
    p.add_argument("--small-files", type=int, default=4000, help="number of small files")
    p.add_argument("--small-file-size", type=_parse_size, default=4 * KiB,
                   help="size of each small file (default 4K)")
    p.add_argument("--method", choices=("auto", "direct", "buffered"), default="auto",
                   help="cold reads with O_DIRECT, or buffered after dropping the page cache")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.size > MAX_DEFAULT_BYTES:
        print(f"labkit bench storage: --size is at most {MAX_DEFAULT_BYTES // GiB} GiB (the "
              f"course's scratch budget; the file is read with O_DIRECT or after dropping its "
              f"pages, so it need not exceed RAM)", file=sys.stderr)
        return 2
    progress = None if args.json else (lambda m: print(m, flush=True))
    try:
        summary, details = run_benchmark(
            file_bytes=args.size, root=args.path, repeats=args.repeats, rand_ops=args.rand_ops,
            n_files=args.small_files, small_file_bytes=args.small_file_size,
            method=args.method, progress=progress)
    except (RuntimeError, ValueError, OSError) as err:
        print(f"labkit bench storage: {err}", file=sys.stderr)
        return 1
    if details["seq"].fio is None:
        print(f"labkit bench storage: {FIO_INSTALL_HINT}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: summary[k] for k in BENCH_KEYS}))
        return 0
    ctx = details["context"]
    print("\nmachine:", ", ".join(f"{k}={v}" for k, v in ctx.items()))
    print(f"\n{details['write']}")
    print(details["seq"])
    print(details["rand"])
    lat = details["rand"].details
    if "python_latency_us" in lat:
        print("  Python latency (µs):", _lat_line(lat["python_latency_us"]))
    if "fio_latency_us" in lat:
        print("  fio latency (µs):   ", _lat_line(lat["fio_latency_us"]))
    sb = details["small_vs_big"]
    print(f"\n{sb['n_files']} small files of {sb['file_bytes']} B vs one file, cold:")
    for r in sb["rows"]:
        extra = f", {r['files_per_s']}" if r["files_per_s"] else ""
        print(f"  {r['layout']:>13}: {r['MBps']}{extra}")
    for (cache, t), pen in sb["penalty"].items():
        print(f"  one big file is {pen:.0f}x faster ({cache}, {t} thread(s))")
    w = sb["write"]
    print(f"  write + flush: small files {w['small'].MBps:.1f} MB/s, one file "
          f"{w['big'].MBps:.0f} MB/s")
    print("\nsummary:", json.dumps({k: summary[k] for k in BENCH_KEYS}))
    return 0


def _lat_line(lat: dict) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in lat.items())


# --------------------------------------------------------------------------- lazy torch parts

_TORCH_PARTS = {"bench_dataloader", "bench_checkpoint", "write_samples", "SampleSet",
                "SampleDataset", "save_checkpoint", "load_checkpoint", "state_dict_bytes"}


def __getattr__(name: str):
    if name in _TORCH_PARTS:
        from labkit import storage_torch

        return getattr(storage_torch, name)
    raise AttributeError(f"module 'labkit.storage' has no attribute {name!r}")


def _asdict(obj) -> dict:  # small helper for notebooks that want plain dicts
    return asdict(obj)
