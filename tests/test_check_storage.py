"""labkit.check.storage: every check accepts the right answer and rejects the typical wrong
ones (the inverse, the wrong unit, off by 2x, the wrong row, an unfilled ``...``), each with
its own hint."""

from __future__ import annotations

import math

import pytest

from labkit.check import LabCheckError
from labkit.check import storage as chk
from labkit.machine.timing import Samples
from labkit.storage.cited import fleet_load_seconds
from labkit.storage.measures import KiB, MiB
from labkit.storage.randread import RandomReadResult


def _sweep_rows(with_fio: bool = True):
    rows = []
    table = {("cold", "python"): [10, 50, 90, 100], ("warm", "python"): [100, 900, 1000, 950],
             ("cold", "fio"): [85, 95, 98, 100]}
    for (cache, source), values in table.items():
        if source == "fio" and not with_fio:
            continue
        for bs, v in zip([4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB], values):
            rows.append({"block_size": bs, "cache": cache, "source": source,
                         "MBps": Samples([v, v])})
    return rows


def _reference(rows, cache, fraction):
    return chk.reference_knee(rows, cache, fraction=fraction)


# --------------------------------------------------------------------------- reference_knee

def test_reference_knee():
    rows = _sweep_rows()
    assert chk.reference_knee(rows, "cold", fraction=0.8) == 1 * MiB
    assert chk.reference_knee(rows, "cold", fraction=0.5) == 64 * KiB
    assert chk.reference_knee(rows, "warm", fraction=0.8) == 64 * KiB
    assert chk.reference_knee(rows, "cold", source="fio", fraction=0.8) == 4 * KiB
    with pytest.raises(ValueError):
        chk.reference_knee(rows, "lukewarm")


# --------------------------------------------------------------------------- check_knee

def test_check_knee_accepts_the_reference(capsys):
    assert "agrees" in chk.check_knee(_reference, _sweep_rows())
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda r, c, f: _reference(r, c, f) // KiB, "bytes, not KiB"),
    (lambda r, c, f: 16 * MiB if c == "cold" else 1 * MiB, "smallest block size that reaches"),
    (lambda r, c, f: chk.reference_knee(r, c, "fio", f), "fio's knee"),
    (lambda r, c, f: _reference(r, "warm" if c == "cold" else "cold", f), "another cache"),
    (lambda r, c, f: 3000, "one of the measured block sizes"),
    (lambda r, c, f: ..., "block size in bytes"),
])
def test_check_knee_rejects(wrong, hint):
    with pytest.raises(LabCheckError, match=hint):
        chk.check_knee(wrong, _sweep_rows())


def test_check_knee_unfilled_cell():
    def knee(rows, cache, fraction):
        raise NotImplementedError

    with pytest.raises(LabCheckError, match="NotImplementedError"):
        chk.check_knee(knee, _sweep_rows())


# --------------------------------------------------------------------------- Little's law

def _run(threads=4, seconds=0.1, mean=100.0, p50=80.0):
    return RandomReadResult(ops=4000, block_size=4096, threads=threads, seconds=seconds,
                                    latencies_us={"p50": p50, "mean": mean})


def test_check_littles_law_accepts():
    assert "40,000 IOPS" in chk.check_littles_law(40000, _run())


@pytest.mark.parametrize("answer, hint", [
    (40.0, "divide it by 1e6 \\(not 1e3\\)"),            # latency taken as ms
    (40_000_000.0, "you divided by 1e9"),
    (100e-6 / 4, "the inverse"),                         # latency / threads
    (1 / 40000, "the inverse"),
    (10000.0, "one thread's rate"),                      # forgot the threads (off by 4x)
    (50000.0, "the mean latency"),                       # used p50
    (20000.0, "Divide the number of threads"),           # off by 2x, no specific cause
    (..., "still Ellipsis: replace it with your answer"),
    (None, "still None: replace it with your answer"),
])
def test_check_littles_law_rejects(answer, hint):
    with pytest.raises(LabCheckError, match=hint):
        chk.check_littles_law(answer, _run())


def test_check_littles_law_busy_machine():
    with pytest.raises(LabCheckError, match="busy"):
        chk.check_littles_law(40000, _run(seconds=1.0))


# --------------------------------------------------------------------------- files time

def test_check_files_time_accepts():
    assert "1.7 minutes" in chk.check_files_time(100.0, 1000, 10.0)


@pytest.mark.parametrize("answer, hint", [
    (100.0 / 60, "minutes"),
    (100_000.0, "milliseconds"),
    (10.0 / 1000, "the inverse"),
    (200.0, "off by 2x"),
    (50.0, "off by 2x"),
    (123.0, "Divide the number of files"),
    (..., "still Ellipsis: replace it with your answer"),
    (math.inf, "finite"),
])
def test_check_files_time_rejects(answer, hint):
    with pytest.raises(LabCheckError, match=hint):
        chk.check_files_time(answer, 1000, 10.0)


# --------------------------------------------------------------------------- workers

def test_check_workers_needed_accepts():
    assert chk.check_workers_needed(10, 2000, 5).startswith("10 workers")
    assert chk.check_workers_needed(10.0, 2000, 5).startswith("10 workers")
    assert chk.check_workers_needed(7, 2100, 3).startswith("7 workers")   # 6.3 -> 7

@pytest.mark.parametrize("answer, target, latency, hint", [
    (6, 2100, 3, "round up \\(ceil\\)"),                # 6.3 rounded down
    (6.3, 2100, 3, "round up to an integer"),
    (10000, 2000, 5, "milliseconds"),                   # latency left in ms
    (20, 2000, 5, "off by 2x"),
    (5, 2000, 5, "off by 2x"),
    (..., 2000, 5, "still Ellipsis: replace it with your answer"),
    (3, 2000, 5, "Multiply the target rate"),
])
def test_check_workers_needed_rejects(answer, target, latency, hint):
    with pytest.raises(LabCheckError, match=hint):
        chk.check_workers_needed(answer, target, latency)


def test_check_workers_needed_inverse():
    # 1000 / latency / target, rounded up: a fraction of a worker becomes 1
    with pytest.raises(LabCheckError, match="inverse"):
        chk.check_workers_needed(1, 2000, 5)


# --------------------------------------------------------------------------- fastest load

ROWS = [{"format": "torch", "op": "save", "seconds": Samples([0.01])},
        {"format": "torch", "op": "load", "seconds": Samples([0.5])},
        {"format": "torch", "op": "load(mmap)", "seconds": Samples([0.3])},
        {"format": "safetensors", "op": "load", "seconds": Samples([0.2])}]


def test_check_fastest_load_accepts():
    assert chk.check_fastest_load(("safetensors", "load"), ROWS).startswith("safetensors load")
    assert chk.check_fastest_load(["safetensors", "load"], ROWS).startswith("safetensors")


@pytest.mark.parametrize("answer, hint", [
    (("load", "safetensors"), "Swap the two"),
    (("torch", "save"), "Saves do not count"),
    (("torch", "load"), "slowest load"),
    (("torch", "load(mmap)"), "Compare the median seconds"),
    (("onnx", "load"), "not in the table"),
    (..., "a tuple \\(format, op\\)"),
    ("safetensors", "a tuple \\(format, op\\)"),
])
def test_check_fastest_load_rejects(answer, hint):
    with pytest.raises(LabCheckError, match=hint):
        chk.check_fastest_load(answer, ROWS)


# --------------------------------------------------------------------------- fleet estimate

def test_check_fleet_estimate_accepts():
    est = fleet_load_seconds(140e9, 32, "efs")["seconds"]
    assert chk.check_fleet_estimate(est, 140e9, 32, "efs").startswith("140 GB")
    # the same function checks an EBS row, with its stated volume throughput
    ebs = fleet_load_seconds(140e9, 32, "ebs_gp3", ebs_MiBps=125)["seconds"]
    assert chk.check_fleet_estimate(ebs, 140e9, 32, "ebs_gp3", ebs_MiBps=125)


@pytest.mark.parametrize("transform, hint", [
    (lambda s: s / 60, "in minutes"),
    (lambda s: s * 1.048576, "MB and MiB are mixed"),
    (lambda s: s / 32, "every Pod reads its own copy"),
    (lambda s: s * 2, "Take the smaller"),
])
def test_check_fleet_estimate_rejects(transform, hint):
    est = fleet_load_seconds(140e9, 32, "efs")["seconds"]
    with pytest.raises(LabCheckError, match=hint):
        chk.check_fleet_estimate(transform(est), 140e9, 32, "efs")


def test_check_fleet_estimate_one_pod_alone():
    alone = fleet_load_seconds(140e9, 1, "efs")["seconds"]   # per-client cap only
    with pytest.raises(LabCheckError, match="one Pod alone"):
        chk.check_fleet_estimate(alone, 140e9, 32, "efs")
    with pytest.raises(LabCheckError, match="still Ellipsis: replace it with your answer"):
        chk.check_fleet_estimate(..., 140e9, 32, "efs")


# --------------------------------------------------------------------------- prediction rows

def test_prediction_rows():
    rows = chk.prediction_rows({"a": 10.0, "b": None}, {"a": 20.0, "b": 3.0, "c": None})
    assert rows == [["a", 10.0, 20.0, "2x"], ["b", "-", 3.0, "-"], ["c", "-", "n/a", "-"]]


def test_check_fleet_estimate_fsx_cached():
    """FSx with cached reads: the right answer passes; the disk-bound answer (2.6x slower) is
    rejected with the generic hint."""
    kw = {"fsx_capacity_TiB": 48, "fsx_cached": True}
    cached = fleet_load_seconds(140e9, 128, "fsx_lustre", **kw)["seconds"]
    assert "= " in chk.check_fleet_estimate(cached, 140e9, 128, "fsx_lustre", **kw)
    disk = fleet_load_seconds(140e9, 128, "fsx_lustre", fsx_capacity_TiB=48)["seconds"]
    with pytest.raises(LabCheckError, match="Take the smaller"):
        chk.check_fleet_estimate(disk, 140e9, 128, "fsx_lustre", **kw)
