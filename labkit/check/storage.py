"""Checks for Lab 3 (storage throughput): each gives specific feedback on one task.

Follows :mod:`labkit.check`: a check prints a success line (and returns it) when the answer
is right, and raises :class:`labkit.check.LabCheckError` (an AssertionError) saying what to
look at when it is not. Tolerances are wide where the answer comes from a noisy measurement;
deterministic parts (bytes, formulas) are checked exactly. (Lives next to
:mod:`labkit.storage`; ``labkit.check`` may re-export it as the lab's module.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from labkit.check import LabCheckError, passed
from labkit.storage import RandomReadResult, fleet_load_seconds

__all__ = ["reference_knee", "check_knee", "check_littles_law", "check_files_time",
           "check_workers_needed", "check_fastest_load", "check_fleet_estimate",
           "prediction_rows"]


def _fail(msg: str) -> None:
    raise LabCheckError(msg)


def _ok(msg: str) -> str:
    return passed(msg)


def reference_knee(rows: Sequence[Mapping], cache: str = "cold", source: str = "python",
                   fraction: float = 0.8) -> int:
    """The smallest block size whose median throughput reaches ``fraction`` of the best one
    (rows as returned by :func:`labkit.storage.sweep_block_sizes`)."""
    pts = sorted((r["block_size"], r["MBps"].median) for r in rows
                 if r["cache"] == cache and r["source"] == source)
    if not pts:
        raise ValueError(f"no rows for cache={cache!r}, source={source!r}")
    best = max(v for _, v in pts)
    return next(bs for bs, v in pts if v >= fraction * best)


def check_knee(fn: Callable[..., int], rows: Sequence[Mapping]) -> str:
    """Task 1: ``fn(rows, cache, fraction)`` must return the smallest block size reaching
    ``fraction`` of the best median throughput for that cache state."""
    for cache in sorted({r["cache"] for r in rows}):
        for fraction in (0.5, 0.8):
            want = reference_knee(rows, cache, fraction=fraction)
            got = fn(rows, cache, fraction)
            if got != want:
                _fail(f"for cache={cache!r}, fraction={fraction}: got {got}, expected {want}. "
                      f"Use only the rows with source 'python' and that cache, compare each "
                      f"row's MBps.median with fraction x the best median, and return the "
                      f"smallest block_size that reaches it.")
    return _ok("your knee finder agrees with the reference on every cache state.")


def check_littles_law(predicted_iops: float, result: RandomReadResult,
                      tolerance: float = 0.35) -> str:
    """Task 2: IOPS predicted from the mean latency and the number of reads in flight
    (Little's law: IOPS = in-flight / mean latency) must match the measurement."""
    derived = result.threads / (result.latencies_us["mean"] / 1e6)
    if abs(predicted_iops / derived - 1) > 0.02:
        _fail(f"your prediction {predicted_iops:,.0f} IOPS does not follow from the "
              f"measurement: {result.threads} read(s) in flight / mean latency "
              f"{result.latencies_us['mean']:.0f} µs = {derived:,.0f} IOPS. Divide the number "
              f"of threads by the mean latency in seconds.")
    if abs(derived / result.iops - 1) > tolerance:
        _fail(f"Little's law gives {derived:,.0f} IOPS but the run measured "
              f"{result.iops:,.0f}; the machine was probably busy (threads waiting for a "
              f"core are not reads in flight). Rerun the cell.")
    return _ok(f"{result.threads} in flight / {result.latencies_us['mean']:.0f} µs = "
               f"{derived:,.0f} IOPS; measured {result.iops:,.0f}.")


def check_files_time(estimate_s: float, n_files: int, files_per_s: float) -> str:
    """Task 3: seconds to read ``n_files`` small files at the measured ``files_per_s``."""
    want = n_files / files_per_s
    if abs(estimate_s / want - 1) > 0.01:
        _fail(f"expected n_files / files_per_s = {n_files:,} / {files_per_s:,.0f} = "
              f"{want:,.1f} s, got {estimate_s:,.1f} s.")
    return _ok(f"{want / 60:,.1f} minutes per pass over {n_files:,} files.")


def check_workers_needed(answer: int, target_per_s: float, latency_ms: float,
                         batch_overhead: float = 1.0) -> str:
    """Task 4: DataLoader workers needed so that ``target_per_s`` samples/s arrive when each
    sample waits ``latency_ms`` (each worker has one sample in flight): the smallest integer
    at or above target x latency."""
    import math

    want = math.ceil(target_per_s * latency_ms / 1000.0 * batch_overhead)
    if answer != want:
        _fail(f"each worker fetches one sample per {latency_ms} ms, i.e. "
              f"{1000 / latency_ms:,.0f} samples/s; {target_per_s:,.0f} samples/s needs "
              f"ceil({target_per_s:,.0f} x {latency_ms / 1000} s) = {want} workers, "
              f"you answered {answer}.")
    return _ok(f"{want} workers (each one adds {1000 / latency_ms:,.0f} samples/s).")


def check_fastest_load(answer: tuple[str, str], rows: Sequence[Mapping]) -> str:
    """Task 5: ``(format, op)`` of the load with the lowest median time in ``rows`` (as
    returned by :func:`labkit.storage.bench_checkpoint`; saves do not count)."""
    loads = [r for r in rows if r["op"] != "save"]
    best = min(loads, key=lambda r: r["seconds"].median)
    want = (best["format"], best["op"])
    if tuple(answer) != want:
        _fail(f"the fastest load in your run was {want} at {best['seconds'].median * 1e3:.0f} ms;"
              f" you answered {tuple(answer)}. Compare the median seconds of the rows whose op "
              f"is not 'save'.")
    return _ok(f"{want[0]} {want[1]}, {best['seconds'].median * 1e3:.0f} ms median.")


def check_fleet_estimate(seconds: float, total_bytes: float, pods: int, option: str,
                         **kwargs) -> str:
    """Task 6: a hand-derived load time must match :func:`labkit.storage.fleet_load_seconds`
    within 2 % (same bounds: the Pod's own limit or its share of the aggregate)."""
    ref = fleet_load_seconds(total_bytes, pods, option, **kwargs)
    if abs(seconds / ref["seconds"] - 1) > 0.02:
        _fail(f"{option} with {pods} Pods: expected {ref['formula']} = {ref['seconds']:,.0f} s,"
              f" got {seconds:,.0f} s. Take the smaller of the per-Pod limit and the "
              f"aggregate limit divided by the number of Pods.")
    return _ok(f"{ref['formula']} = {ref['seconds']:,.0f} s.")


def prediction_rows(predictions: Mapping[str, float | None],
                    measured: Mapping[str, float]) -> list[list]:
    """Rows ``[quantity, your prediction, measured, measured / predicted]`` for the closing
    table; predictions left as ``None`` show as ``-``, measurements that could not be taken
    (``None``, e.g. fio missing) as ``n/a``."""
    rows = []
    for key, value in measured.items():
        guess = predictions.get(key)
        if value is None:
            rows.append([key, "-" if guess is None else guess, "n/a", "-"])
            continue
        ratio = f"{value / guess:.2g}x" if guess else "-"
        rows.append([key, "-" if guess is None else guess, round(float(value), 3), ratio])
    return rows
