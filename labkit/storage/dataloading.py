"""Feeding a training loop from disk: a PyTorch ``DataLoader`` over three sample layouts.

A ``DataLoader`` that opens one small file per sample pays a file open and a random read per
sample; one packed shard (a flat file, or a tar file as WebDataset uses) is read with large
sequential reads. :func:`bench_dataloader` measures samples/s for each layout against
``num_workers``. Write only inside a scratch folder (:func:`labkit.machine.scratch.scratch_dir`).
Units as in :mod:`~labkit.storage.measures` (MB/s = 10**6 B/s). Imports torch,
:mod:`~labkit.storage.measures` and :mod:`~labkit.storage.pagecache`.
"""

from __future__ import annotations

import os
import tarfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from labkit.machine.timing import Samples
from labkit.storage.measures import KiB
from labkit.storage.pagecache import drop_file_cache, fsync_path, syncfs


LAYOUTS = ("files", "packed", "tar")


@dataclass
class SampleSet:
    """Samples on disk: ``layout`` is ``"files"`` (one file per sample), ``"packed"`` (one
    flat file, sample i at ``i x sample_bytes``) or ``"tar"`` (one tar shard; ``offsets`` are
    where each member's data starts)."""

    layout: str
    sample_bytes: int
    paths: list[Path]
    offsets: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.offsets) if self.layout != "files" else len(self.paths)

    @property
    def total_bytes(self) -> int:
        return self.n * self.sample_bytes

    def files(self) -> list[Path]:
        """The files on disk (one per sample, or the one shard)."""
        return list(self.paths)


def _sample_bytes(i: int, sample_bytes: int, pattern: bytes) -> bytes:
    head = i.to_bytes(8, "little")
    body = (pattern * (sample_bytes // len(pattern) + 1))[: sample_bytes - 8]
    return (head + body)[:sample_bytes]


def write_samples(folder: str | os.PathLike, n_samples: int, sample_bytes: int = 16 * KiB,
                  layout: str = "files") -> SampleSet:
    """Write ``n_samples`` samples of ``sample_bytes`` into ``folder`` in the given layout.

    Sample i starts with i as 8 little-endian bytes (so a test can check what was read),
    followed by incompressible bytes. Everything is flushed to disk before returning.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if n_samples < 1 or sample_bytes < 8:
        raise ValueError("need n_samples >= 1 and sample_bytes >= 8")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pattern = os.urandom(4 * KiB)
    if layout == "files":
        paths = []
        for i in range(n_samples):
            sub = folder / f"{i // 1000:03d}"
            if i % 1000 == 0:
                sub.mkdir(exist_ok=True)
            p = sub / f"{i:07d}.bin"
            p.write_bytes(_sample_bytes(i, sample_bytes, pattern))
            paths.append(p)
        syncfs(folder)
        return SampleSet(layout, sample_bytes, paths)
    if layout == "packed":
        p = folder / "shard.bin"
        with open(p, "wb") as f:
            for i in range(n_samples):
                f.write(_sample_bytes(i, sample_bytes, pattern))
            f.flush()
            os.fsync(f.fileno())
        return SampleSet(layout, sample_bytes, [p], [i * sample_bytes for i in range(n_samples)])
    p = folder / "shard.tar"
    import io

    with tarfile.open(p, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(n_samples):
            data = _sample_bytes(i, sample_bytes, pattern)
            info = tarfile.TarInfo(f"{i:07d}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fsync_path(p)
    with tarfile.open(p, "r") as tar:
        offsets = [m.offset_data for m in tar.getmembers()]
    return SampleSet(layout, sample_bytes, [p], offsets)


def _spin(us: float) -> None:
    """Burn ``us`` microseconds of this thread's CPU time (not wall time: a worker that
    waits for a core must not count the wait as work done)."""
    if us > 0:
        end = time.thread_time() + us / 1e6
        while time.thread_time() < end:
            pass


class SampleDataset(Dataset):
    """A map-style Dataset over a :class:`SampleSet`; item i is a uint8 tensor of one sample.

    ``work_us`` burns that much CPU per sample, standing in for decoding and augmentation.
    ``latency_us`` sleeps that long per sample, a *simulation* of remote storage's per-request
    latency (an object store's first byte takes milliseconds; a local disk ~0.1 ms).
    Shards are opened lazily in each process (DataLoader workers get their own descriptor).
    """

    def __init__(self, samples: SampleSet, work_us: float = 0.0, latency_us: float = 0.0):
        self.samples = samples
        self.work_us = float(work_us)
        self.latency_us = float(latency_us)
        self._fd: int | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.samples.n

    def _shard_fd(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.samples.paths[0], os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def __getitem__(self, i: int) -> torch.Tensor:
        s = self.samples
        out = torch.empty(s.sample_bytes, dtype=torch.uint8)  # 64-byte aligned: fast copies
        buf = out.numpy()
        if s.layout == "files":
            fd = os.open(s.paths[i], os.O_RDONLY)
            try:
                n = os.readv(fd, [buf])
            finally:
                os.close(fd)
        else:
            n = os.preadv(self._shard_fd(), [buf], s.offsets[i])
        if n != s.sample_bytes:
            raise RuntimeError(f"short read of sample {i}: {n} of {s.sample_bytes} bytes")
        if self.latency_us > 0:
            time.sleep(self.latency_us / 1e6)
        _spin(self.work_us)
        return out

    def close(self) -> None:
        """Close the shard's descriptor in this process (safe to call twice)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = None
        state["_pid"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _epoch(loader: DataLoader) -> tuple[float, float, int, list[tuple[float, int]]]:
    """Iterate ``loader`` once: (seconds to first batch, seconds in all, samples, and the
    arrival time and running sample count of every batch)."""
    t0 = time.perf_counter()
    it = iter(loader)
    arrivals: list[tuple[float, int]] = []
    n = 0
    try:
        for batch in it:
            n += len(batch)
            arrivals.append((time.perf_counter() - t0, n))
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
    first = arrivals[0][0] if arrivals else 0.0
    return first, time.perf_counter() - t0, n, arrivals


def steady_rate(arrivals: Sequence[tuple[float, int]], skip_batches: int) -> float | None:
    """Samples/s between the arrival of batch ``skip_batches`` and the last one, or ``None``
    when fewer than ``skip_batches + 1`` batches arrived.

    With ``w`` workers, skipping the first ``max(w, 1)`` batches leaves out start-up and the
    first round, in which all workers deliver at about the same time: counting from the first
    batch alone would credit that whole round to almost no time and overstate the rate.
    """
    k = max(1, skip_batches)
    if len(arrivals) <= k:
        return None
    (t_k, n_k), (t_end, n_end) = arrivals[k - 1], arrivals[-1]
    return (n_end - n_k) / (t_end - t_k) if t_end > t_k else None


def bench_dataloader(folder: str | os.PathLike, *, n_samples: int = 2048,
                     sample_bytes: int = 16 * KiB, layouts: Sequence[str] = LAYOUTS,
                     num_workers: Sequence[int] = (0, 1, 2), batch_size: int = 64,
                     cache: str = "cold", work_us: float = 0.0, latency_us: float = 0.0,
                     shuffle: bool = False, repeats: int = 1, seed: int = 0) -> list[dict]:
    """Samples/s of a ``DataLoader`` per layout (small files, packed file, tar shard) and
    ``num_workers``.

    Writes each layout once into ``folder`` (a scratch folder), then for every combination
    runs ``repeats`` epochs. ``cache="cold"`` drops the samples' pages from the page cache
    before each epoch. ``work_us`` (CPU per sample) and ``latency_us`` (simulated remote
    latency per sample) are passed to :class:`SampleDataset`. ``samples_per_s`` and ``MBps``
    cover the whole epoch, starting the worker processes included (the wait for the first
    batch is ``first_batch_s``); ``steady_samples_per_s`` is the rate once every worker has
    delivered its first batch (:func:`steady_rate`), so start-up is excluded; it needs more
    than ``max(w, 1)`` batches per epoch (ValueError otherwise).
    Returns rows ``{"layout", "num_workers", "cache", "work_us", "latency_us",
    "samples_per_s": Samples, "MBps": Samples, "first_batch_s": Samples,
    "steady_samples_per_s": Samples}``.
    """
    if cache not in ("cold", "warm"):
        raise ValueError(f"cache must be 'cold' or 'warm', got {cache!r}")
    bad = [w for w in num_workers if w < 0]
    if bad or batch_size < 1 or repeats < 1:
        raise ValueError("need num_workers >= 0, batch_size >= 1 and repeats >= 1")
    folder = Path(folder)
    rows = []
    with warnings.catch_warnings():
        # More workers than cores is the point when samples wait on (simulated) latency.
        warnings.filterwarnings("ignore", message=".*worker processes in total.*")
        for layout in layouts:
            rows += _bench_layout(folder, layout, n_samples, sample_bytes, num_workers,
                                  batch_size, cache, work_us, latency_us, shuffle, repeats,
                                  seed)
    return rows


def _bench_layout(folder: Path, layout: str, n_samples: int, sample_bytes: int,
                  num_workers: Sequence[int], batch_size: int, cache: str, work_us: float,
                  latency_us: float, shuffle: bool, repeats: int, seed: int) -> list[dict]:
    samples = write_samples(folder / layout, n_samples, sample_bytes, layout)
    files = samples.files()
    rows = []
    for w in num_workers:
        sps, mbps, first, steady = [], [], [], []
        for rep in range(repeats):
            if cache == "cold":
                for p in files:
                    drop_file_cache(p)
            ds = SampleDataset(samples, work_us, latency_us)
            g = torch.Generator().manual_seed(seed + rep)
            loader = DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=w,
                                generator=g)
            try:
                t_first, seconds, n, arrivals = _epoch(loader)
            finally:
                ds.close()
            if n != n_samples:
                raise RuntimeError(f"DataLoader returned {n} of {n_samples} samples")
            sps.append(n / seconds)
            mbps.append(n * sample_bytes / seconds / 1e6)
            first.append(t_first)
            # once every worker has delivered its first batch (start-up excluded)
            rate = steady_rate(arrivals, w)
            if rate is None:
                raise ValueError(f"{n_samples} samples in batches of {batch_size} give "
                                 f"{len(arrivals)} batches; the steady rate with {w} workers "
                                 f"needs more than {max(w, 1)}: use more samples")
            steady.append(rate)
        rows.append({"layout": layout, "num_workers": w, "cache": cache,
                     "work_us": work_us, "latency_us": latency_us,
                     "samples_per_s": Samples(sps, "samples/s"), "MBps": Samples(mbps, "MB/s"),
                     "first_batch_s": Samples(first, "s"),
                     "steady_samples_per_s": Samples(steady, "samples/s")})
    return rows
