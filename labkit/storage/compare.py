"""Python against fio on the same file, the same pattern and in the same run.

Every Python figure comes with its distance to the hardware's limit: :func:`compare_seq_read`
and :func:`compare_rand_read` alternate the Python measurement (:mod:`~labkit.storage.disk`,
:mod:`~labkit.storage.randread`) and fio's (:mod:`~labkit.storage.fio`) ``repeats`` times;
:func:`sweep_block_sizes` does it for every block size. Without fio the Python side still
runs and :func:`labkit.storage.fio.fio_message` says how to install it. Sits above
``disk``, ``randread`` and ``fio``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labkit.storage import fio
from labkit.storage.disk import BLOCK_SIZES, read_file, resolve_method, size_label
from labkit.machine.timing import Samples
from labkit.storage.measures import KiB, MiB
from labkit.storage.pagecache import ALIGN
from labkit.storage.randread import random_reads


@dataclass
class Comparison:
    """Python against fio on the same pattern, same file, same run (alternating repetitions).

    ``ratio`` holds one Python/fio ratio per repetition (each pair ran back to back), which is
    robust against a disk whose speed drifts over minutes. ``fio`` and ``ratio`` are ``None``
    without fio; ``message`` then says how to install it.
    """

    metric: str
    python: Samples
    fio: Samples | None
    ratio: Samples | None
    message: str = ""
    details: dict = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.metric}", f"  Python: {self.python}"]
        if self.fio is not None and self.ratio is not None:
            lines += [f"  fio:    {self.fio}", f"  ratio Python/fio: {self.ratio}"]
        if self.message:
            lines.append(f"  {self.message}")
        return "\n".join(lines)


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
    Returns rows ``{"block_size", "cache", "source": "python"|"fio", "MBps": Samples,
    "bytes"}``; fio rows are missing without fio (see :func:`~labkit.storage.fio.fio_message`).
    """
    path = Path(path)
    size = os.path.getsize(path)
    rows = []
    use_fio = with_fio and fio.fio_path() is not None
    for cache in caches:
        m = resolve_method(path, cache, method)
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
                         "MBps": Samples(py, "MB/s"), "bytes": nbytes})
            if fi:
                rows.append({"block_size": bs, "cache": cache, "method": m, "source": "fio",
                             "MBps": Samples(fi, "MB/s"), "bytes": nbytes})
    return rows


def fio_seq_read(path: str | os.PathLike, block_size: int = 1 * MiB, *, cache: str = "cold",
                 method: str = "auto", size: int | None = None, workdir=None
                 ) -> fio.FioJobResult | None:
    """fio's sequential read of ``path`` with the same pattern as
    :func:`~labkit.storage.disk.read_file`.

    Returns ``None`` without fio (:func:`~labkit.storage.fio.fio_message` says how to install
    it). For a warm
    read, call it when the file is in the page cache (this function reads it once first).
    """
    if fio.fio_path() is None:
        return None
    path = Path(path)
    fsize = os.path.getsize(path)
    size = fsize if size is None else min(size, fsize)
    method = resolve_method(path, cache, method)
    if method == "direct":
        size -= size % ALIGN
    if cache == "warm":
        read_file(path, max(block_size, 1 * MiB), cache="warm", limit_bytes=size)
    job = fio.seq_read_job(path, size, block_size, cache=cache, method=method)
    res = fio.run_fio([job], workdir or path.parent)
    return res[0] if res else None


def fio_rand_read(path: str | os.PathLike, *, ops: int = 4000, block_size: int = 4 * KiB,
                  threads: int = 1, method: str = "auto", workdir=None
                  ) -> fio.FioJobResult | None:
    """fio's random reads with the same pattern as
    :func:`~labkit.storage.randread.random_reads`; ``None`` without fio."""
    if fio.fio_path() is None:
        return None
    path = Path(path)
    method = resolve_method(path, "cold", method)
    job = fio.rand_read_job(path, os.path.getsize(path), ops, block_size=block_size,
                                    threads=threads, method=method)
    res = fio.run_fio([job], workdir or path.parent)
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
        return Comparison(metric, Samples(py, unit), None, None, fio.FIO_INSTALL_HINT, details)
    ratios = [p / f for p, f in zip(py, fi) if f]
    return Comparison(metric, Samples(py, unit), Samples(list(fi), unit), Samples(ratios, "x"),
                      fio.fio_message(), details)


def compare_seq_read(path: str | os.PathLike, block_size: int = 1 * MiB, *,
                     cache: str = "cold", method: str = "auto", repeats: int = 3
                     ) -> Comparison:
    """Sequential read by Python (:func:`~labkit.storage.disk.read_file`) against fio, same
    file, alternating.

    The default is the course target: cold, 1 MiB blocks, O_DIRECT where allowed.
    """
    method = resolve_method(path, cache, method)
    py, fi = _alternate(
        repeats,
        lambda: read_file(path, block_size, cache=cache, method=method).MBps,
        lambda: (lambda r: r.MBps if r else None)(
            fio_seq_read(path, block_size, cache=cache, method=method)))
    metric = f"sequential read, {size_label(block_size)} blocks, {cache}, {method}, QD1"
    return _comparison(metric, "MB/s", py, fi, {"block_size": block_size, "cache": cache,
                                               "method": method})


def compare_rand_read(path: str | os.PathLike, *, ops: int = 4000, block_size: int = 4 * KiB,
                      threads: int = 1, method: str = "auto", repeats: int = 3) -> Comparison:
    """Random reads by Python (:func:`~labkit.storage.randread.random_reads`) against fio, in
    IOPS, alternating.

    ``details["python_latency_us"]`` and ``details["fio_latency_us"]`` hold the latency
    percentiles of the last repetition.
    """
    method = resolve_method(path, "cold", method)
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
    metric = (f"random {size_label(block_size)} reads, {threads} thread(s) = QD{threads}, "
              f"{method}")
    return _comparison(metric, "IOPS", py, fi,
                       dict(last, ops=ops, threads=threads, method=method))
