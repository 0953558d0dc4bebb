"""Sequential reads and writes of one file, timed: the disk's bandwidth.

:func:`write_file` writes incompressible data (with ``fsync``), :func:`read_file` reads a file
in ``block_size`` reads, cold (``O_DIRECT`` or after dropping the page cache) or warm (from
the page cache). The caller writes inside a scratch folder
(:func:`labkit.machine.scratch.scratch_dir`), which checks free space first and removes every file
afterwards. Imports :mod:`~labkit.storage.measures` and :mod:`~labkit.storage.pagecache`.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import time
from pathlib import Path

from labkit.storage.measures import GiB, KiB, MiB, Throughput
from labkit.storage.pagecache import ALIGN, aligned_buffer, drop_file_cache, supports_direct_io


#: Block sizes of the sweep, 4 KiB, 8 KiB, ... 16 MiB (13 sizes).
BLOCK_SIZES: tuple[int, ...] = tuple(4 * KiB << i for i in range(13))
#: Largest size any default of this module writes (the course's scratch budget is 2 GiB).
MAX_DEFAULT_BYTES = 1 * GiB
#: Default size of the benchmark file (quick on a laptop disk, big enough to leave the caches).
DEFAULT_FILE_BYTES = 256 * MiB


def pattern_block(nbytes: int, seed: int = 0) -> mmap.mmap:
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
    (:func:`~labkit.machine.scratch.scratch_dir` does).
    """
    if size <= 0 or block_size <= 0:
        raise ValueError(f"size and block_size must be > 0, got {size} and {block_size}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if direct:
        if size % ALIGN or block_size % ALIGN:
            raise ValueError("O_DIRECT writes need size and block_size in multiples of 4 KiB")
        flags |= getattr(os, "O_DIRECT", 0)
    buf = pattern_block(block_size)
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
    return Throughput(done, seconds, ops, label=f"write {size_label(block_size)}"
                      f"{' O_DIRECT' if direct else ''}{' + fsync' if fsync else ''}")


def make_file(path: str | os.PathLike, size: int) -> Path:
    """Create a test file of ``size`` bytes (incompressible, fsync'd) and return its path."""
    write_file(path, size, min(4 * MiB, max(ALIGN, size)))
    return Path(path)


def size_label(n: int) -> str:
    """``n`` bytes as a short label (``"4 KiB"``, ``"1 MiB"``; ``"1000 B"`` when not a power of
    two)."""
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def resolve_method(path, cache: str, method: str) -> str:
    """The read method for ``cache`` (``"cold"``/``"warm"``) and ``method``
    (``"auto"``/``"direct"``/``"buffered"``): a warm read is buffered; ``"auto"`` is
    ``"direct"`` where the filesystem allows ``O_DIRECT``. ValueError for bad names or a warm
    direct read; RuntimeError for ``"direct"`` where ``O_DIRECT`` is not allowed."""
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
    ``method="buffered"`` drops the file's pages first
    (:func:`~labkit.storage.pagecache.drop_file_cache`) and goes through the page cache with
    the kernel's readahead; ``"auto"`` takes O_DIRECT where the filesystem allows.
    ``cache="warm"`` first makes sure the file is in the page cache, then times a read from
    RAM. ``limit_bytes`` stops after that many bytes (default: whole file).
    """
    size = os.path.getsize(path)
    limit = size if limit_bytes is None else min(size, limit_bytes)
    if block_size <= 0 or limit <= 0:
        raise ValueError(f"need block_size > 0 and a non-empty read; got block_size="
                         f"{block_size}, {limit} bytes to read")
    method = resolve_method(path, cache, method)
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
    label = f"read {size_label(block_size)} {cache}" + (" O_DIRECT" if method == "direct" else "")
    return Throughput(done, seconds, ops, label=label)
