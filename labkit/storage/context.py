"""Facts to print beside any storage figure: CPUs, load, filesystem, device, fio version.

Imports :mod:`labkit.machine.scratch`, :mod:`~labkit.storage.measures` and
:mod:`~labkit.storage.fio`.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from labkit.machine.scratch import scratch_root
from labkit.storage.fio import fio_version
from labkit.storage.measures import GiB


def machine_context(path: str | os.PathLike | None = None) -> dict:
    """Facts to print beside any storage figure: CPUs, load, filesystem, device, fio version."""
    path = Path(path) if path is not None else scratch_root()
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
