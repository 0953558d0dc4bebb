"""The page cache and the buffers the storage measurements read into.

* **cold**: read from the disk. A file's pages are dropped from the page cache with
  ``posix_fadvise(POSIX_FADV_DONTNEED)`` (:func:`drop_file_cache`), or the read uses
  ``O_DIRECT`` and bypasses the cache (:func:`supports_direct_io` says whether it may).
* **warm**: read from the page cache (RAM), the second time a file is read.

Reads land in page-aligned buffers (:func:`aligned_buffer`): on this course's machine a
``bytearray`` destination makes page-cache copies about 5x slower. :func:`fsync_path` and
:func:`syncfs` make written data durable. Imports nothing of labkit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
from pathlib import Path


#: O_DIRECT needs offsets, sizes and buffers aligned to the logical block size; 4 KiB is safe.
ALIGN = 4096


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


def fsync_path(path: str | os.PathLike) -> None:
    """Write ``path``'s dirty pages to the disk (``fsync``), so its data is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(folder: Path) -> None:
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
