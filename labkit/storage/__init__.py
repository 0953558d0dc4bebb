"""Storage for AI jobs, measured on this machine with fio as the reference: one concept per module.

What AI jobs need from storage is bandwidth for big sequential reads (checkpoints, packed
datasets) and operations per second for small ones (many small files, random samples).

=============================  ================================================================
module                         what it holds
=============================  ================================================================
:mod:`~.measures`              units (``KiB``, ``MiB``, ``GiB``), :class:`Throughput`, ``Stats``
:mod:`~.pagecache`             aligned buffers, ``O_DIRECT`` support, dropping a file's pages,
                               ``fsync``/``syncfs``
:mod:`~.disk`                  sequential writes and reads of one file, cold or warm
:mod:`~.randread`              random reads: IOPS and latency percentiles
:mod:`~.smallfiles`            many small files against one big file
:mod:`~.fio`                   fio: job files, running it, parsing its JSON
:mod:`~.compare`               Python against fio on the same file (block-size sweep, compare_*)
:mod:`~.context`               facts to print beside a figure (filesystem, device, fio version)
:mod:`~.bench`                 ``python -m labkit bench storage``
:mod:`~.dataloading`           a PyTorch DataLoader over small files, a packed file, a tar shard
:mod:`~.checkpoints`           ``torch.save`` against safetensors, full loads against mmap
:mod:`~.patterns`              object storage (ranged GETs) and background checkpoint uploads,
                               simulated on loopback
:mod:`~.cited`                 the cited AWS storage figures and ``fleet_load_seconds``
=============================  ================================================================

Imports point down this package: ``measures`` and ``pagecache`` import nothing of labkit;
``disk`` builds on them; ``randread`` and ``smallfiles`` on ``disk``; ``compare`` on those
and ``fio``; ``bench`` on ``compare``, ``smallfiles`` and ``context``. Outside the package
only :mod:`labkit.scratch` (scratch space) is imported. Import what you use from its module
(``from labkit.storage.disk import read_file``); nothing heavy is imported here.

Every file is written inside a scratch folder (:func:`labkit.scratch.scratch_dir`), which
checks free space first and removes everything on success, on error and on Ctrl-C.

Deprecated: the names of the old flat module ``labkit.storage`` (``storage.read_file``,
``storage.scratch_dir``, ...) still resolve here for one release, with a DeprecationWarning
that names their new home.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path

#: old name of ``labkit.storage`` -> the module of this package that holds it now
_MOVED = {
    **dict.fromkeys(("KiB", "MiB", "GiB", "Stats", "Throughput"), "measures"),
    **dict.fromkeys(("ALIGN", "aligned_buffer", "supports_direct_io", "drop_file_cache",
                     "cached_fraction"), "pagecache"),
    **dict.fromkeys(("BLOCK_SIZES", "MAX_DEFAULT_BYTES", "DEFAULT_FILE_BYTES", "make_file",
                     "write_file", "read_file"), "disk"),
    **dict.fromkeys(("RandomReadResult", "random_reads"), "randread"),
    **dict.fromkeys(("make_small_files", "read_small_files", "read_big_file", "small_vs_big"),
                    "smallfiles"),
    **dict.fromkeys(("FIO_INSTALL_HINT", "fio_path", "fio_version", "fio_message",
                     "fio_required", "ensure_fio"), "fio"),
    **dict.fromkeys(("Comparison", "sweep_block_sizes", "compare_seq_read", "compare_rand_read",
                     "fio_seq_read", "fio_rand_read"), "compare"),
    "machine_context": "context",
    **dict.fromkeys(("storage_figures", "storage_option", "storage_table", "storage_sources",
                     "TABLE_COLUMNS", "fleet_load_seconds"), "cited"),
    **dict.fromkeys(("BENCH_KEYS", "run_benchmark", "bench_storage_cli"), "bench"),
    **dict.fromkeys(("bench_dataloader", "write_samples", "SampleSet", "SampleDataset"),
                    "dataloading"),
    **dict.fromkeys(("bench_checkpoint", "save_checkpoint", "load_checkpoint",
                     "state_dict_bytes"), "checkpoints"),
}

#: old scratch-space wrappers of ``labkit.storage`` -> where to go instead (ARC-09)
_SCRATCH = {
    "default_scratch_root": "labkit.scratch.scratch_root",
    "check_free_space": "labkit.scratch.check_free_space (need_bytes first, then the path)",
    "scratch_dir": "labkit.scratch.scratch_dir",
    "SPACE_FACTOR": "the factor argument of labkit.scratch.check_free_space (default 2)",
}


def _old_default_scratch_root() -> Path:
    from labkit import scratch

    return scratch.scratch_root()


def _old_check_free_space(root: str | os.PathLike, need_bytes: int, *, factor: float = 2) -> int:
    from labkit import scratch

    return scratch.check_free_space(need_bytes, Path(root), factor=factor)


def _old_scratch_dir(need_bytes: int, root: str | os.PathLike | None = None, *,
                     prefix: str = "labkit-storage-", limit_bytes: int = 2 * 2**30):
    from labkit import scratch

    return scratch.scratch_dir(need_bytes, prefix=prefix, limit_bytes=limit_bytes, root=root)


_OLD_SCRATCH = {"default_scratch_root": _old_default_scratch_root,
                "check_free_space": _old_check_free_space, "scratch_dir": _old_scratch_dir,
                "SPACE_FACTOR": 2}


def __getattr__(name: str):
    """Old names of the flat module ``labkit.storage``: resolved with a DeprecationWarning."""
    if name in _MOVED:
        home = f"{__name__}.{_MOVED[name]}"
        warnings.warn(f"labkit.storage.{name} is deprecated; import it from {home} "
                      f"(issue 18)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(home), name)
    if name in _SCRATCH:
        warnings.warn(f"labkit.storage.{name} is deprecated; use {_SCRATCH[name]} (issue 18)",
                      DeprecationWarning, stacklevel=2)
        return _OLD_SCRATCH[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
