"""Checks for Lab 4 (a real inference server under load): specific feedback on each task.

Follows :mod:`labkit.check`: a check prints a success line (and returns it) when the answer is
right, and raises :class:`labkit.check.LabCheckError` saying what to look at when it is not.
References are recomputed from the learner's own measurements, so the checks hold on any
machine; only arithmetic and directions are checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from labkit.check import (LabCheckError, as_number, is_close, off_by, passed,
                          rate_is_right)
from labkit.serving.metrics import metric_sum, metric_value

__all__ = ["check_tokens_per_s", "check_speedup", "metric_value", "metric_sum",
           "check_mean_batch", "check_refused_share", "check_bad_requests", "check_knob_map",
           "check_flood_goodput", "TRITON_VLLM_KNOBS"]


def check_tokens_per_s(value, usage, seconds: float) -> str:
    """Task 1: tokens per second of one request, from its ``usage`` and the elapsed time.

    ``usage`` is the answer's ``usage`` dict (or just its ``completion_tokens``); with the
    dict, counting the prompt's tokens too is recognised.
    """
    got = as_number("tokens_per_s", value)
    seconds = as_number("seconds", seconds)
    fields = dict(usage) if isinstance(usage, Mapping) else {"completion_tokens": usage}
    completion_tokens = fields["completion_tokens"]
    want = completion_tokens / seconds
    if rate_is_right(got, completion_tokens, seconds,
                     "that is seconds per token; divide tokens by seconds instead."):
        return passed(f"{got:.0f} tokens/s for one request on its own: the baseline a batch "
                      f"has to beat.")
    for name in ("total_tokens", "prompt_tokens"):
        if name in fields and fields[name] != completion_tokens \
                and is_close(got, fields[name] / seconds):
            raise LabCheckError(f"that counts usage['{name}']; only the generated tokens, "
                                f"usage['completion_tokens'], were produced by decoding.")
    raise LabCheckError(f"tokens_per_s = {got:.4g}, expected {want:.4g}{off_by(got, want)}: "
                        f"usage['completion_tokens'] ({completion_tokens}) / elapsed seconds "
                        f"({seconds:.3f}).")


def check_speedup(value, unbatched, batched, runs: Mapping | None = None) -> str:
    """Task 2: throughput with batching on over off, at the same number of clients
    (``unbatched``/``batched`` are ``labkit.serving.loadgen.LoadResult``). ``runs`` (optional,
    ``{"off": [...], "on": [...]}``, one result per client count) lets it recognise a ratio
    taken at another client count."""
    got = as_number("speedup", value)
    want = batched.rps / unbatched.rps
    if is_close(got, want):
        return passed(f"{got:.1f}x the requests per second from the same CPU, with "
                   f"{unbatched.offered:g} clients: each decode step now serves many requests.")
    if is_close(got, 1 / want):
        raise LabCheckError("upside down: divide the batched throughput by the unbatched one.")
    if is_close(got, batched.p50_ms / unbatched.p50_ms) or \
            is_close(got, unbatched.p50_ms / batched.p50_ms):
        raise LabCheckError("that is a ratio of latencies; the question is about throughput "
                            "(`.rps`, successful requests per second).")
    pairs = zip(runs["off"], runs["on"]) if runs else ()
    for off, on in pairs:
        if off is not unbatched and is_close(got, on.rps / off.rps):
            raise LabCheckError(f"that is the ratio at {off.offered:g} clients; take the "
                                f"{unbatched.offered:g}-client runs (the last of each list).")
    raise LabCheckError(f"speedup = {got:.3g}, expected {want:.3g}{off_by(got, want)} = "
                        f"batched.rps ({batched.rps:.1f}) / unbatched.rps "
                        f"({unbatched.rps:.1f}).")


def check_mean_batch(value, metrics_text: str) -> str:
    """Task 3: mean batch size from ``labkit_batch_size_sum`` / ``labkit_batch_size_count``."""
    got = as_number("mean_batch", value)
    total = metric_value(metrics_text, "labkit_batch_size_sum")
    count = metric_value(metrics_text, "labkit_batch_size_count")
    if count == 0:
        raise LabCheckError("the metrics show no batch yet: send some load to this server first.")
    want = total / count
    if is_close(got, want):
        return passed(f"{got:.1f} requests per batch on average over {count:.0f} batches.")
    if is_close(got, count / total):
        raise LabCheckError("upside down: requests (the _sum) per batch (the _count).")
    if is_close(got, count, 0.001) or is_close(got, total, 0.001):
        raise LabCheckError("that is one of the two counters; the mean is _sum / _count.")
    if got == 1:
        raise LabCheckError("1 request per batch is what the server without batching shows: "
                            "read the batching server's metrics (metrics_on).")
    raise LabCheckError(f"mean_batch = {got:.3g}, expected {want:.3g}{off_by(got, want)} = "
                        f"labkit_batch_size_sum ({total:.0f}) / labkit_batch_size_count "
                        f"({count:.0f}).")


def check_refused_share(value, result) -> str:
    """Task 5: the share of requests answered 429 in an open-loop overload run."""
    got = as_number("refused_share", value)
    total = len(result.statuses)
    refused = result.errors.get(429, 0)
    if not total:
        raise LabCheckError("the run has no requests: run the overload cell first.")
    want = refused / total
    ok = result.statuses.count(200)
    right = math.isclose(got, want, rel_tol=0.01, abs_tol=1e-9)
    if not right and is_close(got, 100 * want) and want > 0:
        raise LabCheckError("that looks like a percentage; give a fraction between 0 and 1.")
    if not right and is_close(got, refused, 0.001) and refused > 1:
        raise LabCheckError("that is the number of 429s; divide by all requests sent.")
    if not right and refused and is_close(got, total / refused):
        raise LabCheckError("upside down: the 429s over all requests sent.")
    if not right and ok and refused and is_close(got, refused / ok):
        raise LabCheckError("that divides by the successful requests only; divide by all "
                            "requests sent (len(overload.statuses)).")
    if not right and ok and is_close(got, ok / total):
        raise LabCheckError("that is the share answered 200; the question is the share "
                            "refused with 429.")
    if not right:
        raise LabCheckError(f"refused_share = {got:.3g}, expected {want:.3g} = 429s ({refused}) "
                            f"/ requests sent ({total}).")
    five = sum(n for s, n in result.errors.items() if s >= 500)
    tail = "and no 5xx: overload became refusals, not failures" if five == 0 else \
        f"but {five} answers were 5xx: look at the server log"
    return passed(f"{got:.0%} of the requests were refused with 429, {tail}.")


def check_bad_requests(answers: Mapping[str, object]) -> str:
    """Task 6: every bad request got a 4xx with a message (``answers``: name → httpx.Response)."""
    if not isinstance(answers, Mapping) or not answers:
        raise LabCheckError(f"answers should be a dict of name -> response, one per bad "
                            f"request; got {answers!r}.")
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
    return passed(f"{len(answers)} bad requests, each refused with a 4xx and a message.")


def check_flood_goodput(value, before: str, after: str, seconds: float,
                        other: tuple[str, str, float] | None = None) -> str:
    """Task 8: goodput during a flood, read from the server's ``/metrics``: successful
    requests per second = the increase of ``vllm:request_success_total`` (summed over its
    ``finished_reason`` values) between the texts ``before`` and ``after`` the flood, divided
    by the flood's ``seconds``. ``other`` (optional): ``(before, after, seconds)`` of the other
    server, to recognise its goodput given for this one."""
    got = as_number("goodput", value)
    seconds = as_number("seconds", seconds)

    def delta(name, labels=None):
        return metric_sum(after, name, labels) - metric_sum(before, name, labels)

    done = delta("vllm:request_success_total")
    if done <= 0:
        raise LabCheckError("no request succeeded between the two readings: take `before` "
                            "just before the flood and `after` just after it.")
    want = done / seconds
    if rate_is_right(got, done, seconds,
                     "that is seconds per request; divide the requests by the seconds."):
        return passed(f"{got:.1f} successful requests per second while the flood lasted, read "
                      f"from the server's own counter.")
    if is_close(got, metric_sum(after, "vllm:request_success_total") / seconds):
        raise LabCheckError("a counter counts since the server started: subtract the value "
                            "before the flood from the value after it.")
    status = "labkit_requests_total"
    if is_close(got, delta(status) / seconds):
        raise LabCheckError("labkit_requests_total counts every answer, the 429s included; "
                            "goodput counts the successful ones (vllm:request_success_total).")
    if is_close(got, delta(status, {"status": "429"}) / seconds):
        raise LabCheckError("that is the rate of refusals (429); goodput is the rate of "
                            "successful requests.")
    if is_close(got, delta("vllm:generation_tokens_total") / seconds):
        raise LabCheckError("that is tokens per second (vllm:generation_tokens_total); the "
                            "question is requests per second.")
    for reason in ("length", "stop"):
        part = delta("vllm:request_success_total", {"finished_reason": reason})
        if part != done and is_close(got, part / seconds):
            raise LabCheckError(f"that counts finished_reason=\"{reason}\" only; sum the "
                                f"counter over every finished_reason.")
    if other is not None:
        o_before, o_after, o_seconds = other
        o_done = metric_sum(o_after, "vllm:request_success_total") - \
            metric_sum(o_before, "vllm:request_success_total")
        if o_seconds and is_close(got, o_done / o_seconds):
            raise LabCheckError("that is the other server's goodput; take this server's "
                                "before and after texts.")
    running = metric_sum(after, "vllm:num_requests_running")
    if running and (is_close(got, running) or is_close(got, running / seconds)):
        raise LabCheckError("vllm:num_requests_running is a gauge, a snapshot of one moment; "
                            "count finished requests with the counter "
                            "vllm:request_success_total.")
    raise LabCheckError(f"goodput = {got:.4g}, expected {want:.4g}{off_by(got, want)} = "
                        f"increase of vllm:request_success_total ({done:.0f}) / seconds "
                        f"({seconds:.2f}).")


#: the course server's knobs → (Triton dynamic_batching, vLLM engine argument)
TRITON_VLLM_KNOBS = {
    "max_batch_size": ("max_batch_size", "max_num_seqs"),
    "max_queue_delay_ms": ("max_queue_delay_microseconds", None),
    "max_queue_size": ("default_queue_policy.max_queue_size", None),
}


def check_knob_map(answer: Mapping[str, str]) -> str:
    """Task 7: which vLLM argument plays the role of the course server's ``max_batch_size``,
    and which Triton field is ``max_queue_delay_ms``."""
    expected = {"max_batch_size (vLLM)": "max_num_seqs",
                "max_queue_delay_ms (Triton)": "max_queue_delay_microseconds"}
    specific = {"max_num_batched_tokens": "that caps the tokens per step (prefill chunks "
                                          "included), not the sequences that decode together",
                "max_batch_size": "that is the course server's (and Triton's) name; vLLM "
                                  "calls the cap on running sequences differently",
                "max_queue_delay_ms": "that is the course server's name; Triton's field is "
                                      "in microseconds",
                "max_queue_size": "that bounds the queue, not the wait for a batch to fill"}
    for key, want in expected.items():
        raw = answer.get(key, "")
        if raw is ... or raw is None or str(raw).strip() == "":
            raise LabCheckError(f"{key}: fill in the name (a string), got {raw!r}.")
        got = str(raw).strip().lstrip("-").replace("-", "_")
        if got != want:
            hint = specific.get(got) or (
                "vLLM caps the running sequences per step (and, separately, the tokens per "
                "step)" if "vLLM" in key else "Triton counts the delay in microseconds")
            raise LabCheckError(f"{key}: got {raw!r}. {hint}.")
    return passed("same ideas, different names: a cap on the batch, a wait to fill it.")
