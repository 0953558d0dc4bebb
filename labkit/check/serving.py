"""Checks for Lab 4 (a real inference server under load): specific feedback on each task.

Follows :mod:`labkit.check`: a check prints a success line (and returns it) when the answer is
right, and raises :class:`labkit.check.LabCheckError` saying what to look at when it is not.
References are recomputed from the learner's own measurements, so the checks hold on any
machine; only arithmetic and directions are checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from labkit.check import LabCheckError, as_number, passed

__all__ = ["check_tokens_per_s", "check_speedup", "metric_value", "check_mean_batch",
           "check_refused_share", "check_bad_requests", "check_knob_map", "TRITON_VLLM_KNOBS"]


def _ok(message: str) -> str:
    passed(message)
    return message


def check_tokens_per_s(value, completion_tokens: int, seconds: float) -> str:
    """Task 1: tokens per second of one request, from its ``usage`` and the elapsed time."""
    got = as_number("tokens_per_s", value)
    want = completion_tokens / seconds
    if math.isclose(got, want, rel_tol=0.01):
        return _ok(f"{got:.0f} tokens/s for one request on its own: the baseline a batch "
                   f"has to beat.")
    if math.isclose(got, seconds / completion_tokens, rel_tol=0.01):
        raise LabCheckError("that is seconds per token; divide tokens by seconds instead.")
    if math.isclose(got, completion_tokens / (seconds * 1e3), rel_tol=0.01):
        raise LabCheckError("the time looks like it was taken in milliseconds; use seconds.")
    raise LabCheckError(f"tokens_per_s = {got:.4g}, expected {want:.4g}: "
                        f"usage['completion_tokens'] ({completion_tokens}) / elapsed seconds "
                        f"({seconds:.3f}).")


def check_speedup(value, unbatched, batched) -> str:
    """Task 2: throughput with batching on over off, at the same number of clients
    (``unbatched``/``batched`` are :class:`labkit.loadgen.LoadResult`)."""
    got = as_number("speedup", value)
    want = batched.rps / unbatched.rps
    if math.isclose(got, want, rel_tol=0.01):
        return _ok(f"{got:.1f}x the requests per second from the same CPU, with "
                   f"{unbatched.offered:g} clients: each decode step now serves many requests.")
    if math.isclose(got, 1 / want, rel_tol=0.01):
        raise LabCheckError("upside down: divide the batched throughput by the unbatched one.")
    if math.isclose(got, batched.p50_ms / unbatched.p50_ms, rel_tol=0.01) or \
            math.isclose(got, unbatched.p50_ms / batched.p50_ms, rel_tol=0.01):
        raise LabCheckError("that is a ratio of latencies; the question is about throughput "
                            "(`.rps`, successful requests per second).")
    raise LabCheckError(f"speedup = {got:.3g}, expected {want:.3g} = batched.rps "
                        f"({batched.rps:.1f}) / unbatched.rps ({unbatched.rps:.1f}).")


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of sample ``name`` (with ``labels``) in Prometheus text ``text``; 0 if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    labels = dict(labels or {})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def check_mean_batch(value, metrics_text: str) -> str:
    """Task 3: mean batch size from ``labkit_batch_size_sum`` / ``labkit_batch_size_count``."""
    got = as_number("mean_batch", value)
    total = metric_value(metrics_text, "labkit_batch_size_sum")
    count = metric_value(metrics_text, "labkit_batch_size_count")
    if count == 0:
        raise LabCheckError("the metrics show no batch yet: send some load to this server first.")
    want = total / count
    if math.isclose(got, want, rel_tol=0.01):
        return _ok(f"{got:.1f} requests per batch on average over {count:.0f} batches.")
    if math.isclose(got, count / total, rel_tol=0.01):
        raise LabCheckError("upside down: requests (the _sum) per batch (the _count).")
    if math.isclose(got, count, rel_tol=0.001) or math.isclose(got, total, rel_tol=0.001):
        raise LabCheckError("that is one of the two counters; the mean is _sum / _count.")
    raise LabCheckError(f"mean_batch = {got:.3g}, expected {want:.3g} = "
                        f"labkit_batch_size_sum ({total:.0f}) / labkit_batch_size_count "
                        f"({count:.0f}).")


def check_refused_share(value, result) -> str:
    """Task 4: the share of requests answered 429 in an open-loop overload run."""
    got = as_number("refused_share", value)
    total = len(result.statuses)
    refused = result.errors.get(429, 0)
    want = refused / total if total else math.nan
    right = math.isclose(got, want, rel_tol=0.01, abs_tol=1e-9)
    if not right and math.isclose(got, 100 * want, rel_tol=0.01) and want > 0:
        raise LabCheckError("that looks like a percentage; give a fraction between 0 and 1.")
    if not right and math.isclose(got, refused, rel_tol=0.001) and refused > 1:
        raise LabCheckError("that is the number of 429s; divide by all requests sent.")
    if not right:
        raise LabCheckError(f"refused_share = {got:.3g}, expected {want:.3g} = 429s ({refused}) "
                            f"/ requests sent ({total}).")
    five = sum(n for s, n in result.errors.items() if s >= 500)
    tail = "and no 5xx: overload became refusals, not failures" if five == 0 else \
        f"but {five} answers were 5xx: look at the server log"
    return _ok(f"{got:.0%} of the requests were refused with 429, {tail}.")


def check_bad_requests(answers: Mapping[str, object]) -> str:
    """Task 5: every bad request got a 4xx with a message (``answers``: name → httpx.Response)."""
    if not answers:
        raise LabCheckError("answers is empty: send each bad request and keep its response.")
    for name, resp in answers.items():
        status = getattr(resp, "status_code", None)
        if status is None:
            raise LabCheckError(f"{name!r}: keep the httpx response itself, got {resp!r}")
        if not 400 <= status < 500:
            raise LabCheckError(f"{name!r} got {status}; a client mistake must get a 4xx "
                                f"(422 bad field, 413 too big), never 200 or 5xx.")
        try:
            message = resp.json()["error"]["message"]
        except Exception:  # noqa: BLE001
            raise LabCheckError(f"{name!r}: the answer has no error message: {resp.text[:200]}")\
                from None
        if len(message) < 10:
            raise LabCheckError(f"{name!r}: the message {message!r} does not say what to fix.")
    return _ok(f"{len(answers)} bad requests, each refused with a 4xx and a message.")


#: the course server's knobs → (Triton dynamic_batching, vLLM engine argument)
TRITON_VLLM_KNOBS = {
    "max_batch_size": ("max_batch_size", "max_num_seqs"),
    "max_queue_delay_ms": ("max_queue_delay_microseconds", None),
    "max_queue_size": ("default_queue_policy.max_queue_size", None),
}


def check_knob_map(answer: Mapping[str, str]) -> str:
    """Task 6: which vLLM argument plays the role of the course server's ``max_batch_size``,
    and which Triton field is ``max_queue_delay_ms``."""
    expected = {"max_batch_size (vLLM)": "max_num_seqs",
                "max_queue_delay_ms (Triton)": "max_queue_delay_microseconds"}
    for key, want in expected.items():
        got = str(answer.get(key, "")).strip().lstrip("-").replace("-", "_")
        if got != want:
            hint = ("vLLM caps the running sequences per step (and, separately, the tokens per "
                    "step)" if "vLLM" in key else "Triton counts the delay in microseconds")
            raise LabCheckError(f"{key}: got {answer.get(key)!r}. {hint}.")
    return _ok("same ideas, different names: a cap on the batch, a wait to fill it.")
