"""Many small files against one big file of the same total size, written and read.

What a dataset of one file per sample costs: an open, a read and a close per file, against
large sequential reads of one file. Imports :mod:`~labkit.storage.measures`,
:mod:`~labkit.storage.pagecache` and :mod:`~labkit.storage.disk`.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from labkit.storage.disk import pattern_block, read_file, write_file
from labkit.machine.timing import Samples
from labkit.storage.measures import KiB, MiB, Throughput
from labkit.storage.pagecache import ALIGN, aligned_buffer, drop_file_cache, syncfs


def make_small_files(folder: str | os.PathLike, n_files: int, file_bytes: int = 4 * KiB
                     ) -> tuple[list[Path], Throughput]:
    """Write ``n_files`` files of ``file_bytes`` into ``folder``, then flush them to disk.

    Returns the paths and the time taken (writes plus one flush of the filesystem with
    ``syncfs``, the honest cost of making them durable). 100 files per sub-folder.
    """
    if n_files < 1 or file_bytes < 1:
        raise ValueError("n_files and file_bytes must be >= 1")
    folder = Path(folder)
    data = pattern_block(file_bytes, seed=1)
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
        syncfs(folder)
        seconds = time.perf_counter() - t0
    finally:
        view.release()
        data.close()
    return paths, Throughput(n_files * file_bytes, seconds, n_files, label="write small files")


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
    "big": Throughput}, "rows": [{"layout", "cache", "threads", "MBps": Samples,
    "files_per_s": Samples}], "penalty": {(cache, threads): big/small median ratio}}``.
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
                         "MBps": Samples(s_mb, "MB/s"), "files_per_s": Samples(s_fps, "files/s")})
            rows.append({"layout": "one big file", "cache": cache, "threads": t,
                         "MBps": Samples(b_mb, "MB/s"), "files_per_s": None})
            penalty[(cache, t)] = statistics.median(b_mb) / statistics.median(s_mb)
    return {"write": {"small": w_small, "big": w_big}, "rows": rows, "penalty": penalty,
            "n_files": n_files, "file_bytes": file_bytes}
