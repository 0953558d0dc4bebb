"""fio, the reference for every storage measurement of the course.

`fio <https://fio.readthedocs.io/>`_ is the standard Linux I/O benchmark. The course runs the
*same pattern* as the Python measurement (same file, block size, queue depth, cache state) in
the same run, so that "Python reached X % of the disk" is measured, not assumed.

Every function here returns ``None`` when ``fio`` is not on ``PATH``; :func:`fio_message`
then says how to install it. Nothing here writes outside the folder it is given.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from labkit.machine.tools import tool_path

#: How to install fio, shown when it is missing.
FIO_INSTALL = ("Install it and rerun: `sudo apt-get install -y fio` (Debian/Ubuntu), "
               "`sudo dnf install -y fio` (Amazon Linux, Fedora) or `brew install fio` (macOS).")
FIO_INSTALL_HINT = ("fio is not installed, so the fio reference is skipped (the Python "
                    "measurements still run). " + FIO_INSTALL)

#: Percentiles asked of fio for completion latency.
FIO_PERCENTILES = (50.0, 90.0, 99.0, 99.9)

#: Environment variable listing the optional tools that must be present (comma-separated,
#: e.g. ``fio,chromium``); CI sets it so that a missing fio fails instead of skipping.
REQUIRE_TOOLS_ENV = "LABKIT_REQUIRE_TOOLS"


class FioMissingError(RuntimeError):
    """fio is not installed although ``LABKIT_REQUIRE_TOOLS`` lists it."""


def fio_path() -> str | None:
    """Return the path of the ``fio`` executable, or ``None`` when it is not on ``PATH``
    (:func:`labkit.machine.tools.tool_path`, the finder ``python -m labkit doctor`` uses)."""
    return tool_path("fio")


def fio_version() -> str | None:
    """Return fio's version string (for example ``"fio-3.33"``), or ``None`` without fio."""
    exe = fio_path()
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def fio_required(environ: dict[str, str] | None = None) -> bool:
    """True when ``LABKIT_REQUIRE_TOOLS`` (comma-separated, case-insensitive) lists ``fio``."""
    value = (os.environ if environ is None else environ).get(REQUIRE_TOOLS_ENV, "")
    return "fio" in {part.strip().lower() for part in value.split(",")}


def ensure_fio(environ: dict[str, str] | None = None) -> bool:
    """Whether the fio reference can run: True with fio on ``PATH``, False without it.

    When fio is missing and ``LABKIT_REQUIRE_TOOLS`` lists it (as CI does), raise
    :class:`FioMissingError` instead, so that a comparison with fio cannot pass unchecked.
    """
    if fio_path() is not None:
        return True
    if fio_required(environ):
        listed = (os.environ if environ is None else environ).get(REQUIRE_TOOLS_ENV)
        raise FioMissingError(f"fio is not on PATH, but {REQUIRE_TOOLS_ENV}={listed!r} requires "
                              f"it, so the fio comparison cannot be skipped. {FIO_INSTALL}")
    return False


def fio_message() -> str:
    """One line on the fio reference: its version, or how to install it."""
    version = fio_version()
    if version is None:
        return FIO_INSTALL_HINT
    return f"fio reference: {version} ({fio_path()})"


@dataclass
class FioJobResult:
    """The read side of one fio job, parsed from fio's JSON output.

    ``MBps`` is 10**6 bytes per second; latencies are in microseconds (``clat``: completion
    latency, the time the device took; ``lat``: total latency as seen by the application).
    """

    name: str
    io_bytes: int
    seconds: float
    MBps: float
    iops: float
    lat_mean_us: float
    clat_percentiles_us: dict[str, float] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)


def _escape(value: str) -> str:
    # fio treats ':' in filenames as a separator of several files.
    return value.replace(":", "\\:")


def _safe(kind: str, text: object) -> str:
    """``text`` as a string for one line of a job file; ValueError if it could start another.

    A newline or carriage return would begin a new line (``exec_prerun=...`` runs a shell
    command), an ``=`` in a name or value would be read as a second option, and brackets
    in a section name would end it early.
    """
    text = str(text)
    bad = [c for c in ("\n", "\r", "=", "\0") if c in text]
    if kind == "section" and ("[" in text or "]" in text):
        bad.append("[]")
    if bad:
        raise ValueError(f"fio job {kind} {text!r} contains {bad!r}; names and values must be "
                         f"one line without '=' (a newline could inject fio options)")
    return text


def job_file_text(jobs: list[dict[str, object]], global_options: dict[str, object] | None = None
                  ) -> str:
    """Build the text of a fio job file: one ``[name]`` section per job, run one after another.

    Each job is a dict of fio options plus a ``"name"``. Jobs are separated by ``stonewall``
    so they never overlap. Raises ValueError for a job without a name or a filename, and for
    a name, option or value containing a newline, a carriage return or ``=`` (it could inject
    options such as ``exec_prerun``, which fio runs as a shell command).
    """
    lines = ["[global]"]
    for key, value in (global_options or {}).items():
        key = _safe("option name", key)
        lines.append(f"{key}={_safe('value', value)}" if value is not None else key)
    for job in jobs:
        job = dict(job)
        name = job.pop("name", None)
        if not name or "filename" not in job:
            raise ValueError(f"each fio job needs a 'name' and a 'filename'; got {job!r}")
        lines.append(f"[{_safe('section', name)}]")
        lines.append("stonewall")
        for key, value in job.items():
            key = _safe("option name", key)
            if value is None:
                lines.append(key)
                continue
            value = _safe("value", value)
            if key == "filename":
                value = _escape(value)
            lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def parse_fio_json(data: dict) -> list[FioJobResult]:
    """Turn fio's ``--output-format=json`` document into one :class:`FioJobResult` per job.

    Only the read side is parsed, except for write-only jobs, whose write side is used.
    """
    results = []
    for job in data.get("jobs", []):
        side = job["read"] if job["read"].get("io_bytes", 0) else job["write"]
        runtime_ms = side.get("runtime", 0) or job.get("job_runtime", 0)
        seconds = runtime_ms / 1000.0
        pct = side.get("clat_ns", {}).get("percentile", {}) or {}
        percentiles = {}
        for key, ns in pct.items():
            percentiles[f"p{float(key):g}"] = ns / 1000.0
        results.append(FioJobResult(
            name=job.get("jobname", "?"),
            io_bytes=int(side.get("io_bytes", 0)),
            seconds=seconds,
            MBps=side.get("bw_bytes", 0) / 1e6,
            iops=float(side.get("iops", 0.0)),
            lat_mean_us=side.get("lat_ns", {}).get("mean", 0.0) / 1000.0,
            clat_percentiles_us=percentiles,
            options={k: str(v) for k, v in job.get("job options", {}).items()},
        ))
    return results


def run_fio(jobs: list[dict[str, object]], workdir: str | os.PathLike, *, timeout: float = 300,
            global_options: dict[str, object] | None = None) -> list[FioJobResult] | None:
    """Run fio jobs one after another and return their results, or ``None`` without fio.

    ``workdir`` receives the job file and the JSON output (both removed afterwards); pass the
    scratch folder. Jobs only read or write the files they name; ``allow_file_create=0``
    makes fio refuse to create a file, so it never writes outside what you prepared.
    Raises RuntimeError (with fio's message) when fio fails or runs past ``timeout`` seconds.
    """
    exe = fio_path()
    if exe is None:
        return None
    workdir = Path(workdir)
    base = {"allow_file_create": 0, "percentile_list": ":".join(f"{p:g}" for p in FIO_PERCENTILES)}
    base.update(global_options or {})
    job_path = workdir / "labkit-fio-jobs.fio"
    out_path = workdir / "labkit-fio-out.json"
    job_path.write_text(job_file_text(jobs, base))
    try:
        proc = subprocess.run([exe, "--output-format=json", f"--output={out_path}", str(job_path)],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"fio failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[:800]}")
        text = out_path.read_text()
        # fio can print notes before the JSON document.
        start = text.find("{")
        if start < 0:
            raise RuntimeError(f"fio wrote no JSON; its output was: {text[:800]!r}")
        return parse_fio_json(json.loads(text[start:]))
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"fio ran past {timeout} s; use a smaller file or fewer "
                           f"operations") from err
    finally:
        for p in (job_path, out_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def seq_read_job(path: str | os.PathLike, size: int, block_size: int, *, cache: str = "cold",
                 method: str = "direct", name: str = "seqread") -> dict[str, object]:
    """The fio job that reads ``size`` bytes of ``path`` sequentially, as the Python reader does.

    ``cache="cold"`` with ``method="direct"`` is ``direct=1`` (O_DIRECT, the page cache is
    bypassed); with ``method="buffered"`` it is ``direct=0`` with ``invalidate=1`` (fio drops the
    file's page cache with ``posix_fadvise`` first, as
    :func:`labkit.storage.pagecache.drop_file_cache` does). ``cache="warm"`` reads from the page
    cache (``invalidate=0``). One request in flight (``psync``, queue depth 1); buffers
    page-aligned (``iomem_align=4096``) like the Python side.
    """
    if cache not in ("cold", "warm") or method not in ("direct", "buffered"):
        raise ValueError("cache must be 'cold' or 'warm' and method 'direct' or 'buffered'")
    if cache == "warm" and method == "direct":
        raise ValueError("a warm (page-cache) read cannot use O_DIRECT; use method='buffered'")
    return {
        "name": name, "filename": os.fspath(path), "rw": "read", "bs": block_size,
        "size": size, "ioengine": "psync", "iodepth": 1,
        "direct": 1 if method == "direct" else 0,
        "invalidate": 1 if cache == "cold" else 0, "iomem_align": 4096,
    }


def rand_read_job(path: str | os.PathLike, file_bytes: int, ops: int, *, block_size: int = 4096,
                  threads: int = 1, method: str = "direct", name: str = "randread"
                  ) -> dict[str, object]:
    """The fio job for ``ops`` random reads of ``block_size`` over the whole file.

    One request in flight per thread (``psync``); ``threads`` jobs share ``ops``
    (``numjobs`` with ``group_reporting``). ``randrepeat=0`` gives each run fresh offsets, as
    the Python side does, so that neither side re-reads blocks a virtual disk's host cache
    still holds from the previous repetition.
    """
    if ops < threads or threads < 1:
        raise ValueError("need ops >= threads >= 1")
    if method not in ("direct", "buffered"):
        raise ValueError("method must be 'direct' or 'buffered'")
    return {
        "name": name, "filename": os.fspath(path), "rw": "randread", "bs": block_size,
        "size": file_bytes, "io_size": (ops // threads) * block_size, "ioengine": "psync",
        "iodepth": 1, "numjobs": threads, "group_reporting": 1, "randrepeat": 0,
        "direct": 1 if method == "direct" else 0, "invalidate": 1, "iomem_align": 4096,
        "fadvise_hint": "random",
    }
