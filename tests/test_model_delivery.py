"""labkit.storage.delivery: the streamer-style loader, the measurement and the cold-start terms."""

import json
import math
import struct

import pytest
import torch
from safetensors.torch import save_file

from labkit.planning import catalog
from labkit.storage import delivery as md
from labkit.storage.cited import storage_option
from labkit.storage.pagecache import aligned_buffer, cached_fraction


@pytest.fixture
def st_file(tmp_path):
    tensors = {"a": torch.arange(3000, dtype=torch.float32).reshape(30, 100),
               "b": torch.ones(7, dtype=torch.bfloat16), "c": torch.arange(5, dtype=torch.int64),
               "empty": torch.zeros(0, dtype=torch.float32)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    return path, tensors


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_load_parallel_returns_the_same_tensors_as_safetensors(st_file, threads):
    path, tensors = st_file
    got = md.load_parallel(path, threads)
    assert got.keys() == tensors.keys()
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t)
    assert all(torch.equal(md.load_safe_open(path)[k], t) for k, t in tensors.items())


def test_load_parallel_reuses_a_buffer_and_refuses_a_small_one(st_file):
    path, tensors = st_file
    buf = aligned_buffer(1 << 20)
    assert torch.equal(md.load_parallel(path, 2, out=buf)["a"], tensors["a"])
    with pytest.raises(ValueError, match="needs"):
        md.load_parallel(path, 1, out=aligned_buffer(16))
    with pytest.raises(ValueError, match="threads"):
        md.load_parallel(path, 0)


def test_read_header_rejects_what_is_not_safetensors(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"abc")
    with pytest.raises(ValueError, match="too short"):
        md.read_header(bad)
    bad.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(ValueError, match="not JSON"):
        md.read_header(bad)


def test_read_header_skips_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, path, metadata={"format": "pt"})
    start, header = md.read_header(path)
    assert list(header) == ["w"] and start == 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_weights_files_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_smollm2"):
        md.weights_files(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert md.weights_files(tmp_path) == [tmp_path / "model.safetensors"]


def test_drop_cached_empties_the_page_cache_of_a_file(st_file):
    path, _ = st_file
    ok, frac = md.drop_cached(path)
    if cached_fraction(path) is not None:
        assert ok and frac == 0.0


def test_measure_delivery_rows_and_references(st_file, tmp_path):
    path, _ = st_file
    res = md.measure_delivery(path, (1, 2), repeats=2, workdir=tmp_path)
    methods = {(r["method"], r["cache"]) for r in res["rows"]}
    assert methods == {(m, c) for m in ("read, 1 thread", "read, 2 threads", "safe_open (mmap)")
                       for c in ("cold", "warm")}
    assert all(len(r["seconds"].values) == 2 and r["MBps"] > 0 for r in res["rows"])
    assert res["file_bytes"] == path.stat().st_size and res["ref_warm_MBps"] > 0
    assert md.median_MBps(res, "read, 2 threads", "warm") > 0
    with pytest.raises(KeyError):
        md.median_MBps(res, "nope", "warm")
    with pytest.raises(ValueError):
        md.measure_delivery(path, (), repeats=1)


def test_image_pull_is_bound_by_root_volume_or_network():
    slow = md.image_pull_seconds(100e9, root_MiBps=125, network_Gbps=100)
    assert slow["bound"] == "root volume writes"
    assert math.isclose(slow["seconds"], 2 * 100e9 / (125 * 2**20))
    fast = md.image_pull_seconds(100e9, root_MiBps=1e6, network_Gbps=10)
    assert fast["bound"] == "instance network" and math.isclose(fast["seconds"], 80.0)
    with pytest.raises(ValueError):
        md.image_pull_seconds(1e9, root_MiBps=0, network_Gbps=1)


def test_streamer_default_concurrency_is_the_bound():
    per_conn = storage_option("s3")["per_connection_MBps"]
    est = md.weights_load(140e9, "streamer_default")
    assert est["bound"] == "parallel GETs"
    assert math.isclose(est["MBps"], md.CITED["streamer_concurrency_object_store"] * per_conn)
    assert md.weights_load(140e9, "streamer_64")["seconds"] < est["seconds"] / 7
    with pytest.raises(ValueError, match="known"):
        md.weights_load(1e9, "ftp")


def test_cold_start_terms_add_up_and_image_pays_the_pull():
    rows = md.cold_start_terms(140e9, node_s=60, engine_s=30, engine_image_bytes=10e9)
    assert [r["option"] for r in rows] == list(md.DELIVERY_OPTIONS)
    for r in rows:
        assert math.isclose(r["total_s"], r["node_s"] + r["pull_s"] + r["weights_s"] + r["engine_s"])
    by = {r["option"]: r for r in rows}
    assert by["image"]["pull_s"] > 10 * by["mountpoint_s3"]["pull_s"]
    assert by["image_volume_cached"]["pull_s"] == by["mountpoint_s3"]["pull_s"]
    net = min(catalog.instance("p5.48xlarge")["network_Gbps"], md.TCP_CLIENT_GBPS)
    assert math.isclose(by["mountpoint_s3"]["weights_s"], 140e9 / (net * 1e9 / 8))
    with pytest.raises(ValueError):
        md.cold_start_terms(node_s=-1, engine_s=0, engine_image_bytes=0)


def test_sources_name_every_cited_field():
    fields = {f for s in md.SOURCES for f in s["fields"]}
    assert set(md.CITED) <= fields
    assert all(s["retrieved"] == "2026-12-05" and s["url"].startswith("https://") for s in md.SOURCES)
    json.dumps(md.SOURCES)


def test_measure_delivery_on_a_private_copy_cleans_up(st_file, tmp_path):
    path, _ = st_file
    work = tmp_path / "work"
    res = md.measure_delivery(path, (1,), repeats=1, workdir=work, private_copy=True)
    assert res["copied_from"] == str(path) and res["file_bytes"] == path.stat().st_size
    assert not work.exists() or list(work.iterdir()) == []
