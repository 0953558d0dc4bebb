"""Scratch space for notebooks and labs: checked before writing, always removed.

Every file a notebook writes goes into a folder made by :func:`scratch_dir`. The folder is
created under ``LABKIT_SCRATCH`` (default: ``.scratch/`` in the repository, on the same disk as
the course), only after checking that the disk has room, and it is deleted when the ``with``
block ends: normally, on an exception, or on KeyboardInterrupt (the stop button in Jupyter).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

#: Largest scratch request the course makes by default (notebooks stay under 2 GiB of disk).
DEFAULT_LIMIT_BYTES = 2 * 2**30


def scratch_root() -> Path:
    """Where scratch folders are made: ``$LABKIT_SCRATCH`` or ``<repository>/.scratch``."""
    env = os.environ.get("LABKIT_SCRATCH")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / ".scratch"


def check_free_space(need_bytes: int, where: str | os.PathLike | None = None, factor: float = 2.0) -> int:
    """Raise RuntimeError unless ``where`` has ``factor`` x ``need_bytes`` free; return the free bytes.

    The factor leaves room for the page cache, other users and the file system's own overhead.
    """
    if need_bytes < 0:
        raise ValueError(f"need_bytes must be >= 0, got {need_bytes}")
    path = Path(where) if where else scratch_root()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < factor * need_bytes:
        raise RuntimeError(
            f"not enough free disk at {path}: {free / 2**30:.2f} GiB free, this needs "
            f"{factor * need_bytes / 2**30:.2f} GiB ({factor:g} x {need_bytes / 2**30:.2f} GiB). "
            "Free some space, use a smaller size, or set LABKIT_SCRATCH to a folder on a larger disk.")
    return free


@contextlib.contextmanager
def scratch_dir(need_bytes: int = 0, prefix: str = "labkit-",
                limit_bytes: int = DEFAULT_LIMIT_BYTES,
                root: str | os.PathLike | None = None) -> Iterator[Path]:
    """A fresh folder for ``need_bytes`` of files, removed with everything in it afterwards.

    Args:
        need_bytes: how much the caller will write; the disk must have twice that free.
        prefix: start of the folder's name, to tell whose files they are.
        limit_bytes: refuse requests above this (default 2 GiB, the course's budget).
        root: where to make the folder (default :func:`scratch_root`). Folders this call
            had to create for it are removed again afterwards if nothing else is in them.

    Example:
        >>> with scratch_dir(1_000_000) as folder:
        ...     _ = (folder / "hello.bin").write_bytes(b"x" * 10)
        >>> folder.exists()
        False
    """
    if need_bytes > limit_bytes:
        raise ValueError(f"scratch request of {need_bytes / 2**30:.2f} GiB is above the limit of "
                         f"{limit_bytes / 2**30:.2f} GiB; use a smaller size or raise limit_bytes")
    base = Path(root) if root else scratch_root()
    check_free_space(need_bytes, base)
    created = []
    probe = base.absolute()
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    except OSError as err:
        raise RuntimeError(f"cannot create a scratch folder in {base}: {err}. Pick a writable "
                           "folder with LABKIT_SCRATCH (or the tool's --path option).") from err
    try:
        yield folder
    finally:  # runs on success, on exceptions and on KeyboardInterrupt
        shutil.rmtree(folder, ignore_errors=True)
        for parent in created:  # innermost first; stops at one still in use by someone else
            try:
                parent.rmdir()
            except OSError:
                break
