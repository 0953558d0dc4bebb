"""Unit tests of the labkit.storage package (disk, random reads, small files, fio, comparison,
benchmark CLI, cited figures, PyTorch data loading and checkpoints, patterns), with small sizes.

The deprecated old paths are tested in tests/test_storage_distributed_shims.py."""

from __future__ import annotations

import ctypes
import http.client
import io
import json
import os
import shutil
import sys
from collections import namedtuple
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from labkit.machine import scratch
from labkit.storage import (bench, cited, compare, context, disk, fio, pagecache,
                            randread, smallfiles)
from labkit.storage.measures import GiB, KiB, MiB, Throughput

LINUX = sys.platform == "linux"
HAVE_FIO = shutil.which("fio") is not None


def need_fio() -> None:
    """Skip without fio, unless LABKIT_REQUIRE_TOOLS lists it (CI): then fail, saying why."""
    try:
        if not fio.ensure_fio():
            pytest.skip("fio not installed (set LABKIT_REQUIRE_TOOLS=fio to make this a failure)")
    except fio.FioMissingError as err:
        pytest.fail(str(err))
DiskUsage = namedtuple("DiskUsage", "total used free")


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A scratch root inside pytest's tmp folder, also set as LABKIT_SCRATCH."""
    r = tmp_path / "scratch"
    monkeypatch.setenv("LABKIT_SCRATCH", str(r))
    return r


@pytest.fixture
def no_fio(monkeypatch):
    monkeypatch.setattr(fio, "fio_path", lambda: None)   # every caller looks it up there


def _addr(buf) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


# --------------------------------------------------------------------------- scratch space


def test_default_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path / "x"))
    assert scratch.scratch_root() == tmp_path / "x"
    monkeypatch.delenv("LABKIT_SCRATCH")
    repo = Path(scratch.__file__).resolve().parents[2]
    assert scratch.scratch_root() == repo / ".scratch"


def test_scratch_dir_removed_on_success(root):
    with scratch.scratch_dir(1 * MiB) as d:
        assert d.parent == root and d.is_dir()
        (d / "sub").mkdir()
        (d / "sub" / "f").write_bytes(b"x" * 100)
    assert not d.exists()
    assert not root.exists()  # created by scratch_dir, empty, so removed too


def test_scratch_dir_keeps_existing_root(root):
    root.mkdir()
    (root / "keep").write_text("mine")
    with scratch.scratch_dir(1 * MiB) as d:
        disk.make_file(d / "f.bin", 64 * KiB)
    assert sorted(p.name for p in root.iterdir()) == ["keep"]


@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt])
def test_scratch_dir_removed_on_exception(root, exc):
    with pytest.raises(exc):
        with scratch.scratch_dir(1 * MiB) as d:
            disk.make_file(d / "f.bin", 256 * KiB)
            raise exc("stop")
    assert not d.exists()
    assert not root.exists()


def test_refuses_when_space_is_short(root, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: DiskUsage(10 * MiB, 9 * MiB, 1 * MiB))
    with pytest.raises(RuntimeError, match="not enough free disk.*LABKIT_SCRATCH"):
        with scratch.scratch_dir(600 * KiB):
            pytest.fail("must not get here")
    assert not root.exists()  # nothing written


def test_free_space_threshold_is_twice_the_size(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: DiskUsage(0, 0, 200))
    assert scratch.check_free_space(100, tmp_path / "not" / "yet") == 200
    with pytest.raises(RuntimeError, match="not enough free disk"):
        scratch.check_free_space(101, tmp_path)
    with pytest.raises(ValueError):
        scratch.check_free_space(-1, tmp_path)


# --------------------------------------------------------------------------- buffers, cache


def test_aligned_buffer_is_page_aligned():
    buf = pagecache.aligned_buffer(1 * MiB)
    try:
        assert _addr(buf) % 4096 == 0 and len(buf) == 1 * MiB
    finally:
        buf.close()
    with pytest.raises(ValueError):
        pagecache.aligned_buffer(0)


@pytest.mark.skipif(not LINUX, reason="page-cache control is Linux-only")
def test_drop_and_warm_change_cached_fraction(root):
    with scratch.scratch_dir(8 * MiB) as d:
        f = disk.make_file(d / "f.bin", 4 * MiB)
        pagecache.drop_file_cache(f)
        cold = pagecache.cached_fraction(f)
        disk.read_file(f, 1 * MiB, cache="warm")
        warm = pagecache.cached_fraction(f)
    assert cold is not None and cold < 0.2
    assert warm > 0.95


# --------------------------------------------------------------------------- sequential


def test_write_and_read_counts_bytes(root):
    with scratch.scratch_dir(8 * MiB) as d:
        w = disk.write_file(d / "f.bin", 3 * MiB + 4 * KiB, 1 * MiB)
        assert w.nbytes == 3 * MiB + 4 * KiB and w.ops == 4 and w.seconds > 0
        assert os.path.getsize(d / "f.bin") == w.nbytes
        for cache, method in [("cold", "buffered"), ("warm", "auto"), ("cold", "auto")]:
            r = disk.read_file(d / "f.bin", 1 * MiB, cache=cache, method=method)
            assert r.nbytes == w.nbytes and r.MBps > 0
        part = disk.read_file(d / "f.bin", 64 * KiB, cache="warm", limit_bytes=100 * KiB)
        assert part.nbytes == 100 * KiB and part.ops == 2


def test_write_file_data_is_incompressible(root):
    with scratch.scratch_dir(1 * MiB) as d:
        disk.write_file(d / "f.bin", 256 * KiB, 64 * KiB)
        data = (d / "f.bin").read_bytes()
    import zlib

    assert len(zlib.compress(data[:64 * KiB])) > 60 * KiB


def test_direct_io_when_supported(root):
    with scratch.scratch_dir(4 * MiB) as d:
        f = disk.make_file(d / "f.bin", 2 * MiB)
        if not pagecache.supports_direct_io(f):
            pytest.skip("filesystem without O_DIRECT")
        r = disk.read_file(f, 1 * MiB, cache="cold", method="direct")
        assert r.nbytes == 2 * MiB and "O_DIRECT" in r.label
        w = disk.write_file(d / "g.bin", 1 * MiB, 256 * KiB, direct=True)
        assert w.nbytes == 1 * MiB
        with pytest.raises(ValueError, match="4 KiB"):
            disk.read_file(f, 1000, cache="cold", method="direct")


def test_read_file_rejects_bad_options(root):
    with scratch.scratch_dir(1 * MiB) as d:
        f = disk.make_file(d / "f.bin", 64 * KiB)
        with pytest.raises(ValueError, match="page cache"):
            disk.read_file(f, cache="warm", method="direct")
        with pytest.raises(ValueError):
            disk.read_file(f, cache="lukewarm")
        with pytest.raises(ValueError):
            disk.read_file(f, 0)
        with pytest.raises(ValueError):
            disk.write_file(d / "g", 0)


def test_sweep_block_sizes_rows(root, no_fio):
    with scratch.scratch_dir(4 * MiB) as d:
        f = disk.make_file(d / "f.bin", 2 * MiB)
        rows = compare.sweep_block_sizes(f, [4 * KiB, 1 * MiB], repeats=2, min_bytes=256 * KiB,
                                         max_ops=8, method="buffered")
    assert [(r["block_size"], r["cache"]) for r in rows] == [
        (4 * KiB, "cold"), (1 * MiB, "cold"), (4 * KiB, "warm"), (1 * MiB, "warm")]
    assert all(r["source"] == "python" and len(r["MBps"].values) == 2 for r in rows)
    assert rows[0]["bytes"] == 256 * KiB and rows[1]["bytes"] == 2 * MiB


def test_bytes_for_block():
    assert compare._bytes_for_block(4 * KiB, 1 * GiB, 2048, 16 * MiB, None) == 16 * MiB
    assert compare._bytes_for_block(1 * MiB, 256 * MiB, 2048, 16 * MiB, None) == 256 * MiB
    assert compare._bytes_for_block(1 * MiB, 256 * MiB, 2048, 16 * MiB, 64 * MiB) == 64 * MiB



# --------------------------------------------------------------------------- random reads


def test_random_reads_iops_and_latency(root):
    with scratch.scratch_dir(2 * MiB) as d:
        f = disk.make_file(d / "f.bin", 1 * MiB)
        r1 = randread.random_reads(f, ops=100, seed=1)
        r2 = randread.random_reads(f, ops=101, threads=2, method="buffered", seed=1)
        big = randread.random_reads(f, ops=300, seed=2)  # more reads than blocks: repeats
    assert r1.ops == 100 and r1.threads == 1 and r1.iops > 0
    assert set(r1.latencies_us) == {"p50", "p90", "p99", "p99.9", "mean"}
    lat = r1.latencies_us
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"]
    assert r2.ops == 101 and r2.threads == 2 and r2.method == "buffered"
    assert big.ops == 300
    assert "IOPS" in str(r1)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not LINUX, reason="counts /proc/self/fd")
def test_random_reads_closes_its_fd_when_setup_fails(root, monkeypatch):
    with scratch.scratch_dir(1 * MiB) as d:
        f = disk.make_file(d / "f.bin", 64 * KiB)
        before = _open_fds()

        def broken(*args, **kwargs):
            raise OSError("fadvise failed")

        monkeypatch.setattr(os, "posix_fadvise", broken)
        with pytest.raises(OSError, match="fadvise failed"):
            randread.random_reads(f, ops=4, threads=2, method="buffered")
        assert _open_fds() == before


def test_rates_over_zero_seconds_raise():
    with pytest.raises(ValueError, match="no measurable time"):
        Throughput(10, 0.0).MBps
    with pytest.raises(ValueError, match="no measurable time"):
        Throughput(10, 0.0, ops=1).ops_per_s
    r = randread.RandomReadResult(ops=4, block_size=4096, threads=1, seconds=0.0,
                                 latencies_us={"mean": 1.0})
    with pytest.raises(ValueError, match="no measurable time"):
        r.iops
    assert Throughput(2_000_000, 2.0, ops=4).MBps == 1.0


def test_random_reads_rejects_bad_options(root):
    with scratch.scratch_dir(1 * MiB) as d:
        f = disk.make_file(d / "f.bin", 8 * KiB)
        with pytest.raises(ValueError, match="one read per thread"):
            randread.random_reads(f, ops=1, threads=2)
        with pytest.raises(ValueError, match="smaller than one block"):
            randread.random_reads(f, ops=1, block_size=16 * KiB)


def test_percentiles_match_numpy():
    np = pytest.importorskip("numpy")
    xs = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    got = randread._percentiles(xs, (50, 90, 99.9))
    assert got["p50"] == pytest.approx(np.percentile(xs, 50))
    assert got["p90"] == pytest.approx(np.percentile(xs, 90))
    assert got["p99.9"] == pytest.approx(np.percentile(xs, 99.9))


# --------------------------------------------------------------------------- small files


def test_small_files_vs_big(root):
    with scratch.scratch_dir(2 * MiB) as d:
        paths, w = smallfiles.make_small_files(d / "s", 120, 4 * KiB)
        assert len(paths) == 120 and all(p.stat().st_size == 4 * KiB for p in paths)
        assert len({p.parent for p in paths}) == 2  # 100 per sub-folder
        assert w.nbytes == 120 * 4 * KiB and w.ops == 120
        for cache in ("cold", "warm"):
            for t in (1, 3):
                r = smallfiles.read_small_files(paths, cache=cache, threads=t)
                assert r.nbytes == 120 * 4 * KiB and r.ops == 120
        res = smallfiles.small_vs_big(d / "sb", n_files=50, file_bytes=8 * KiB, threads=(1, 2),
                                   caches=("cold",), repeats=1)
    assert [(r["layout"], r["threads"]) for r in res["rows"]] == [
        ("small files", 1), ("one big file", 1), ("small files", 2), ("one big file", 2)]
    assert set(res["penalty"]) == {("cold", 1), ("cold", 2)}
    assert res["write"]["big"].nbytes == 50 * 8 * KiB


def test_read_big_file_threads_reads_everything(root):
    with scratch.scratch_dir(4 * MiB) as d:
        f = disk.make_file(d / "f.bin", 3 * MiB + 12 * KiB)
        for cache in ("cold", "warm"):
            r = smallfiles.read_big_file(f, 256 * KiB, cache=cache, threads=3)
            assert r.nbytes == 3 * MiB + 12 * KiB


# --------------------------------------------------------------------------- fio


def test_job_file_text():
    text = fio.job_file_text(
        [{"name": "a", "filename": "/x:y", "bs": 4096, "direct": 1}], {"allow_file_create": 0})
    assert text.splitlines() == ["[global]", "allow_file_create=0", "[a]", "stonewall",
                                 "filename=/x\\:y", "bs=4096", "direct=1"]
    with pytest.raises(ValueError):
        fio.job_file_text([{"filename": "/x"}])


@pytest.mark.parametrize("job, glob", [
    ({"name": "a", "filename": "/x\nexec_prerun=touch /tmp/pwned"}, None),
    ({"name": "a", "filename": "/x\rexec_prerun=id"}, None),
    ({"name": "a\n[evil]", "filename": "/x"}, None),
    ({"name": "a]x", "filename": "/x"}, None),
    ({"name": "a", "filename": "/x", "bs": "4k\nexec_postrun=id"}, None),
    ({"name": "a", "filename": "/x", "exec_prerun=id\nbs": 1}, None),
    ({"name": "a", "filename": "/x=y"}, None),
    ({"name": "a", "filename": "/x"}, {"ioengine": "psync\nexec_prerun=id"}),
])
def test_job_file_rejects_injection(job, glob):
    with pytest.raises(ValueError, match="one line without '='"):
        fio.job_file_text([job], glob)


def test_fio_required_and_ensure_fio(monkeypatch):
    assert fio.fio_required({"LABKIT_REQUIRE_TOOLS": "chromium, FIO"})
    assert not fio.fio_required({"LABKIT_REQUIRE_TOOLS": "chromium,fiona"})
    assert not fio.fio_required({})
    monkeypatch.setattr(fio, "fio_path", lambda: None)
    assert fio.ensure_fio({}) is False
    with pytest.raises(fio.FioMissingError, match="LABKIT_REQUIRE_TOOLS='fio,chromium'"):
        fio.ensure_fio({"LABKIT_REQUIRE_TOOLS": "fio,chromium"})
    monkeypatch.setattr(fio, "fio_path", lambda: "/usr/bin/fio")
    assert fio.ensure_fio({"LABKIT_REQUIRE_TOOLS": "fio"}) is True


def test_jobs_match_python_patterns():
    seq = fio.seq_read_job("/f", 100, 1 * MiB, cache="cold", method="buffered")
    assert (seq["direct"], seq["invalidate"], seq["iodepth"], seq["iomem_align"]) == (0, 1, 1, 4096)
    warm = fio.seq_read_job("/f", 100, 4096, cache="warm", method="buffered")
    assert warm["invalidate"] == 0
    with pytest.raises(ValueError):
        fio.seq_read_job("/f", 100, 4096, cache="warm", method="direct")
    rnd = fio.rand_read_job("/f", 1 * MiB, 1000, threads=4)
    assert (rnd["numjobs"], rnd["io_size"], rnd["randrepeat"], rnd["direct"]) == (4, 250 * 4096,
                                                                                   0, 1)


def test_parse_fio_json():
    doc = {"jobs": [{
        "jobname": "seqread", "job options": {"bs": "1M"},
        "read": {"io_bytes": 100_000_000, "bw_bytes": 500_000_000, "iops": 476.8,
                 "runtime": 200, "lat_ns": {"mean": 2_000_000.0},
                 "clat_ns": {"percentile": {"50.000000": 1_900_000, "99.900000": 5_000_000}}},
        "write": {"io_bytes": 0}}]}
    (r,) = fio.parse_fio_json(doc)
    assert r.name == "seqread" and r.MBps == 500.0 and r.seconds == 0.2
    assert r.clat_percentiles_us == {"p50": 1900.0, "p99.9": 5000.0}
    assert r.lat_mean_us == 2000.0 and r.options == {"bs": "1M"}


def test_without_fio_returns_none_and_says_how_to_install(root, no_fio):
    assert "apt-get install -y fio" in fio.FIO_INSTALL_HINT
    assert fio.run_fio([{"name": "a", "filename": "/x"}], root) is None
    with scratch.scratch_dir(1 * MiB) as d:
        f = disk.make_file(d / "f.bin", 256 * KiB)
        assert compare.fio_seq_read(f) is None and compare.fio_rand_read(f, ops=10) is None
        c = compare.compare_seq_read(f, 64 * KiB, method="buffered", repeats=2)
        r = compare.compare_rand_read(f, ops=20, repeats=1)
    assert c.fio is None and c.ratio is None and len(c.python.values) == 2
    assert "apt-get install" in c.message and "apt-get install" in str(c)
    assert r.fio is None and "python_latency_us" in r.details


def test_fio_reference_on_the_same_file(root):
    need_fio()
    with scratch.scratch_dir(8 * MiB) as d:
        f = disk.make_file(d / "f.bin", 4 * MiB)
        c = compare.compare_seq_read(f, 1 * MiB, method="buffered", repeats=2)
        w = compare.fio_seq_read(f, 256 * KiB, cache="warm")
        r = compare.compare_rand_read(f, ops=200, threads=2, repeats=1)
        leftovers = sorted(p.name for p in d.iterdir())
    assert leftovers == ["f.bin"]  # fio's job and output files are removed
    assert len(c.fio.values) == 2 and len(c.ratio.values) == 2 and c.ratio.median > 0
    assert w.io_bytes == 4 * MiB and w.MBps > 0
    assert r.fio.median > 0 and "fio_latency_us" in r.details


def test_run_fio_reports_failure(tmp_path, monkeypatch):
    fake = tmp_path / "fio"
    fake.write_text("#!/bin/sh\necho 'fio: bad option' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(fio, "fio_path", lambda: str(fake))
    with pytest.raises(RuntimeError, match="bad option"):
        fio.run_fio([{"name": "a", "filename": "/x"}], tmp_path)
    assert list(tmp_path.iterdir()) == [fake]


# --------------------------------------------------------------------------- command line

SMALL = ["--size", "4M", "--repeats", "1", "--rand-ops", "64", "--small-files", "40"]


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = bench.bench_storage_cli(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_json_has_exactly_the_keys(root):
    code, out, err = _cli(["--json", *SMALL])
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == list(bench.BENCH_KEYS)
    assert doc["file_bytes"] == 4 * MiB and doc["path"] == str(root)
    assert doc["seq_read_MBps"] > 0 and doc["rand4k_iops"] > 0
    assert doc["small_files_MBps"] > 0 and doc["big_file_MBps"] > 0
    if fio.ensure_fio():
        assert doc["fio_seq_read_MBps"] > 0 and doc["seq_read_ratio"] > 0
        assert doc["fio_rand4k_iops"] > 0 and doc["rand4k_ratio"] > 0
    assert not root.exists()


def test_cli_without_fio_prints_nulls_and_hint(root, no_fio):
    code, out, err = _cli(["--json", "--path", str(root / "p"), *SMALL])
    assert code == 0
    doc = json.loads(out)
    assert doc["fio_seq_read_MBps"] is None and doc["seq_read_ratio"] is None
    assert doc["fio_rand4k_iops"] is None and doc["rand4k_ratio"] is None
    assert doc["path"] == str(root / "p")
    assert "apt-get install -y fio" in err


def test_cli_text_report(root, no_fio):
    code, out, _ = _cli(SMALL)
    assert code == 0 and "random 4 KiB reads" in out and "summary:" in out


def test_cli_refuses_without_space(root, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: DiskUsage(10 * MiB, 9 * MiB, 1 * MiB))
    code, out, err = _cli(["--json", *SMALL])
    assert code == 1 and out == "" and "not enough free disk" in err


def test_cli_bad_options():
    assert _cli(["--size", "lots"])[0] == 2
    assert _cli(["--size", "2G"])[0] == 2
    assert _cli(["--size", "1M"])[0] == 1  # below 4 MiB
    assert bench._parse_size("256MiB") == 256 * MiB and bench._parse_size("1g") == 1 << 30


def test_benchmark_cleans_up_on_interrupt(root, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "compare_rand_read", boom)
    with pytest.raises(KeyboardInterrupt):
        bench.run_benchmark(file_bytes=4 * MiB, repeats=1, n_files=10)
    assert not root.exists()


def test_dispatch_from_labkit_main(root, no_fio, capsys):
    from labkit.__main__ import main

    assert main(["bench", "storage", "--json", *SMALL]) == 0
    assert list(json.loads(capsys.readouterr().out)) == list(bench.BENCH_KEYS)


def test_machine_context(tmp_path):
    ctx = context.machine_context(tmp_path)
    assert ctx["cpus"] >= 1 and "fio" in ctx and ctx["path"] == str(tmp_path)


# --------------------------------------------------------------------------- PyTorch parts

torch = pytest.importorskip("torch")

from labkit.storage import checkpoints, dataloading  # noqa: E402


@pytest.mark.parametrize("layout", ["files", "packed", "tar"])
def test_samples_read_back_in_every_layout(root, layout):
    with scratch.scratch_dir(1 * MiB) as d:
        s = dataloading.write_samples(d, 30, 1000, layout)
        ds = dataloading.SampleDataset(s)
        try:
            assert len(ds) == 30 and s.total_bytes == 30_000
            for i in (0, 17, 29):
                x = ds[i]
                assert x.dtype == torch.uint8 and x.shape == (1000,)
                assert int.from_bytes(bytes(x[:8].tolist()), "little") == i
        finally:
            ds.close()


def test_bench_dataloader_rows(root):
    with scratch.scratch_dir(1 * MiB) as d:
        rows = dataloading.bench_dataloader(d, n_samples=64, sample_bytes=1 * KiB,
                                        layouts=("files", "tar"), num_workers=(0, 1),
                                        batch_size=16, latency_us=10)
    assert [(r["layout"], r["num_workers"]) for r in rows] == [
        ("files", 0), ("files", 1), ("tar", 0), ("tar", 1)]
    assert all(r["samples_per_s"].median > 0 and r["MBps"].median > 0 for r in rows)
    assert all(r["steady_samples_per_s"].median > 0 for r in rows)
    with pytest.raises(ValueError):
        dataloading.bench_dataloader(root, layouts=("files",), cache="hot")
    with scratch.scratch_dir(1 * MiB) as d, pytest.raises(ValueError, match="more samples"):
        dataloading.bench_dataloader(d, n_samples=32, sample_bytes=1 * KiB, layouts=("packed",),
                                 num_workers=(2,), batch_size=16)


def test_steady_rate_skips_the_first_round():
    from labkit.storage.dataloading import steady_rate

    # 2 workers deliver their first batches together at 1.0 s, then one batch per 0.1 s
    arrivals = [(1.0, 16), (1.0, 32), (1.1, 48), (1.2, 64), (1.3, 80)]
    assert steady_rate(arrivals, 2) == pytest.approx(48 / 0.3)
    assert steady_rate(arrivals, 0) == pytest.approx(64 / 0.3)   # 0 workers: skip 1 batch
    assert steady_rate(arrivals[:2], 2) is None


def test_spin_burns_cpu_time_not_wall_time():
    import time

    from labkit.storage.dataloading import _spin

    t0 = time.thread_time()
    _spin(20_000)
    assert time.thread_time() - t0 >= 0.02


def _tied_state_dict():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(64, 16)
    head = torch.nn.Linear(16, 64, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head, "mlp": torch.nn.Linear(16, 16)})
    return model.state_dict()


def test_checkpoint_round_trip_and_bench(root):
    sd = _tied_state_dict()
    assert checkpoints.state_dict_bytes(sd) == (64 * 16 + 16 * 16 + 16) * 4  # tied counted once
    with scratch.scratch_dir(1 * MiB) as d:
        for fmt in ("torch", "safetensors"):
            checkpoints.save_checkpoint(sd, d / f"c.{fmt}", fmt)
            back = checkpoints.load_checkpoint(d / f"c.{fmt}", fmt)
            assert set(back) == set(sd)
            assert all(torch.equal(back[k], sd[k]) for k in sd)
        rows = checkpoints.bench_checkpoint(sd, d / "b", repeats=2)
        assert not (d / "b" / "ckpt.pt").exists()
    assert [(r["format"], r["op"]) for r in rows] == [
        ("torch", "save"), ("torch", "load"), ("torch", "load mmap"),
        ("safetensors", "save"), ("safetensors", "load")]
    assert all(len(r["seconds"].values) == 2 and r["file_bytes"] > 0 for r in rows)


def test_checkpoint_rejects_bad_input(root):
    with scratch.scratch_dir(1 * MiB) as d:
        with pytest.raises(ValueError, match="empty"):
            checkpoints.bench_checkpoint({}, d)
        with pytest.raises(ValueError, match="tensors only"):
            checkpoints.save_checkpoint({"step": 3}, d / "c", "safetensors")
        with pytest.raises(ValueError):
            checkpoints.save_checkpoint(_tied_state_dict(), d / "c", "pickle")


# --------------------------------------------------------------------------- cited figures

import re  # noqa: E402

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TEXT_FIELDS = ("throughput", "scaling", "latency", "cost_class", "semantics")


def test_every_cited_option_is_complete_and_sourced():
    data = cited.storage_figures()
    keys = [o["key"] for o in data["options"]]
    assert set(keys) >= {"instance_store", "ebs_gp3", "ebs_io2", "efs", "fsx_lustre", "s3",
                         "mountpoint_s3", "s3_express"}
    assert len(keys) == len(set(keys))
    for opt in data["options"]:
        for field in ("name", "type", *TEXT_FIELDS, "sources"):
            assert opt.get(field), f"{opt['key']}: missing {field}"
        cited_fields = set()
        for src in opt["sources"]:
            assert src["url"].startswith("https://"), src
            assert src["title"].strip() and ISO_DATE.match(src["retrieved"]), src
            for field in src["fields"]:
                assert field in opt, f"{opt['key']}: source cites unknown field {field!r}"
            cited_fields.update(src["fields"])
        numeric = {k for k, v in opt.items() if k != "sources" and v is not None
                   and isinstance(v, (int, float, list)) and not isinstance(v, bool)}
        assert numeric <= cited_fields, f"{opt['key']}: uncited numbers {numeric - cited_fields}"


def test_storage_table_and_sources():
    rows = cited.storage_table()
    assert len(rows) == len(cited.storage_figures()["options"])
    assert all(len(r) == len(cited.TABLE_COLUMNS) for r in rows)
    assert all(r[2].startswith("https://") for r in cited.storage_sources())


def test_storage_figures_errors(tmp_path):
    with pytest.raises(RuntimeError, match="missing"):
        cited.storage_figures(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RuntimeError, match="not valid JSON"):
        cited.storage_figures(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(RuntimeError, match="options"):
        cited.storage_figures(tmp_path / "empty.json")
    with pytest.raises(ValueError, match="known: instance_store"):
        cited.storage_option("floppy")


def test_fleet_load_seconds_bounds():
    one = cited.fleet_load_seconds(140e9, 1, "fsx_lustre", client_Gbps=100)
    assert one["bound"] == "client network" and one["seconds"] == pytest.approx(140e9 / 12.5e9)
    many = cited.fleet_load_seconds(140e9, 32, "fsx_lustre", fsx_capacity_TiB=48)
    assert many["bound"].startswith("shared") and many["per_pod_MBps"] == pytest.approx(1500)
    gp3 = [cited.fleet_load_seconds(140e9, n, "ebs_gp3")["seconds"] for n in (1, 64)]
    assert gp3[0] == gp3[1]  # one volume per Pod: no sharing
    default = cited.fleet_load_seconds(140e9, 8, "ebs_gp3", ebs_MiBps=125)
    assert default["bound"] == "volume at 125 MiB/s"
    assert default["seconds"] == pytest.approx(140e9 / (125 * MiB))      # ~18 min
    provisioned = cited.fleet_load_seconds(140e9, 8, "ebs_gp3")
    assert provisioned["bound"] == "volume at 1,000 MiB/s"
    capped = cited.fleet_load_seconds(140e9, 8, "ebs_gp3", ebs_MiBps=2000, ebs_instance_Gbps=10)
    assert capped["bound"] == "instance EBS bandwidth" and capped["per_pod_MBps"] == 1250
    for bad in (100, 2001):
        with pytest.raises(ValueError, match="125-2000"):
            cited.fleet_load_seconds(1e9, 1, "ebs_gp3", ebs_MiBps=bad)
    with pytest.raises(ValueError, match="EBS options only"):
        cited.fleet_load_seconds(1e9, 1, "efs", ebs_MiBps=125)
    s3 = cited.fleet_load_seconds(140e9, 1, "s3", connections=10)
    assert s3["bound"] == "parallel GETs" and s3["per_pod_MBps"] == pytest.approx(850)
    assert cited.fleet_load_seconds(1e9, 1000, "s3")["bound"].startswith("shared request")
    with pytest.raises(ValueError, match="fill it"):
        cited.fleet_load_seconds(1e9, 1, "instance_store")
    with pytest.raises(ValueError):
        cited.fleet_load_seconds(0, 1, "s3")


def test_fleet_load_seconds_fsx_cached():
    """Cached FSx reads share the network baseline (2,600 MB/s per TiB at PERSISTENT-1000);
    the disks still deliver one copy; a checkpoint larger than the RAM cache is refused."""
    on_disk = cited.fleet_load_seconds(140e9, 128, "fsx_lustre", fsx_capacity_TiB=48)
    cached = cited.fleet_load_seconds(140e9, 128, "fsx_lustre", fsx_capacity_TiB=48,
                                        fsx_cached=True)
    assert on_disk["per_pod_MBps"] == pytest.approx(48 * 1000 / 128)
    assert cached["per_pod_MBps"] == pytest.approx(48 * 2600 / 128)
    assert cached["bound"].startswith("shared file system network")
    one = cited.fleet_load_seconds(10e9, 1, "fsx_lustre", fsx_capacity_TiB=1.2,
                                     fsx_cached=True)
    assert one["bound"] == "file system disks, one copy for all Pods"
    assert one["per_pod_MBps"] == pytest.approx(1200)
    ex = cited.fleet_load_seconds(140e9, 16, "fsx_lustre", fsx_capacity_TiB=19.2)
    assert ex["seconds"] == pytest.approx(16 * 140e3 / 19200)      # chapter 07 exercise, ~117 s
    with pytest.raises(ValueError, match="RAM cache"):
        cited.fleet_load_seconds(140e9, 2, "fsx_lustre", fsx_capacity_TiB=1.2, fsx_cached=True)
    with pytest.raises(ValueError, match="fsx_lustre only"):
        cited.fleet_load_seconds(1e9, 1, "efs", fsx_cached=True)


def test_fsx_capacity_sizes_cited():
    fsx = cited.storage_option("fsx_lustre")
    assert fsx["capacity_sizes_GiB_first"] == [1200, 2400, 4800, 7200]
    assert fsx["capacity_step_GiB"] == 2400 and fsx["min_capacity_GiB"] == 1200
    assert "multiples of 2,400 GiB" in fsx["semantics"]
    assert "512 KB" not in cited.storage_option("s3_express")["cost_class"]
    assert "per_client_MBps" not in cited.storage_option("ebs_gp3")


# --------------------------------------------------------------------------- patterns

from labkit.storage import patterns  # noqa: E402


def test_ranged_get_reads_the_object_in_parallel(root):
    with scratch.scratch_dir(4 * MiB) as d:
        f = disk.make_file(d / "obj.bin", 1 * MiB + 123)
        with patterns.LatencyServer([f], first_byte_ms=1, connection_MBps=None) as srv:
            r = patterns.ranged_get(srv.url("obj.bin"), 1 * MiB + 123, part_bytes=256 * KiB,
                              concurrency=3)
            assert r.nbytes == 1 * MiB + 123 and r.ops == 5 and srv.requests == 5
            with pytest.raises(RuntimeError, match="416|HTTP|short read"):
                patterns.ranged_get(srv.url("obj.bin"), 4 * MiB, part_bytes=2 * MiB)
            with pytest.raises(ValueError, match="not served"):
                srv.url("other.bin")
            for bad in ("bytes=10-5", "bytes=5000000-", "bytes=x-1", "items=0-1"):
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
                try:
                    conn.request("GET", "/obj.bin", headers={"Range": bad})
                    resp = conn.getresponse()
                    assert resp.status == 416, bad
                    assert resp.getheader("Content-Range") == f"bytes */{1 * MiB + 123}"
                    assert resp.read() == b""
                finally:
                    conn.close()
        with pytest.raises(RuntimeError, match="not running"):
            srv.port


def test_latency_and_bandwidth_are_injected(root):
    with scratch.scratch_dir(1 * MiB) as d:
        f = disk.make_file(d / "obj.bin", 256 * KiB)
        with patterns.LatencyServer([f], first_byte_ms=50, connection_MBps=None) as srv:
            r = patterns.ranged_get(srv.url("obj.bin"), 256 * KiB, part_bytes=256 * KiB)
        assert r.seconds >= 0.05
        with patterns.LatencyServer([f], first_byte_ms=0, connection_MBps=2.0) as srv:
            r = patterns.ranged_get(srv.url("obj.bin"), 256 * KiB, part_bytes=256 * KiB)
        assert r.seconds >= 0.12  # 262 kB at 2 MB/s


def test_background_uploader_and_simulated_training(root):
    with scratch.scratch_dir(1 * MiB) as d:
        ckpt = disk.make_file(d / "ckpt.bin", 64 * KiB)
        save = lambda step: ckpt  # noqa: E731
        sync = patterns.simulate_training(save, steps=4, step_s=0.0, every=2,
                                    upload=lambda p: patterns.throttled_copy(p, d / "up.bin", 2.0))
        assert sync["drain_seconds"] == 0 and sync["upload_wait_seconds"] > 0.05
        with patterns.BackgroundUploader(d / "remote", MBps=2.0, max_pending=None) as up:
            asyn = patterns.simulate_training(save, steps=4, step_s=0.0, every=2, uploader=up)
            uploads = up.wait()
        assert len(uploads) == 2 and (d / "remote" / "ckpt.bin").stat().st_size == 64 * KiB
        assert sync["stall_seconds"] > 0.05 > asyn["stall_seconds"]
        # the uploads that did not fit in the loop are drained at the end, and counted
        assert asyn["drain_seconds"] > 0.05 and up.most_pending == 2
        assert asyn["total_seconds"] >= asyn["drain_seconds"]
        with pytest.raises(KeyboardInterrupt):
            with patterns.BackgroundUploader(d / "r2", MBps=0.5) as up:
                up.submit(ckpt)
                raise KeyboardInterrupt
        assert up._thread is None  # joined
        with pytest.raises(ValueError):
            patterns.simulate_training(save, upload=print, uploader=up)
        with pytest.raises(ValueError, match="max_pending"):
            patterns.BackgroundUploader(d, MBps=1.0, max_pending=0)


def test_background_uploader_back_pressure(root):
    """Uploads slower than the checkpoint interval: the next save waits for the previous
    upload (one pending at most), and that wait is counted as a stall."""
    with scratch.scratch_dir(1 * MiB) as d:
        ckpt = disk.make_file(d / "ckpt.bin", 100 * KiB)   # 0.1 s at 1 MB/s
        save = lambda step: ckpt  # noqa: E731
        with patterns.BackgroundUploader(d / "remote", MBps=1.0) as up:
            slow = patterns.simulate_training(save, steps=6, step_s=0.01, every=2, uploader=up)
        assert up.most_pending == 1 and len(up.uploads) == 3
        # interval 0.02 s, upload 0.1 s: the 2nd and 3rd checkpoints wait ~0.08 s each
        assert slow["upload_wait_seconds"] > 0.1 and up.waited_seconds == pytest.approx(
            slow["upload_wait_seconds"])
        assert slow["stall_seconds"] >= slow["upload_wait_seconds"]
        assert slow["drain_seconds"] > 0.05                     # the last upload
        with patterns.BackgroundUploader(d / "fast", MBps=100.0) as up:
            fast = patterns.simulate_training(save, steps=6, step_s=0.02, every=2, uploader=up)
        assert fast["upload_wait_seconds"] < slow["upload_wait_seconds"] / 5
