"""Checks for Lab 3 (storage throughput): each gives specific feedback on one task.

Follows :mod:`labkit.check`: a check prints a success line (and returns it) when the answer
is right, and raises :class:`labkit.check.LabCheckError` (an AssertionError) saying what to
look at when it is not. Tolerances are wide where the answer comes from a noisy measurement;
deterministic parts (bytes, formulas) are checked exactly. :func:`prediction_rows` lives in
:mod:`labkit.check` (every lab uses it); it stays importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from labkit.check import LabCheckError, as_number, is_close, passed, prediction_rows
from labkit.storage.cited import fleet_load_seconds
from labkit.storage.randread import RandomReadResult

__all__ = ["reference_knee", "check_knee", "check_littles_law", "check_files_time",
           "check_workers_needed", "check_fastest_load", "check_fleet_estimate",
           "prediction_rows"]


def reference_knee(rows: Sequence[Mapping], cache: str = "cold", source: str = "python",
                   fraction: float = 0.8) -> int:
    """The smallest block size whose median throughput reaches ``fraction`` of the best one
    (rows as returned by :func:`labkit.storage.compare.sweep_block_sizes`)."""
    pts = sorted((r["block_size"], r["MBps"].median) for r in rows
                 if r["cache"] == cache and r["source"] == source)
    if not pts:
        raise ValueError(f"no rows for cache={cache!r}, source={source!r}")
    best = max(v for _, v in pts)
    return next(bs for bs, v in pts if v >= fraction * best)


def check_knee(fn: Callable[..., int], rows: Sequence[Mapping]) -> str:
    """Task 1: ``fn(rows, cache, fraction)`` must return the smallest block size (bytes)
    reaching ``fraction`` of the best median Python throughput for that cache state."""
    caches = sorted({r["cache"] for r in rows})
    for cache in caches:
        for fraction in (0.5, 0.8):
            want = reference_knee(rows, cache, fraction=fraction)
            try:
                got = fn(rows, cache, fraction)
            except NotImplementedError:
                raise LabCheckError("knee() still raises NotImplementedError: write its body in the cell "
                      "marked 'your answer'.")
            if got is ... or got is None:
                raise LabCheckError(f"knee(rows, {cache!r}, {fraction}) returned {got!r}; it should return "
                      f"a block size in bytes (an int).")
            if got == want:
                continue
            hint = ("Use only the rows with source 'python' and that cache, compare each row's "
                    "MBps.median with fraction x the best median, and return the smallest "
                    "block_size that reaches it.")
            block_sizes = sorted({r["block_size"] for r in rows})
            best = max((r for r in rows if r["cache"] == cache and r["source"] == "python"),
                       key=lambda r: r["MBps"].median)["block_size"]
            others = [c for c in caches if c != cache]
            if isinstance(got, (int, float)) and got * 1024 == want:
                hint = "Return the block size in bytes, not KiB."
            elif got == best and want != best:
                hint = ("That is the block size with the best throughput; the knee is the "
                        "smallest block size that reaches the fraction of the best.")
            elif any(r["source"] == "fio" for r in rows) and got == _knee_or_none(
                    rows, cache, "fio", fraction):
                hint = "That is fio's knee: use the rows whose source is 'python'."
            elif any(got == _knee_or_none(rows, c, "python", fraction) for c in others):
                hint = f"That is the knee of another cache state: keep only cache == {cache!r}."
            elif got not in block_sizes:
                hint = f"Return one of the measured block sizes {block_sizes} (bytes)."
            raise LabCheckError(f"for cache={cache!r}, fraction={fraction}: got {got}, expected {want}. {hint}")
    return passed("your knee finder agrees with the reference on every cache state.")


def _knee_or_none(rows, cache, source, fraction):
    try:
        return reference_knee(rows, cache, source, fraction)
    except ValueError:
        return None


def check_littles_law(predicted_iops: float, result: RandomReadResult,
                      tolerance: float = 0.35) -> str:
    """Task 2: IOPS predicted from the mean latency and the number of reads in flight
    (Little's law: IOPS = in-flight / mean latency) must match the measurement."""
    got = as_number("predicted_iops", predicted_iops)
    mean_us = result.latencies_us["mean"]
    derived = result.threads / (mean_us / 1e6)
    if not is_close(got, derived, 0.02):
        if is_close(got, derived / 1000, 0.02):
            hint = "The latency is in µs: divide it by 1e6 (not 1e3) to get seconds."
        elif is_close(got, derived * 1000, 0.02):
            hint = "The latency is in µs: divide it by 1e6 to get seconds (you divided by 1e9)."
        elif is_close(got, mean_us / 1e6 / result.threads, 0.02) or is_close(got, 1 / derived, 0.02):
            hint = "That is the inverse: IOPS = reads in flight / latency, not latency / reads."
        elif result.threads > 1 and is_close(got, derived / result.threads, 0.02):
            hint = (f"That is one thread's rate: multiply by the {result.threads} reads in "
                    f"flight.")
        elif "p50" in result.latencies_us and is_close(
                got, result.threads / (result.latencies_us["p50"] / 1e6), 0.02):
            hint = "Use the mean latency (Little's law holds for the mean), not the median."
        else:
            hint = "Divide the number of threads by the mean latency in seconds."
        raise LabCheckError(f"your prediction {got:,.0f} IOPS does not follow from the measurement: "
              f"{result.threads} read(s) in flight / mean latency {mean_us:.0f} µs = "
              f"{derived:,.0f} IOPS. {hint}")
    if abs(derived / result.iops - 1) > tolerance:
        raise LabCheckError(f"Little's law gives {derived:,.0f} IOPS but the run measured "
              f"{result.iops:,.0f}; the machine was probably busy (threads waiting for a "
              f"core are not reads in flight). Rerun the cell.")
    return passed(f"{result.threads} in flight / {mean_us:.0f} µs = "
               f"{derived:,.0f} IOPS; measured {result.iops:,.0f}.")


def check_files_time(estimate_s: float, n_files: int, files_per_s: float) -> str:
    """Task 3: seconds to read ``n_files`` small files at the measured ``files_per_s``."""
    got = as_number("epoch_seconds", estimate_s)
    want = n_files / files_per_s
    if not is_close(got, want, 0.01):
        if is_close(got, want / 60, 0.01):
            hint = "That is in minutes; the answer is in seconds."
        elif is_close(got, want * 1000, 0.01):
            hint = "That is in milliseconds; the answer is in seconds."
        elif is_close(got, files_per_s / n_files, 0.01):
            hint = "That is the inverse: seconds = files / (files per second)."
        elif is_close(got, 2 * want, 0.01) or is_close(got, want / 2, 0.01):
            hint = "That is off by 2x: one pass reads each file once."
        else:
            hint = "Divide the number of files by the files per second."
        raise LabCheckError(f"expected n_files / files_per_s = {n_files:,} / {files_per_s:,.0f} = "
              f"{want:,.1f} s, got {got:,.1f} s. {hint}")
    return passed(f"{want / 60:,.1f} minutes per pass over {n_files:,} files.")


def check_workers_needed(answer: int, target_per_s: float, latency_ms: float,
                         batch_overhead: float = 1.0) -> str:
    """Task 4: DataLoader workers needed so that ``target_per_s`` samples/s arrive when each
    sample waits ``latency_ms`` (each worker has one sample in flight): the smallest integer
    at or above target x latency."""
    import math

    got = as_number("workers_needed", answer)
    exact = target_per_s * latency_ms / 1000.0 * batch_overhead
    want = math.ceil(exact - 1e-9)
    if got != want:
        if got != int(got):
            hint = "Workers are whole processes: round up to an integer."
        elif got == math.floor(exact) and want != got:
            hint = f"{got} workers deliver less than the target: round up (ceil), not down."
        elif is_close(got, exact * 1000, 0.01):
            hint = "The latency is in milliseconds: divide it by 1000 to get seconds."
        elif is_close(got, want * 2, 0.01) or is_close(got, want / 2, 0.01):
            hint = "That is off by 2x: each worker has exactly one sample in flight."
        elif exact and (is_close(got, 1 / exact, 0.01)
                        or is_close(got, math.ceil(1000 / latency_ms / target_per_s), 0.01)):
            hint = "That is the inverse: workers = target rate x latency."
        else:
            hint = "Multiply the target rate by the latency in seconds, then round up."
        raise LabCheckError(f"each worker fetches one sample per {latency_ms} ms, i.e. "
              f"{1000 / latency_ms:,.0f} samples/s; {target_per_s:,.0f} samples/s needs "
              f"ceil({target_per_s:,.0f} x {latency_ms / 1000} s) = {want} workers, "
              f"you answered {answer}. {hint}")
    return passed(f"{want} workers (each one adds {1000 / latency_ms:,.0f} samples/s).")


def check_fastest_load(answer: tuple[str, str], rows: Sequence[Mapping]) -> str:
    """Task 5: ``(format, op)`` of the load with the lowest median time in ``rows`` (as
    returned by :func:`labkit.storage.checkpoints.bench_checkpoint`; saves do not count)."""
    if not isinstance(answer, (tuple, list)) or len(answer) != 2 or not all(
            isinstance(a, str) for a in answer):
        raise LabCheckError(f"fastest_warm_load should be a tuple (format, op) of two strings, e.g. "
              f"('torch', 'load'); got {answer!r}.")
    loads = [r for r in rows if r["op"] != "save"]
    best = min(loads, key=lambda r: r["seconds"].median)
    want = (best["format"], best["op"])
    got = tuple(answer)
    if got != want:
        pairs = {(r["format"], r["op"]) for r in rows}
        if got[::-1] == want:
            hint = "Swap the two: the format comes first, then the operation."
        elif got[1] == "save":
            hint = "Saves do not count: compare only the rows whose op is not 'save'."
        elif got not in pairs:
            hint = f"That pair is not in the table; the rows are {sorted(pairs)}."
        elif got == (lambda r: (r["format"], r["op"]))(
                max(loads, key=lambda r: r["seconds"].median)):
            hint = "That is the slowest load: take the lowest median time."
        else:
            hint = "Compare the median seconds of the rows whose op is not 'save'."
        raise LabCheckError(f"the fastest load in your run was {want} at "
              f"{best['seconds'].median * 1e3:.0f} ms; you answered {got}. {hint}")
    return passed(f"{want[0]} {want[1]}, {best['seconds'].median * 1e3:.0f} ms median.")


def check_fleet_estimate(seconds: float, total_bytes: float, pods: int, option: str,
                         **kwargs) -> str:
    """Task 6: a hand-derived load time must match :func:`labkit.storage.cited.fleet_load_seconds`
    within 2 % (same bounds: the Pod's own limit or its share of the aggregate)."""
    got = as_number("efs_32_seconds", seconds)
    ref = fleet_load_seconds(total_bytes, pods, option, **kwargs)
    want = ref["seconds"]
    if not is_close(got, want, 0.02):
        own = fleet_load_seconds(total_bytes, 1, option, **kwargs)["seconds"]
        if is_close(got, want / 60, 0.02):
            hint = "That is in minutes; the answer is in seconds."
        elif is_close(got, want * 1.048576, 0.02) or is_close(got, want / 1.048576, 0.02):
            hint = ("MB and MiB are mixed: 1 MiB/s = 1.048576 MB/s, and the checkpoint is "
                    "140 GB = 140e9 bytes.")
        elif is_close(got, own, 0.02) and pods > 1:
            hint = ("That is one Pod alone: with all Pods loading at once, each gets its "
                    "share of the file system's throughput.")
        elif is_close(got, want / pods, 0.02):
            hint = ("That is the time for one checkpoint at the whole file system's "
                    "throughput: every Pod reads its own copy, so divide the throughput by "
                    "the number of Pods.")
        else:
            hint = ("Take the smaller of the per-Pod limit and the aggregate limit divided by "
                    "the number of Pods.")
        raise LabCheckError(f"{option} with {pods} Pods: expected {ref['formula']} = {want:,.0f} s, got "
              f"{got:,.0f} s. {hint}")
    return passed(f"{ref['formula']} = {want:,.0f} s.")


