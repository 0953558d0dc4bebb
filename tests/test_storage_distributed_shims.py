"""The old import paths of storage and distributed keep working for one release (issue 18).

``labkit.storage`` and ``labkit.distributed`` are packages now; every name the old flat
modules had still resolves there (PEP 562 ``__getattr__``) with a DeprecationWarning naming its
new home, and importing a new module does not warn. ``labkit.storage_fio``,
``labkit.storage_patterns`` and ``labkit.storage_torch`` are module shims that warn on import.
The name lists are frozen copies of the old modules' public names.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

OLD_STORAGE = """KiB MiB GiB BLOCK_SIZES MAX_DEFAULT_BYTES DEFAULT_FILE_BYTES ALIGN SPACE_FACTOR
FIO_INSTALL_HINT Stats Throughput RandomReadResult Comparison default_scratch_root
check_free_space scratch_dir aligned_buffer supports_direct_io drop_file_cache cached_fraction
make_file write_file read_file sweep_block_sizes random_reads make_small_files read_small_files
read_big_file small_vs_big compare_seq_read compare_rand_read machine_context fio_path
fio_version fio_message fio_required ensure_fio fio_seq_read fio_rand_read storage_figures
storage_option storage_table storage_sources fleet_load_seconds bench_storage_cli
bench_dataloader bench_checkpoint TABLE_COLUMNS BENCH_KEYS run_benchmark write_samples SampleSet
SampleDataset save_checkpoint load_checkpoint state_dict_bytes""".split()
#: old wrappers of labkit.machine.scratch, kept with their old signatures (ARC-09)
OLD_STORAGE_SIGNATURES = {"check_free_space", "scratch_dir", "SPACE_FACTOR"}
OLD_DISTRIBUTED = """RAY_NUM_CPUS RAY_MAX_CPUS RAY_OBJECT_STORE_BYTES SESSION_ENV OWNER_ENV
OWNER_FILE ShutdownReport default_num_cpus cleanup_dead_sessions ray_processes RaySession
shutdown_all ray_session ray_overheads object_store_rates corpus_prompts make_shards ShardWorker
InferenceRun start_shard_workers stop_actors batch_inference serial_inference
amdahl_parallel_fraction run_actor_kill run_flaky_tasks free_port RankError run_ranks
collectives_demo allreduce_benchmark tiny_config training_batches train_single ddp_train
compare_losses sharded_training_bytes parallelism_plan LAYOUTS min_nodes efa_GBps
ring_allreduce_seconds gradient_sync_seconds pipeline_bubble main""".split()
OLD_MODULES = {
    "labkit.storage_fio": """FIO_INSTALL FIO_INSTALL_HINT FIO_PERCENTILES REQUIRE_TOOLS_ENV
        FioMissingError fio_path fio_version fio_required ensure_fio fio_message FioJobResult
        job_file_text parse_fio_json run_fio seq_read_job rand_read_job""".split(),
    "labkit.storage_torch": """SampleSet write_samples SampleDataset bench_dataloader
        steady_rate state_dict_bytes save_checkpoint load_checkpoint bench_checkpoint LAYOUTS KiB
        Stats Throughput drop_file_cache""".split(),
    "labkit.storage_patterns": """LatencyServer ranged_get throttled_copy BackgroundUploader
        simulate_training MiB Throughput aligned_buffer""".split(),
}


def _old_name(package: str, name: str):
    """Look ``name`` up on ``package``; returns (value, the warnings it raised)."""
    module = importlib.import_module(package)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(module, name)
    return value, [w for w in caught if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("package,name", [("labkit.storage", n) for n in OLD_STORAGE] +
                         [("labkit.distributed", n) for n in OLD_DISTRIBUTED])
def test_every_old_name_resolves_and_warns(package, name):
    value, caught = _old_name(package, name)
    assert len(caught) == 1, f"{package}.{name} must warn once"
    message = str(caught[0].message)
    assert f"{package}.{name} is deprecated" in message
    new, home = re.search(r"import (\w+) from (\S+) instead", message).groups()
    new = name if new == "it" else new
    assert home.startswith(("labkit.storage.", "labkit.distributed.", "labkit.machine."))
    if name in OLD_STORAGE_SIGNATURES:
        return                                  # served with its old signature, tested below
    assert getattr(importlib.import_module(home), new) is value   # the same object


@pytest.mark.parametrize("package,old", [("labkit.storage", OLD_STORAGE),
                                         ("labkit.distributed", OLD_DISTRIBUTED)])
def test_no_new_module_hides_an_old_name(package, old):
    """A submodule named like an old function would replace it once imported
    (``storage.random_reads`` must stay the function)."""
    folder = ROOT / Path(*package.split("."))
    assert not {p.stem for p in folder.glob("*.py")} & set(old)


def test_unknown_names_still_raise_attribute_error():
    for package in ("labkit.storage", "labkit.distributed"):
        with pytest.raises(AttributeError, match="no_such_name"):
            getattr(importlib.import_module(package), "no_such_name")


def test_old_scratch_wrappers_keep_their_signatures(tmp_path, monkeypatch):
    """The old storage wrappers took the path first (labkit.machine.scratch takes the size
    first) and made folders named labkit-storage-*."""
    import shutil
    from collections import namedtuple

    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path / "s"))
    check_free_space, _ = _old_name("labkit.storage", "check_free_space")
    scratch_dir, _ = _old_name("labkit.storage", "scratch_dir")
    default_root, _ = _old_name("labkit.storage", "default_scratch_root")
    assert default_root() == tmp_path / "s"
    with scratch_dir(1024, tmp_path / "r") as folder:             # root as 2nd positional
        assert folder.parent == tmp_path / "r" and folder.name.startswith("labkit-storage-")
    assert not folder.exists()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(0, 0, 200))
    assert check_free_space(tmp_path / "not" / "yet", 100) == 200
    assert _old_name("labkit.storage", "SPACE_FACTOR")[0] == 2
    with pytest.raises(RuntimeError, match="not enough free disk"):
        check_free_space(tmp_path, 101)


@pytest.mark.parametrize("module", sorted(OLD_MODULES))
def test_old_modules_provide_their_names_and_warn(module):
    """Also: storage_torch.Stats is the one repeated-measurement type now, Samples."""
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=f"{module} is deprecated"):
        shim = importlib.import_module(module)
    missing = [n for n in OLD_MODULES[module] if not hasattr(shim, n)]
    assert not missing
    if module == "labkit.storage_torch":
        from labkit.machine.timing import Samples

        assert shim.Stats is Samples


def test_new_modules_import_without_warnings():
    """A fresh interpreter imports every new module with DeprecationWarning as an error, and
    ``python -m labkit.distributed`` still starts (the RayJob and PyTorchJob run it)."""
    modules = [f"labkit.storage.{m.stem}" for m in (ROOT / "labkit" / "storage").glob("*.py")
               if m.stem != "__init__"]
    modules += [f"labkit.distributed.{m.stem}" for m in
                (ROOT / "labkit" / "distributed").glob("*.py")
                if m.stem not in ("__init__", "__main__")]
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], check=True,
                   env=env, cwd=ROOT)
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-m",
                          "labkit.distributed", "--help"], check=True, env=env, cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert "batch-inference" in out and "ddp" in out
