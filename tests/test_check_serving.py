"""labkit.check.serving (Lab 4): every check accepts the right answer and rejects the typical
wrong ones (the inverse, milliseconds for seconds, off by 2x, the wrong row or counter, an
unfilled ``...``) with its own hint."""

import pytest

from labkit.check import LabCheckError, Passed
from labkit.check import serving as check
from labkit.serving.loadgen import LoadResult


def rejects(hint, fn, *args, **kwargs):
    with pytest.raises(LabCheckError, match=hint):
        fn(*args, **kwargs)


# -- Task 1 ------------------------------------------------------------------------------------
USAGE = {"prompt_tokens": 4, "completion_tokens": 32, "total_tokens": 36}


def test_tokens_per_s():
    ok = check.check_tokens_per_s(320.0, USAGE, 0.1)
    assert isinstance(ok, Passed) and "320 tokens/s" in ok
    assert check.check_tokens_per_s(320.0, 32, 0.1)                  # the count alone works too
    rejects("seconds per token", check.check_tokens_per_s, 0.1 / 32, USAGE, 0.1)
    rejects("milliseconds", check.check_tokens_per_s, 32 / 100, USAGE, 0.1)
    rejects("total_tokens", check.check_tokens_per_s, 360.0, USAGE, 0.1)
    rejects("prompt_tokens", check.check_tokens_per_s, 40.0, USAGE, 0.1)
    rejects(r"2\.00x the expected", check.check_tokens_per_s, 640.0, USAGE, 0.1)
    rejects("replace it with your answer", check.check_tokens_per_s, ..., USAGE, 0.1)
    rejects("finite", check.check_tokens_per_s, float("nan"), USAGE, 0.1)


# -- Task 2 ------------------------------------------------------------------------------------
def closed(clients, seconds, n=40, latency=1.0):
    return LoadResult("closed", clients, seconds, statuses=[200] * n,
                      latencies_s=[latency] * n)


RUNS = {"off": [closed(1, 4.0, latency=0.1), closed(4, 4.0, latency=0.4),
                closed(16, 4.0, latency=1.6)],
        "on": [closed(1, 3.2, latency=0.08), closed(4, 2.0, latency=0.2),
               closed(16, 1.0, latency=0.4)]}


def test_speedup():
    off, on = RUNS["off"][-1], RUNS["on"][-1]
    assert "4.0x" in check.check_speedup(4.0, off, on, RUNS)
    assert check.check_speedup(4.0, off, on)                          # runs are optional
    rejects("upside down", check.check_speedup, 0.25, off, on, RUNS)
    # with N clients in a closed loop, Little's law makes the latency ratio close to the
    # throughput ratio; they differ when clients also wait between requests
    waits = closed(16, 1.0, latency=0.5)
    rejects("ratio of latencies", check.check_speedup, 1.6 / 0.5, off, waits)
    rejects("ratio at 4 clients", check.check_speedup, 2.0, off, on, RUNS)
    rejects("ratio at 1 clients", check.check_speedup, 1.25, off, on, RUNS)
    rejects(r"2\.00x the expected", check.check_speedup, 8.0, off, on, RUNS)
    rejects("replace it with your answer", check.check_speedup, ..., off, on)


# -- Task 3 ------------------------------------------------------------------------------------
TEXT = ("# TYPE labkit_batch_size histogram\n"
        "labkit_batch_size_sum 96.0\nlabkit_batch_size_count 24.0\n"
        "# TYPE labkit_requests_total counter\n"
        'labkit_requests_total{status="200"} 7.0\nlabkit_requests_total{status="429"} 3.0\n')


def test_metric_value_reads_one_sample_by_name_and_labels():
    assert check.metric_value(TEXT, "labkit_batch_size_sum") == 96
    assert check.metric_value(TEXT, "labkit_requests_total", {"status": "429"}) == 3
    assert check.metric_value(TEXT, "labkit_requests_total", {"status": "200"}) == 7
    assert check.metric_value(TEXT, "labkit_requests_total", {"status": "504"}) == 0
    assert check.metric_value(TEXT, "labkit_missing") == 0


def test_mean_batch():
    ok = check.check_mean_batch(4.0, TEXT)
    assert isinstance(ok, Passed) and "4.0 requests per batch" in ok
    rejects("upside down", check.check_mean_batch, 0.25, TEXT)
    rejects("one of the two counters", check.check_mean_batch, 24, TEXT)
    rejects("one of the two counters", check.check_mean_batch, 96, TEXT)
    rejects("metrics_on", check.check_mean_batch, 1.0, TEXT)           # the unbatched server
    rejects(r"2\.00x the expected", check.check_mean_batch, 8.0, TEXT)
    rejects("replace it with your answer", check.check_mean_batch, ..., TEXT)
    rejects("no batch yet", check.check_mean_batch, 1.0, "labkit_batch_size_count 0.0\n")


# -- Task 5 ------------------------------------------------------------------------------------
OVER = LoadResult("open", 100, 3.0, statuses=[200] * 6 + [429] * 2)


def test_refused_share():
    ok = check.check_refused_share(0.25, OVER)
    assert isinstance(ok, Passed) and "25%" in ok and "no 5xx" in ok
    rejects("percentage", check.check_refused_share, 25, OVER)
    rejects("number of 429s", check.check_refused_share, 2, OVER)
    rejects("upside down", check.check_refused_share, 4, OVER)
    rejects("successful requests only", check.check_refused_share, 2 / 6, OVER)
    rejects("share answered 200", check.check_refused_share, 0.75, OVER)
    rejects(r"refused_share = 0\.5, expected 0\.25", check.check_refused_share, 0.5, OVER)
    rejects("replace it with your answer", check.check_refused_share, ..., OVER)
    rejects("no requests", check.check_refused_share, 0.0, LoadResult("open", 1, 1.0))
    none = LoadResult("open", 100, 3.0, statuses=[200] * 8)
    assert "0%" in check.check_refused_share(0.0, none)                # no 429 is an answer too
    failed = LoadResult("open", 100, 3.0, statuses=[200, 429, 503, 503])
    assert "2 answers were 5xx" in check.check_refused_share(0.25, failed)


# -- Task 6 ------------------------------------------------------------------------------------
class Resp:
    def __init__(self, status, message):
        self.status_code, self._m, self.text = status, message, str(message)

    def json(self):
        if self._m is None:
            raise ValueError("not JSON")
        return {"error": {"message": self._m}}


def test_bad_requests():
    good = {"a": Resp(422, "missing field 'prompt'"), "b": Resp(413, "the body is too big")}
    ok = check.check_bad_requests(good)
    assert isinstance(ok, Passed) and "2 bad requests" in ok
    rejects("dict of name", check.check_bad_requests, {})
    rejects("dict of name", check.check_bad_requests, ...)
    rejects("dict of name", check.check_bad_requests, [Resp(422, "missing field 'prompt'")])
    rejects("never 200 or 5xx", check.check_bad_requests, {"a": Resp(200, "fine, fine, fine")})
    rejects("never 200 or 5xx", check.check_bad_requests, {"a": Resp(500, "boom boom boom")})
    rejects("keep the httpx response", check.check_bad_requests, {"a": 422})
    rejects("no error message", check.check_bad_requests, {"a": Resp(422, None)})
    rejects("does not say what to fix", check.check_bad_requests, {"a": Resp(422, "bad")})


# -- Task 7 ------------------------------------------------------------------------------------
RIGHT = {"max_batch_size (vLLM)": "max_num_seqs",
         "max_queue_delay_ms (Triton)": "max_queue_delay_microseconds"}


def test_knob_map():
    assert isinstance(check.check_knob_map(RIGHT), Passed)
    assert check.check_knob_map({**RIGHT, "max_batch_size (vLLM)": "--max-num-seqs"})
    rejects("tokens per step", check.check_knob_map,
            {**RIGHT, "max_batch_size (vLLM)": "max_num_batched_tokens"})
    rejects("course server's", check.check_knob_map,
            {**RIGHT, "max_batch_size (vLLM)": "max_batch_size"})
    rejects("microseconds", check.check_knob_map,
            {**RIGHT, "max_queue_delay_ms (Triton)": "max_queue_delay_ms"})
    rejects("bounds the queue", check.check_knob_map,
            {**RIGHT, "max_queue_delay_ms (Triton)": "max_queue_size"})
    rejects("fill in the name", check.check_knob_map, {**RIGHT, "max_batch_size (vLLM)": ...})
    rejects("fill in the name", check.check_knob_map, {"max_queue_delay_ms (Triton)":
                                                        "max_queue_delay_microseconds"})
    assert check.TRITON_VLLM_KNOBS["max_batch_size"] == ("max_batch_size", "max_num_seqs")


# -- Task 8: goodput under a flood, from /metrics ----------------------------------------------
def metrics_text(success_length, success_stop, ok, refused, tokens, running=0):
    m = 'model_name="tiny-gpt",engine="0"'
    return ("# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{{m},finished_reason="length"}} {success_length}\n'
            f'vllm:request_success_total{{{m},finished_reason="stop"}} {success_stop}\n'
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total{{{m}}} {tokens}\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{{{m}}} {running}\n"
            "# TYPE labkit_requests_total counter\n"
            f'labkit_requests_total{{status="200"}} {ok}\n'
            f'labkit_requests_total{{status="429"}} {refused}\n')


BEFORE = metrics_text(100, 20, 120, 0, 3000)
AFTER = metrics_text(180, 40, 220, 4000, 6000, running=16)     # +100 ok, +4000 refused


def test_metric_sum_adds_every_label_value():
    assert check.metric_sum(AFTER, "vllm:request_success_total") == 220
    assert check.metric_sum(AFTER, "vllm:request_success_total",
                            {"finished_reason": "stop"}) == 40
    assert check.metric_sum(AFTER, "vllm:missing") == 0


def test_flood_goodput():
    ok = check.check_flood_goodput(20.0, BEFORE, AFTER, 5.0)           # 100 / 5 s
    assert isinstance(ok, Passed) and "20.0 successful requests per second" in ok
    rejects("seconds per request", check.check_flood_goodput, 0.05, BEFORE, AFTER, 5.0)
    rejects("milliseconds", check.check_flood_goodput, 0.02, BEFORE, AFTER, 5.0)
    rejects("subtract the value before", check.check_flood_goodput, 44.0, BEFORE, AFTER, 5.0)
    rejects("429s included", check.check_flood_goodput, 820.0, BEFORE, AFTER, 5.0)
    rejects("rate of refusals", check.check_flood_goodput, 800.0, BEFORE, AFTER, 5.0)
    rejects("tokens per second", check.check_flood_goodput, 600.0, BEFORE, AFTER, 5.0)
    rejects('finished_reason="length" only', check.check_flood_goodput, 16.0, BEFORE, AFTER,
            5.0)
    rejects("is a gauge", check.check_flood_goodput, 16.0 / 5.0, BEFORE, AFTER, 5.0)
    rejects(r"2\.00x the expected", check.check_flood_goodput, 40.0, BEFORE, AFTER, 5.0)
    rejects("replace it with your answer", check.check_flood_goodput, ..., BEFORE, AFTER, 5.0)
    rejects("no request succeeded", check.check_flood_goodput, 1.0, AFTER, AFTER, 5.0)
    single = (metrics_text(0, 0, 0, 0, 0), metrics_text(30, 0, 30, 900, 960), 5.0)  # 6 req/s
    rejects("other server's goodput", check.check_flood_goodput, 6.0, BEFORE, AFTER, 5.0,
            single)
    assert check.check_flood_goodput(20.0, BEFORE, AFTER, 5.0, single)
