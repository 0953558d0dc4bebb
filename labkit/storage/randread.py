"""Random reads from one file: IOPS and latency percentiles, at queue depth 1 or more.

:func:`random_reads` reads ``ops`` blocks at random aligned offsets, one read in flight per
thread, from the disk (``O_DIRECT``, or the page cache dropped first with readahead off).
Imports :mod:`~labkit.storage.measures`, :mod:`~labkit.storage.pagecache` and
:mod:`~labkit.storage.disk`.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from labkit.machine.timing import percentile
from labkit.storage.disk import resolve_method
from labkit.storage.measures import KiB, positive_seconds
from labkit.storage.pagecache import ALIGN, aligned_buffer, drop_file_cache


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
        return self.ops / positive_seconds(self.seconds, "random reads")

    @property
    def MBps(self) -> float:
        return self.iops * self.block_size / 1e6

    def __str__(self) -> str:
        lat = ", ".join(f"{k} {v:.0f} µs" for k, v in self.latencies_us.items())
        return (f"random {self.block_size // KiB} KiB reads, {self.threads} thread(s), "
                f"{self.method}: {self.iops:,.0f} IOPS ({lat})")


def _percentiles(samples: Sequence[float], qs=(50, 90, 99, 99.9)) -> dict[str, float]:
    """Percentiles (:func:`labkit.machine.timing.percentile`), keyed ``"p50"`` etc."""
    return {f"p{q:g}": percentile(samples, q) for q in qs}


def random_reads(path: str | os.PathLike, *, ops: int = 4000, block_size: int = 4 * KiB,
                 threads: int = 1, method: str = "auto", seed: int | None = None
                 ) -> RandomReadResult:
    """``ops`` random reads of ``block_size`` from ``path``, from the disk; IOPS and latency.

    One read in flight per thread (``os.preadv`` at a random aligned offset), so
    ``threads=1`` is queue depth 1 and ``threads=N`` is up to N (``preadv`` releases the
    GIL). Offsets are drawn without repetition while the file has enough blocks, like fio's
    random map. ``method`` as in :func:`~labkit.storage.disk.read_file` (cold only): O_DIRECT,
    or the page cache dropped first with readahead switched off (``POSIX_FADV_RANDOM``).
    Latency percentiles are per read, in µs. ``seed=None`` draws fresh offsets (repetitions
    then do not re-read blocks a host-side cache may still hold).
    """
    if ops < 1 or threads < 1 or block_size < 1:
        raise ValueError("ops, threads and block_size must be >= 1")
    if ops < threads:
        raise ValueError(f"need at least one read per thread (ops={ops}, threads={threads})")
    size = os.path.getsize(path)
    nblocks = size // block_size
    if nblocks < 1:
        raise ValueError(f"{path} is smaller than one block of {block_size} bytes")
    method = resolve_method(path, "cold", method)
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
