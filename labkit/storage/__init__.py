"""Storage for AI jobs, measured on this machine with fio as the reference: one concept per module.

What AI jobs need from storage is bandwidth for big sequential reads (checkpoints, packed
datasets) and operations per second for small ones (many small files, random samples).

=============================  ================================================================
module                         what it holds
=============================  ================================================================
:mod:`~.measures`              units (``KiB``, ``MiB``, ``GiB``) and
                               :class:`~labkit.storage.measures.Throughput`
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
only :mod:`labkit.machine` is imported (``timing.Samples`` for repeated measurements,
``dtypes.tensor_bytes``, ``scratch``). Import what you use from its module
(``from labkit.storage.disk import read_file``); nothing heavy is imported here.

Every file is written inside a scratch folder (:func:`labkit.machine.scratch.scratch_dir`), which
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


def _homes(module: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, f"labkit.storage.{module}")


#: old name of ``labkit.storage`` -> ``"module"`` or ``"module:new name"`` that holds it now
_HOME = {
    **_homes("measures", "KiB", "MiB", "GiB", "Throughput"),
    "Stats": "labkit.machine.timing:Samples",
    **_homes("pagecache", "ALIGN", "aligned_buffer", "supports_direct_io", "drop_file_cache",
             "cached_fraction"),
    **_homes("disk", "BLOCK_SIZES", "MAX_DEFAULT_BYTES", "DEFAULT_FILE_BYTES", "make_file",
             "write_file", "read_file"),
    **_homes("randread", "RandomReadResult", "random_reads"),
    **_homes("smallfiles", "make_small_files", "read_small_files", "read_big_file",
             "small_vs_big"),
    **_homes("fio", "FIO_INSTALL_HINT", "fio_path", "fio_version", "fio_message", "fio_required",
             "ensure_fio"),
    **_homes("compare", "Comparison", "sweep_block_sizes", "compare_seq_read",
             "compare_rand_read", "fio_seq_read", "fio_rand_read"),
    **_homes("context", "machine_context"),
    **_homes("cited", "storage_figures", "storage_option", "storage_table", "storage_sources",
             "TABLE_COLUMNS", "fleet_load_seconds"),
    **_homes("bench", "BENCH_KEYS", "run_benchmark", "bench_storage_cli"),
    **_homes("dataloading", "bench_dataloader", "write_samples", "SampleSet", "SampleDataset"),
    **_homes("checkpoints", "bench_checkpoint", "save_checkpoint", "load_checkpoint",
             "state_dict_bytes"),
    # the scratch-space wrappers are gone (ARC-09): labkit.machine.scratch instead
    "default_scratch_root": "labkit.machine.scratch:scratch_root",
    "check_free_space": "labkit.machine.scratch:check_free_space",
    "scratch_dir": "labkit.machine.scratch:scratch_dir",
    "SPACE_FACTOR": "labkit.machine.scratch:check_free_space",
}


def _check_free_space(root: str | os.PathLike, need_bytes: int, *, factor: float = 2) -> int:
    """The old wrapper's signature: the path first (labkit.machine.scratch takes the size
    first)."""
    from labkit.machine import scratch

    return scratch.check_free_space(need_bytes, Path(root), factor=factor)


def _scratch_dir(need_bytes: int, root: str | os.PathLike | None = None, *,
                 prefix: str = "labkit-storage-", limit_bytes: int = 2 * 2**30):
    """The old wrapper's signature: ``root`` second, this package's folder prefix."""
    from labkit.machine import scratch

    return scratch.scratch_dir(need_bytes, prefix=prefix, limit_bytes=limit_bytes, root=root)


#: old names whose behaviour differs from their new home's: served as they were
_OLD_SIGNATURES = {"check_free_space": _check_free_space, "scratch_dir": _scratch_dir,
                   "SPACE_FACTOR": 2}


def __getattr__(name: str):
    """Old names of the flat module ``labkit.storage``: resolved with a DeprecationWarning."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, new = _HOME[name].partition(":")
    warnings.warn(f"labkit.storage.{name} is deprecated and will be removed in the next "
                  f"release; import {new or name} from {module} instead (issue 18)",
                  DeprecationWarning, stacklevel=2)
    if name in _OLD_SIGNATURES:
        return _OLD_SIGNATURES[name]
    return getattr(importlib.import_module(module), new or name)
