"""Checks for Lab 1 (small-model inference): each gives specific feedback on one task.

Follows :mod:`labkit.check`: a check prints a success line (and returns it) when the answer
is right, and raises :class:`labkit.check.LabCheckError` (an AssertionError) saying what to
look at when it is not. Every reference is recomputed from the learner's own measurements
(the :class:`labkit.inference.generation.GenerationTimings` or benchmark dict they pass in), so the checks
hold on any machine; only the arithmetic is checked tightly.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from labkit.check import LabCheckError, as_number, passed
from labkit.planning.catalog import gpu_bandwidth_GBps  # noqa: F401  (Lab 1 reads it from here)

__all__ = ["answer_time", "check_answer_time", "check_prefill_ratio", "kv_slope_ms",
           "check_kv_slope", "reference_batch", "check_batch_choice", "check_roofline",
           "gpu_bandwidth_GBps", "gpu_roofline_tok_s", "check_gpu_rooflines"]


def answer_time(timings, n_tokens: int) -> float:
    """Seconds until an answer of ``n_tokens`` tokens is complete: the time to first token,
    then ``n_tokens - 1`` decode steps at the measured time per output token."""
    return timings.ttft_s + (n_tokens - 1) * timings.tpot_s


def check_answer_time(seconds, timings, n_tokens: int = 200) -> str:
    """Task 1: how long a user waits for a whole answer of ``n_tokens`` tokens."""
    value = as_number("answer_seconds", seconds)
    want = answer_time(timings, n_tokens)
    if math.isclose(value, want, rel_tol=1e-3):
        return passed(f"{value:.2f} s for {n_tokens} tokens, of which {timings.ttft_s:.2f} s before "
                   f"the first one: the user reads the answer as it streams.")
    if math.isclose(value, timings.ttft_s + n_tokens * timings.tpot_s, rel_tol=0.005):
        return passed(f"{value:.2f} s: close enough (strictly the first token comes with the "
                   f"prefill, so it is ttft + {n_tokens - 1} x tpot = {want:.2f} s).")
    if any(math.isclose(value, k * timings.tpot_s, rel_tol=0.005) for k in (n_tokens,
                                                                           n_tokens - 1)):
        raise LabCheckError(f"{value:.2f} s leaves out the time to first token "
                            f"({timings.ttft_s * 1e3:.0f} ms): the prompt is processed first.")
    if math.isclose(value / 1e3, want, rel_tol=0.005):
        raise LabCheckError(f"{value:.4g} looks like milliseconds; give the answer in seconds.")
    raise LabCheckError(f"answer_seconds = {value:.4g}, expected about {want:.4g} s: the first "
                        f"token after ttft_s ({timings.ttft_s:.3f} s), then one decode step of "
                        f"tpot_s ({timings.tpot_s:.4f} s) for each further token.")

def check_prefill_ratio(ratio, timings) -> str:
    """Task 2: prompt tokens processed per second in the prefill divided by tokens produced
    per second in the decode (one sequence)."""
    value = as_number("prefill_vs_decode", ratio)
    want = timings.prefill_tok_s / timings.decode_tok_s
    if math.isclose(value, 1 / want, rel_tol=0.02):
        raise LabCheckError(f"{value:.3g} is the inverse: divide the prefill rate by the "
                            f"decode rate (prefill_tok_s / decode_tok_s).")
    if not math.isclose(value, want, rel_tol=0.02):
        raise LabCheckError(f"prefill_vs_decode = {value:.3g}, expected {want:.3g} "
                            f"(prefill {timings.prefill_tok_s:.0f} tok/s / decode "
                            f"{timings.decode_tok_s:.1f} tok/s). Use the timings of the long "
                            f"prompt's run.")
    return passed(f"the prefill handles {want:.0f}x more tokens per second than the decode: it "
               f"reads the weights once for all prompt tokens, the decode once per token.")


def kv_slope_ms(timings) -> float:
    """Least-squares slope of decode-step time (ms) against position (tokens)."""
    xs, ys = list(timings.positions), [s * 1e3 for s in timings.step_s]
    if len(xs) < 2:
        raise ValueError("need at least 2 decode steps to fit a slope")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    covariance = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return covariance / sum((x - mx) ** 2 for x in xs)


def check_kv_slope(slope_ms_per_token, off_timings, on_timings) -> str:
    """Task 3: how many ms each extra token of context adds to a decode step with the cache
    off (a straight-line fit of step time against position)."""
    value = as_number("slope_ms_per_token", slope_ms_per_token)
    want = kv_slope_ms(off_timings)
    flat = kv_slope_ms(on_timings)
    tolerance = max(0.15 * abs(want), 0.05)

    def near(x: float) -> bool:
        return abs(value - x) <= max(0.15 * abs(x), 1e-9)

    if abs(value - want) > tolerance and near(want / 1e3):
        raise LabCheckError(f"{value:.3g} looks like seconds per token: convert step_s to "
                            f"milliseconds (x 1000) before fitting.")
    if abs(value - want) > tolerance and abs(value - flat) <= max(0.15 * abs(flat), 0.02):
        raise LabCheckError(f"{value:.3g} ms/token is the slope of the cache-*on* run; fit the "
                            f"cache-off steps (cache_off.positions, cache_off.step_s).")
    off_ms = [t * 1e3 for t in off_timings.step_s]
    intercept = statistics.fmean(off_ms) - want * statistics.fmean(off_timings.positions)
    if abs(value - want) > tolerance and near(intercept):
        raise LabCheckError(f"{value:.3g} is the intercept of the line, not its slope: "
                            f"numpy.polyfit(x, y, 1) returns [slope, intercept].")
    if abs(value - want) > tolerance:
        raise LabCheckError(f"slope = {value:.3g} ms/token, the least-squares fit of the "
                            f"cache-off steps gives {want:.3g}. Fit step_s (converted to ms) "
                            f"against positions, e.g. numpy.polyfit(x, y, 1)[0].")
    return passed(f"without the cache each extra token of context adds {want:.2f} ms to every "
               f"step (with it: {flat:+.3f} ms): recomputing the prefix grows with its length.")


def reference_batch(rows: Sequence[Mapping], max_latency_ms: float) -> int:
    """The batch size with the highest throughput among those whose median step latency is
    within ``max_latency_ms`` (rows: ``batch``, ``step_ms``, ``tok_s``)."""
    ok = [r for r in rows if r["step_ms"] <= max_latency_ms]
    if not ok:
        raise ValueError(f"no batch size meets {max_latency_ms} ms per step")
    return max(ok, key=lambda r: r["tok_s"])["batch"]


def check_batch_choice(batch, rows: Sequence[Mapping], max_latency_ms: float) -> str:
    """Task 4: the batch size that gives the most tokens per second while every request still
    gets a token at least every ``max_latency_ms``."""
    want = reference_batch(rows, max_latency_ms)
    by_batch = {r["batch"]: r for r in rows}
    if isinstance(batch, Mapping):
        raise LabCheckError("that is a whole row; store its batch size, e.g. row['batch'].")
    if isinstance(batch, bool) or not isinstance(batch, (int, float)) or batch not in by_batch:
        raise LabCheckError(f"{batch!r} is not one of the measured batch sizes "
                            f"{sorted(by_batch)}")
    row = by_batch[batch]
    if row["step_ms"] > max_latency_ms:
        raise LabCheckError(f"batch {batch} takes {row['step_ms']:.0f} ms per step, over the "
                            f"{max_latency_ms:.0f} ms budget: every request in the batch waits "
                            f"for the whole step.")
    if batch != want:
        raise LabCheckError(f"batch {batch} meets the budget, but batch {want} does too and "
                            f"gives more tokens/s ({by_batch[want]['tok_s']:.0f} vs "
                            f"{row['tok_s']:.0f}). Among the rows within budget, take the one "
                            f"with the highest tok_s.")
    return passed(f"batch {want}: {row['tok_s']:.0f} tok/s in all at {row['step_ms']:.0f} ms per "
               f"step, {row['tok_s'] / by_batch[min(by_batch)]['tok_s']:.1f}x the throughput of "
               f"batch {min(by_batch)}.")


def check_roofline(roofline_tok_s, result: Mapping) -> str:
    """Task 5: the roofline from the measured bandwidth and the bytes read per token
    (``result`` is the dict of :func:`labkit.inference.decode_bench.decode_benchmark`)."""
    value = as_number("roofline_tok_s", roofline_tok_s)
    want = result["batch_size"] * result["bandwidth_GBps"] * 1e9 / result["weight_bytes"]
    if math.isclose(value, want / 1e9, rel_tol=0.02) or math.isclose(value, want * 1e9,
                                                                     rel_tol=0.02):
        raise LabCheckError("off by a factor of 10^9: bandwidth_GBps is in GB/s, multiply it "
                            "by 1e9 to get bytes/s before dividing by weight_bytes.")
    if math.isclose(value, want * 4, rel_tol=0.02) or math.isclose(value, want / 4,
                                                                   rel_tol=0.02):
        raise LabCheckError("off by 4x: weight_bytes already counts 4 bytes per fp32 "
                            "parameter; divide bytes/s by it directly.")
    if math.isclose(value, 1 / want, rel_tol=0.02):
        raise LabCheckError(f"{value:.3g} is seconds per token (bytes / bandwidth), the "
                            f"inverse: the roofline is bandwidth / bytes, in tokens per second.")
    if math.isclose(value, want * 8, rel_tol=0.02) or math.isclose(value, want / 8,
                                                                   rel_tol=0.02):
        raise LabCheckError("off by 8x: both the bandwidth and weight_bytes are in bytes; "
                            "do not convert to bits.")
    if not math.isclose(value, want, rel_tol=0.02):
        raise LabCheckError(f"roofline_tok_s = {value:.3g}, expected {want:.3g}: bandwidth "
                            f"(bytes/s) / bytes read per token.")
    pct = 100 * result["decode_tok_s"] / want
    return passed(f"roofline {want:.1f} tok/s; the decode loop reached {pct:.0f} % of it.")


def gpu_roofline_tok_s(name: str, weight_bytes: float) -> float:
    """Batch-1 decode roofline on accelerator ``name``: bandwidth / bytes read per token."""
    bandwidth, _ = gpu_bandwidth_GBps(name)
    return bandwidth * 1e9 / weight_bytes


def check_gpu_rooflines(answers: Mapping[str, float], weight_bytes: float,
                        gpus: Sequence[str] | None = None) -> str:
    """Task 6: ``{accelerator: roofline tok/s}`` for a model whose decode reads
    ``weight_bytes`` per token (batch 1). ``gpus``, when given, are the names the answer
    must cover, no more and no fewer."""
    if not isinstance(answers, Mapping) or not answers:
        raise LabCheckError("answers should be a dict such as {'L4': 20.0, ...}: one "
                            "roofline in tokens/s per GPU name")
    if gpus is not None and set(answers) != set(gpus):
        missing, extra = sorted(set(gpus) - set(answers)), sorted(set(answers) - set(gpus))
        raise LabCheckError(f"the dict should have one entry per GPU in {list(gpus)}"
                            + (f"; missing {missing}" if missing else "")
                            + (f"; not asked for {extra}" if extra else ""))
    lines = []
    for name, value in answers.items():
        number = as_number(f"answers[{name!r}]", value)
        try:
            bandwidth, source = gpu_bandwidth_GBps(name)
        except ValueError as err:
            raise LabCheckError(f"{name!r}: {err}") from None
        want = bandwidth * 1e9 / weight_bytes
        if math.isclose(number, want, rel_tol=0.02):
            lines.append(f"{name} {want:.0f}")
            continue
        if math.isclose(number, want / 1e9, rel_tol=0.02):
            raise LabCheckError(f"{name}: off by 10^9: the bandwidth is in GB/s; multiply by "
                                f"1e9 to get bytes/s before dividing by the bytes per token.")
        if math.isclose(number, 1 / want, rel_tol=0.02):
            raise LabCheckError(f"{name}: {number:.3g} is seconds per token, the inverse: "
                                f"divide the bandwidth (bytes/s) by the bytes per token.")
        for other in answers:
            if other != name:
                try:
                    other_want = gpu_roofline_tok_s(other, weight_bytes)
                except ValueError:
                    continue
                if math.isclose(number, other_want, rel_tol=0.02):
                    raise LabCheckError(f"{name}: {number:.3g} tok/s is the {other}'s "
                                        f"roofline; use the {name}'s own bandwidth.")
        raise LabCheckError(f"{name}: {number:.3g} tok/s, expected {want:.3g}: "
                            f"{bandwidth:g} GB/s ({source}) x 1e9 / {weight_bytes:.3g} "
                            f"bytes per token.")
    return passed("rooflines (tok/s, batch 1): " + ", ".join(lines) + ".")
