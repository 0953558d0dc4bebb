"""Tests of labkit.serve (the inference server) and labkit.loadgen (its load generator).

Most tests talk to the app in-process through FastAPI's TestClient with the tiny model; one
test starts the real server as a subprocess on 127.0.0.1 and loads it.
"""

import asyncio
import json
import os
import signal
import threading

import pytest

pytest.importorskip("fastapi")

from labkit import loadgen, serve  # noqa: E402
from labkit.models import load_tiny_gpt  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def model():
    return load_tiny_gpt()


def client_for(model, **config):
    from fastapi.testclient import TestClient

    return TestClient(serve.create_app(serve.ServerConfig(**config), model=model))


@pytest.fixture(scope="module")
def client(model):
    with client_for(model) as c:
        yield c


def post(client, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/v1/completions", content=data,
                       headers={"content-type": "application/json"}, **kw)

def post_concurrently(client, body: dict, n: int) -> list[int]:
    """Send ``body`` ``n`` times at once, from ``n`` threads; return the status codes."""
    statuses = []

    def call():
        statuses.append(post(client, body).status_code)
    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses



# -- endpoints --------------------------------------------------------------------------------
def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "tiny-gpt"


def test_not_ready_while_loading(client):
    batcher = client.app.state.batcher
    lm, batcher.model = batcher.model, None
    try:
        assert client.get("/readyz").status_code == 503
        r = post(client, {"prompt": "The pod"})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
    finally:
        batcher.model = lm
    assert client.get("/readyz").status_code == 200


def test_completion_matches_the_model(client, model):
    r = post(client, {"prompt": "The pod", "max_tokens": 8})
    assert r.status_code == 200
    body = r.json()
    want = model.generate("The pod", 8).text
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == want
    assert body["choices"][0]["finish_reason"] in ("length", "stop")
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(model.encode("The pod"))
    assert 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_sampling_with_seed_is_reproducible(client):
    body = {"prompt": "A node", "max_tokens": 12, "temperature": 1.0, "seed": 3}
    assert post(client, body).json()["choices"][0]["text"] == \
        post(client, body).json()["choices"][0]["text"]


def test_streaming_sends_events_then_done(client):
    plain = post(client, {"prompt": "The pod", "max_tokens": 10}).json()["choices"][0]["text"]
    with client.stream("POST", "/v1/completions",
                       json={"prompt": "The pod", "max_tokens": 10, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(e["choices"][0]["text"] for e in events) == plain
    assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


def test_metrics_are_prometheus_text(client):
    post(client, {"prompt": "The pod", "max_tokens": 4})
    text = client.get("/metrics").text
    for name in ("labkit_requests_total", "labkit_request_latency_seconds_bucket",
                 "labkit_time_to_first_token_seconds_count", "labkit_queue_depth",
                 "labkit_batch_size_bucket", "labkit_generated_tokens_total",
                 "labkit_tokens_per_second", "labkit_requests_in_flight",
                 "process_resident_memory_bytes"):
        assert name in text, name
    assert 'labkit_requests_total{status="200"}' in text


# -- malformed requests: every one gets a 4xx with a message -----------------------------------
BAD = [
    (b"this is not json", 422, "not valid JSON"),
    (b"", 422, "not valid JSON"),
    (b"\xff\xfe", 422, "not valid JSON"),
    ([1, 2], 422, "JSON object"),
    ({}, 422, "missing field 'prompt'"),
    ({"max_tokens": 4}, 422, "missing field 'prompt'"),
    ({"prompt": 42}, 422, "'prompt' must be a string"),
    ({"prompt": ["a", "b"]}, 422, "'prompt' must be a string"),
    ({"prompt": None}, 422, "'prompt' must be a string"),
    ({"prompt": ""}, 422, "'prompt' is empty"),
    ({"prompt": "hi", "max_tokens": "8"}, 422, "'max_tokens' must be an integer"),
    ({"prompt": "hi", "max_tokens": 8.5}, 422, "'max_tokens' must be an integer"),
    ({"prompt": "hi", "max_tokens": True}, 422, "'max_tokens' must be an integer"),
    ({"prompt": "hi", "max_tokens": 0}, 422, "between 1 and"),
    ({"prompt": "hi", "max_tokens": -5}, 422, "between 1 and"),
    ({"prompt": "hi", "max_tokens": 10_000}, 422, "between 1 and"),
    ({"prompt": "hi", "temperature": "hot"}, 422, "'temperature'"),
    ({"prompt": "hi", "temperature": -1}, 422, "'temperature'"),
    ({"prompt": "hi", "temperature": 5}, 422, "'temperature'"),
    ({"prompt": "hi", "stream": "yes"}, 422, "'stream' must be true or false"),
    ({"prompt": "hi", "seed": -1}, 422, "'seed'"),
    ({"prompt": "x" * 5000}, 422, "characters; the limit is"),
    ({"prompt": "pods and nodes " * 270, "max_tokens": 8}, 422, "exceeds the context"),
    ({"prompt": "x" * 1_000_000}, 413, "the limit is"),
]


@pytest.mark.parametrize("body, status, message", BAD,
                         ids=[f"{i}-{s}" for i, (_, s, _) in enumerate(BAD)])
def test_malformed_requests_get_a_4xx_with_a_message(client, body, status, message):
    r = post(client, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["code"] == status


def test_one_megabyte_body_is_refused_without_a_content_length(client):
    def chunks():
        for _ in range(16):
            yield b"x" * 65536
    r = client.post("/v1/completions", content=chunks(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_unknown_path_and_method(client):
    assert client.get("/v1/completions").status_code == 405
    assert client.get("/nope").status_code == 404


def test_refusals_are_counted(client):
    post(client, b"nope")
    assert 'labkit_requests_total{status="422"}' in client.get("/metrics").text


# -- queue, timeout, batching -------------------------------------------------------------------
def test_timeout_answers_504(model):
    with client_for(model, request_timeout_s=0.0) as c:
        r = post(c, {"prompt": "The pod", "max_tokens": 4})
        assert r.status_code == 504 and "did not finish" in r.json()["error"]["message"]
        with c.stream("POST", "/v1/completions",
                      json={"prompt": "The pod", "max_tokens": 4, "stream": True}) as r:
            text = "".join(r.iter_lines())
        assert "timed out" in text


def make_job(prompt_tokens=2, max_tokens=4, temperature=0.0, seed=None, stream=False):
    return serve._Job("The pod", prompt_tokens, max_tokens, temperature, seed, 0.0, stream)


def test_full_queue_answers_429():
    async def scenario():
        config = serve.ServerConfig(max_queue_size=2)
        batcher = serve.Batcher(config, serve.Metrics())
        batcher.submit(make_job())
        batcher.submit(make_job())
        with pytest.raises(serve.RequestError) as err:
            batcher.submit(make_job())
        assert err.value.status == 429 and err.value.headers["Retry-After"] == "1"
        assert "queue is full" in err.value.message
        batcher._stopping = True
        with pytest.raises(serve.RequestError) as err:
            batcher.submit(make_job())
        assert err.value.status == 503
        batcher._executor.shutdown()
    asyncio.run(scenario())


def test_full_queue_answers_429_over_http(model):
    config = dict(max_batch_size=1, max_queue_size=1, max_tokens_limit=200)
    with client_for(model, **config) as c:
        statuses = post_concurrently(c, {"prompt": "The pod", "max_tokens": 200}, 8)
    assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}


def test_batches_group_compatible_requests(model):
    async def scenario():
        config = serve.ServerConfig(max_batch_size=3)
        batcher = serve.Batcher(config, serve.Metrics())
        batcher.model = model
        a, b, c = make_job(), make_job(temperature=1.0), make_job()
        d, e = make_job(), make_job(prompt_tokens=250, max_tokens=8)
        dead = make_job()
        dead.cancelled = True
        batcher.pending.extend([a, dead, b, c, e, d])
        assert batcher._take_batch() == [a, c, d]          # same temperature, fits the context
        assert list(batcher.pending) == [b, e]              # the rest keep their order
        assert batcher._take_batch() == [b]
        assert batcher._take_batch() == [e]
        batcher._executor.shutdown()
    asyncio.run(scenario())


def test_dynamic_batching_batches_concurrent_requests(model):
    with client_for(model, max_batch_size=8, max_queue_delay_ms=200) as c:
        results = post_concurrently(c, {"prompt": "The pod", "max_tokens": 4}, 8)
        batches = c.app.state.batcher.batches
        metrics = c.get("/metrics").text
    assert results == [200] * 8
    assert batches < 8, "8 concurrent requests within the queue delay share batches"
    assert "labkit_batch_size_count" in metrics


def test_config_validation():
    with pytest.raises(ValueError, match="model"):
        serve.ServerConfig(model="gpt-9")
    with pytest.raises(ValueError, match="max_batch_size"):
        serve.ServerConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue_delay_ms"):
        serve.ServerConfig(max_queue_delay_ms=-1)


def test_cli(capsys):
    from labkit.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0 and "--max-batch-size" in capsys.readouterr().out
    assert serve.serve_cli(["--max-batch-size", "0"]) == 2


# -- load generator -----------------------------------------------------------------------------
def test_percentile_and_result():
    assert loadgen.percentile([1, 2, 3, 4], 50) == 2.5
    assert loadgen.percentile([5], 99) == 5
    r = loadgen.LoadResult("closed", 2, 2.0, statuses=[200, 200, 429, 0],
                           latencies_s=[0.1, 0.3], tokens=10)
    assert r.ok == 2 and r.rps == 1.0 and r.errors == {0: 1, 429: 1}
    assert r.p50_ms == pytest.approx(200) and r.tokens_per_s == 5
    assert "closed loop" in str(r) and r.as_dict()["errors"] == {0: 1, 429: 1}
    with pytest.raises(ValueError):
        loadgen.closed_loop("http://127.0.0.1:1", clients=0)
    with pytest.raises(ValueError):
        loadgen.open_loop("http://127.0.0.1:1", rate=0)


def sigterm_with_requests_in_flight(server) -> None:
    """Graceful shutdown: 4 requests in flight when SIGTERM arrives still get their answers.
    The signal goes out once the server's in-flight gauge shows all 4 (no guessed sleep)."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(r=loadgen.closed_loop(
        server.url, clients=4, requests=4, max_tokens=150)))
    thread.start()
    try:
        assert server.wait_in_flight(4, timeout_s=30) == 4
    finally:
        server.proc.send_signal(signal.SIGTERM)
        thread.join(60)
    assert not thread.is_alive(), "the load generator did not finish within 60 s"
    assert box["r"].ok == 4, box["r"]


def test_real_server_load_and_graceful_shutdown():
    """The subprocess server: loads (tokens counted from the streamed usage), finishes
    in-flight requests on SIGTERM, and leaves no process behind."""
    server = serve.start_server(max_batch_size=4, max_queue_size=4, max_tokens_limit=200)
    try:
        closed = loadgen.closed_loop(server.url, clients=4, requests=12, max_tokens=8,
                                     stream=True)
        assert closed.ok == 12 and len(closed.ttfts_s) == 12 and closed.rps > 0
        assert closed.missing_usage == 0 and not closed.failures
        assert 0 < closed.pieces <= closed.tokens <= 12 * 8
        generated = server.metric("labkit_generated_tokens_total")
        assert closed.tokens == generated                 # the server's own count
        sigterm_with_requests_in_flight(server)
        assert server.proc.wait(30) in (0, -signal.SIGTERM)   # uvicorn re-raises the signal
    finally:
        server.stop()
    assert not server.running()


def test_real_server_refuses_with_429_when_its_queue_is_full():
    """A deterministic overload: room for 2 (max_batch_size=1 running, max_queue_size=1
    waiting) and 3 long requests sent at once, so at least one must get 429, whatever rate
    the load generator reaches: it only has to send 3 requests within one 200-token
    generation. Then the bound itself, read from the gauges: a request that arrives while
    one runs and one waits is refused."""
    server = serve.start_server(max_batch_size=1, max_queue_size=1, max_tokens_limit=200)
    try:
        burst = loadgen.closed_loop(server.url, clients=3, requests=3, max_tokens=200)
        assert set(burst.statuses) == {200, 429} and not burst.failures, burst
        assert server.metric("labkit_requests_total", {"status": "429"}) == \
            burst.errors[429]                     # the server counted every refusal it sent
        assert server.running() and server.in_flight() == 0
    finally:
        server.stop()
    assert not server.running()


# -- the lab's checks ---------------------------------------------------------------------------
def test_lab_checks_accept_right_answers_and_explain_wrong_ones():
    from labkit.check import LabCheckError
    from labkit.check import serving as check

    assert "tokens/s" in check.check_tokens_per_s(320.0, 32, 0.1)
    with pytest.raises(LabCheckError, match="seconds per token"):
        check.check_tokens_per_s(0.1 / 32, 32, 0.1)
    off = loadgen.LoadResult("closed", 16, 4.0, statuses=[200] * 40, latencies_s=[1.0] * 40)
    on = loadgen.LoadResult("closed", 16, 1.0, statuses=[200] * 40, latencies_s=[0.25] * 40)
    assert "4.0x" in check.check_speedup(4.0, off, on)
    with pytest.raises(LabCheckError, match="upside down"):
        check.check_speedup(0.25, off, on)
    text = "labkit_batch_size_sum 96.0\nlabkit_batch_size_count 24.0\n"
    assert check.metric_value(text, "labkit_batch_size_sum") == 96
    assert "4.0 requests per batch" in check.check_mean_batch(4.0, text)
    with pytest.raises(LabCheckError, match="upside down"):
        check.check_mean_batch(0.25, text)
    over = loadgen.LoadResult("open", 100, 3.0, statuses=[200] * 3 + [429])
    assert "25%" in check.check_refused_share(0.25, over)
    with pytest.raises(LabCheckError, match="percentage"):
        check.check_refused_share(25, over)

    class Resp:
        def __init__(self, status, message):
            self.status_code, self._m, self.text = status, message, message

        def json(self):
            return {"error": {"message": self._m}}
    assert "2 bad requests" in check.check_bad_requests(
        {"a": Resp(422, "missing field 'prompt'"), "b": Resp(413, "the body is too big")})
    with pytest.raises(LabCheckError, match="4xx"):
        check.check_bad_requests({"a": Resp(500, "boom boom boom")})
    check.check_knob_map({"max_batch_size (vLLM)": "--max-num-seqs",
                          "max_queue_delay_ms (Triton)": "max_queue_delay_microseconds"})
    with pytest.raises(LabCheckError, match="vLLM"):
        check.check_knob_map({"max_batch_size (vLLM)": "max_batch_size"})


# -- continuous (token-level) batching ----------------------------------------------------------
#: prompts whose greedy answers have no near tie (see tests/test_models.py, SLOT_REQUESTS), with
#: answer lengths that differ, so requests join and leave the running batch at different steps
MIXED = [("The pod", 20), ("A Kubernetes node runs pods and", 9), ("Batching", 30),
         ("Storage classes on EKS let you", 15), ("Karpenter", 25), ("The scheduler places", 4),
         ("x", 12), ("Quantization", 1)]


@pytest.fixture(scope="module")
def continuous(model):
    with client_for(model, batching="continuous", max_batch_size=3) as c:
        yield c


def test_continuous_config_and_cli():
    assert serve.ServerConfig().batching == "dynamic"
    with pytest.raises(ValueError, match="batching must be one of"):
        serve.ServerConfig(batching="static")
    parser = serve._parser()
    assert parser.parse_args(["--batching", "continuous"]).batching == "continuous"
    assert "continuous" in parser.format_help() and "--max-queue-delay-ms" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--batching", "static"])


def test_continuous_ready_and_uses_the_continuous_batcher(continuous):
    ready = continuous.get("/readyz").json()
    assert ready["batching"] == "continuous" and ready["max_batch_size"] == 3
    assert isinstance(continuous.app.state.batcher, serve.ContinuousBatcher)


def test_continuous_completions_equal_generate_alone(continuous, model):
    """8 concurrent requests of different lengths through 3 slots: each answer is exactly what
    the model gives that prompt alone, and finished slots were reused."""
    batcher = continuous.app.state.batcher
    uses_before = sum(batcher.slot_uses)
    answers = {}

    def call(prompt, n):
        answers[prompt] = post(continuous, {"prompt": prompt, "max_tokens": n}).json()
    threads = [threading.Thread(target=call, args=item) for item in MIXED]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for prompt, n in MIXED:
        want = model.generate(prompt, n)
        body = answers[prompt]
        assert body["choices"][0]["text"] == want.text, prompt
        assert body["usage"]["completion_tokens"] == len(want.token_ids[0])
        assert body["choices"][0]["finish_reason"] in ("length", "stop")
    assert sum(batcher.slot_uses) - uses_before == len(MIXED)       # 8 requests, 3 slots
    assert not batcher.running and batcher.cache.lengths == [0, 0, 0]  # all slots free again


def test_continuous_streaming_and_seeded_sampling(continuous, model):
    plain = post(continuous, {"prompt": "The pod", "max_tokens": 10}).json()["choices"][0]["text"]
    with continuous.stream("POST", "/v1/completions",
                           json={"prompt": "The pod", "max_tokens": 10, "stream": True}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(e["choices"][0]["text"] for e in events) == plain
    assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    # sampled with a seed: reproducible, and what generate() alone samples with that seed
    body = {"prompt": "A node", "max_tokens": 12, "temperature": 1.0, "seed": 3}
    first = post(continuous, body).json()["choices"][0]["text"]
    assert first == post(continuous, body).json()["choices"][0]["text"]
    assert first == model.generate("A node", 12, temperature=1.0, seed=3).text


def test_continuous_validation_and_limits(continuous):
    for body, status, message in BAD:
        r = post(continuous, body)
        assert r.status_code == status and message in r.json()["error"]["message"], body


def test_continuous_full_queue_and_timeout(model):
    config = dict(batching="continuous", max_batch_size=1, max_queue_size=1,
                  max_tokens_limit=200)
    with client_for(model, **config) as c:
        statuses = post_concurrently(c, {"prompt": "The pod", "max_tokens": 200}, 8)
    assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}
    with client_for(model, batching="continuous", request_timeout_s=0.0) as c:
        r = post(c, {"prompt": "The pod", "max_tokens": 4})
        assert r.status_code == 504 and "did not finish" in r.json()["error"]["message"]


def test_continuous_metrics(continuous):
    post(continuous, {"prompt": "The pod", "max_tokens": 6})
    text = continuous.get("/metrics").text
    for name in ("labkit_queue_depth", "labkit_batch_size_count", "labkit_tokens_per_second",
                 "labkit_time_to_first_token_seconds_count", "labkit_generated_tokens_total"):
        assert name in text, name
    from labkit.check.serving import metric_value
    assert metric_value(text, "labkit_batch_size_count") >= 5     # one per decode step
    assert metric_value(text, "labkit_generated_tokens_total") >= 6


def continuous_batcher(model, **config):
    batcher = serve.ContinuousBatcher(serve.ServerConfig(batching="continuous", **config),
                                      serve.Metrics())
    batcher.model = model
    return batcher


async def next_event(job, timeout_s=30.0):
    return await asyncio.wait_for(job.events.get(), timeout_s)


def test_rows_with_different_temperatures_share_decode_steps(model):
    """Greedy and sampled requests admitted together decode in the same steps; each gets what
    it would get alone (greedy: the same tokens; sampled: its own seeded generator)."""
    async def scenario():
        batcher = continuous_batcher(model, max_batch_size=4)
        jobs = [make_job(max_tokens=16), make_job(max_tokens=16, temperature=0.8, seed=1),
                make_job(max_tokens=16, temperature=1.3, seed=2), make_job(max_tokens=16)]
        for job in jobs:
            batcher.submit(job)                 # all wait before the worker starts
        batcher.start()
        for job in jobs:
            assert (await next_event(job))[0] == "done"
        await batcher.stop(5.0)
        return batcher, jobs
    batcher, jobs = asyncio.run(scenario())
    assert batcher.steps <= 15                  # 16 tokens: one prefill + 15 shared steps
    for job in jobs:
        alone = model.generate(job.prompt, 16, temperature=job.temperature, seed=job.seed)
        assert job.ids == list(alone.token_ids[0])


def test_cancelled_request_frees_its_slot(model):
    """One slot: a long request runs; once it is cancelled (client gone, timeout) the next
    request gets the slot at its next iteration instead of waiting for 200 tokens."""
    gate = threading.Event()

    class Paused(serve.ContinuousBatcher):
        def _decode_step(self, loop):
            gate.wait(10)                       # hold the first step until the test is ready
            return super()._decode_step(loop)

    async def scenario():
        batcher = Paused(serve.ServerConfig(batching="continuous", max_batch_size=1),
                         serve.Metrics())
        batcher.model = model
        batcher.start()
        long = make_job(max_tokens=200, stream=True)
        batcher.submit(long)
        assert (await next_event(long))[0] == "token"               # prefilled: it runs
        short = make_job(max_tokens=4)
        batcher.submit(short)
        long.cancelled = True
        gate.set()
        while (await next_event(short))[0] != "done":
            pass
        assert len(long.ids) == 2 and len(short.ids) == 4           # one step, then released
        assert short.slot == 0 and batcher.slot_uses == [2]
        assert long.events.qsize() == 1                              # its 2nd token, no "done"
        await batcher.stop(5.0)
    asyncio.run(scenario())


def test_continuous_graceful_stop_finishes_running_and_waiting_requests(model):
    async def scenario():
        batcher = continuous_batcher(model, max_batch_size=2)
        batcher.start()
        jobs = [make_job(max_tokens=40) for _ in range(3)]           # 2 run, 1 waits
        now = asyncio.get_running_loop().time()
        for job in jobs:
            job.arrival = now
            batcher.submit(job)
        await asyncio.sleep(0)
        await batcher.stop(30.0)
        with pytest.raises(serve.RequestError) as err:
            batcher.submit(make_job())
        assert err.value.status == 503
        for job in jobs:
            assert (await next_event(job, 1.0))[0] == "done"
            assert len(job.ids) == 40 or job.ids[-1] == model.tokenizer.eos_id
    asyncio.run(scenario())


def test_mixed_lengths_in_the_load_generator():
    draw = loadgen._bodies("The pod", (4, 64), True, 0.0, seed=1)
    lengths = [draw()["max_tokens"] for _ in range(200)]
    again = loadgen._bodies("The pod", (4, 64), True, 0.0, seed=1)
    assert lengths == [again()["max_tokens"] for _ in range(200)]     # seeded
    assert min(lengths) >= 4 and max(lengths) <= 64 and len(set(lengths)) > 20
    assert loadgen._bodies("p", 8, False, 0.0, 0)()["max_tokens"] == 8
    for bad in ((0, 4), (8, 4), (1, 2, 3), (1.5, 4)):
        with pytest.raises(ValueError, match="max_tokens"):
            loadgen._bodies("p", bad, False, 0.0, 0)
    r = loadgen.LoadResult("closed", 1, 1.0, ttfts_s=[0.01, 0.03])
    assert r.ttft_mean_ms == pytest.approx(20) and r.as_dict()["ttft_mean_ms"] == pytest.approx(20)


def test_bench_serve_cli_offers_continuous(capsys):
    with pytest.raises(SystemExit) as exit_:
        serve.bench_serve_cli(["--help"])
    assert exit_.value.code == 0 and "--continuous" in capsys.readouterr().out


def test_real_continuous_server_streams_mixed_lengths_and_shuts_down_gracefully():
    """``python -m labkit serve --batching continuous`` as a subprocess: streams a load of
    mixed lengths, finishes the requests in flight on SIGTERM, leaves no process behind."""
    server = serve.start_server(batching="continuous", max_batch_size=4, max_tokens_limit=200)
    try:
        assert httpx_get(server.url + "/readyz")["batching"] == "continuous"
        mixed = loadgen.closed_loop(server.url, clients=4, requests=12, max_tokens=(2, 24),
                                    stream=True, seed=0)
        assert mixed.ok == 12 and len(mixed.ttfts_s) == 12
        sigterm_with_requests_in_flight(server)
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    assert not server.running()


def httpx_get(url):
    import httpx

    return httpx.get(url, timeout=10).json()


def httpx_post(base_url, body):
    import httpx

    return httpx.post(base_url + "/v1/completions", json=body, timeout=30)


# -- streamed usage (OpenAI's stream_options.include_usage) ------------------------------------
def stream_events(client, body):
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200, r.read()
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


@pytest.mark.parametrize("batching", ["dynamic", "continuous"])
def test_stream_options_include_usage_sends_a_last_usage_chunk(model, batching):
    with client_for(model, batching=batching) as c:
        plain = post(c, {"prompt": "The pod", "max_tokens": 10}).json()
        events = stream_events(c, {"prompt": "The pod", "max_tokens": 10, "stream": True,
                                   "stream_options": {"include_usage": True}})
        without = stream_events(c, {"prompt": "The pod", "max_tokens": 10, "stream": True})
    last = events[-1]
    assert last["choices"] == [] and last["usage"] == plain["usage"]
    assert all(e["usage"] is None for e in events[:-1])        # null on every other chunk
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == plain["choices"][0]["text"]
    assert all("usage" not in e for e in without)              # not asked: not sent


@pytest.mark.parametrize("body, message", [
    ({"prompt": "hi", "stream_options": {"include_usage": True}}, "only allowed with"),
    ({"prompt": "hi", "stream": True, "stream_options": True}, "must be an object"),
    ({"prompt": "hi", "stream": True, "stream_options": {"include_usage": "yes"}},
     "include_usage' must be true or false"),
])
def test_bad_stream_options_get_422(client, body, message):
    r = post(client, body)
    assert r.status_code == 422 and message in r.json()["error"]["message"]


# -- the load generator counts what it should, and only network failures as failures -----------
def run_one(handler, body, timeout_s=5.0):
    """One request of the load generator against an httpx MockTransport ``handler``."""
    import httpx

    async def scenario():
        result = loadgen.LoadResult("closed", 1, 0.0)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await loadgen._one(client, "http://test/v1/completions", body, result, timeout_s)
        return result
    return asyncio.run(scenario())


def sse(*events):
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def piece(text, reason=None):
    return {"choices": [{"index": 0, "text": text, "finish_reason": reason}], "usage": None}


STREAM = {"prompt": "p", "max_tokens": 4, "stream": True,
          "stream_options": {"include_usage": True}}


def test_loadgen_counts_tokens_from_usage_not_pieces():
    import httpx

    text = sse(piece("ab"), piece(""), piece("c"), piece("", "length"),
               {"choices": [], "usage": {"completion_tokens": 5, "prompt_tokens": 1,
                                         "total_tokens": 6}})
    r = run_one(lambda req: httpx.Response(200, text=text), STREAM)
    assert r.statuses == [200] and r.ok == 1 and r.tokens == 5 and r.pieces == 2
    assert len(r.ttfts_s) == 1 and r.missing_usage == 0
    r = run_one(lambda req: httpx.Response(200, text=sse(piece("ab"), piece("", "stop"))), STREAM)
    assert r.ok == 1 and r.tokens == 0 and r.missing_usage == 1    # not guessed from pieces
    assert loadgen._bodies("p", 4, True, 0.0, 0)()["stream_options"] == {"include_usage": True}
    assert "stream_options" not in loadgen._bodies("p", 4, False, 0.0, 0)()


def test_loadgen_records_network_failures_by_type():
    import httpx

    def refuse(request):
        raise httpx.ConnectError("refused", request=request)
    r = run_one(refuse, {"prompt": "p", "max_tokens": 4})
    assert r.statuses == [0] and r.failures == {"ConnectError": 1} and r.ok == 0

    def slow(request):
        raise httpx.ReadTimeout("slow", request=request)
    r = run_one(slow, STREAM)
    assert r.statuses == [0] and r.failures == {"ReadTimeout": 1}


def test_loadgen_keeps_a_200_when_the_stream_breaks_later():
    import httpx

    class Breaks(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield f"data: {json.dumps(piece('ab'))}\n\n".encode()
            raise httpx.ReadError("connection reset")
    r = run_one(lambda req: httpx.Response(200, stream=Breaks()), STREAM)
    assert r.statuses == [200] and r.broken == 1 and r.ok == 0
    assert r.failures == {"ReadError": 1} and r.latencies_s == [] and r.tokens == 0
    assert "network failures" in str(r) and r.as_dict()["broken"] == 1


def test_loadgen_lets_its_own_bugs_and_protocol_changes_propagate():
    import httpx

    with pytest.raises(json.JSONDecodeError):
        run_one(lambda req: httpx.Response(200, text="data: {not json\n\n"), STREAM)
    with pytest.raises(KeyError):                 # a non-streamed answer without usage
        run_one(lambda req: httpx.Response(200, json={"choices": []}),
                {"prompt": "p", "max_tokens": 4})


def test_a_server_error_event_counts_with_its_code():
    import httpx

    text = sse(piece("ab"), {"error": {"message": "request timed out", "code": 504}})
    r = run_one(lambda req: httpx.Response(200, text=text), STREAM)
    assert r.statuses == [504] and r.ok == 0 and not r.failures


# -- process hygiene: flags, switch interval, host warning, log under .scratch ----------------
def test_option_flags_turn_booleans_into_bare_flags():
    assert serve.option_flags({"max_batch_size": 4, "exit_with_parent": True,
                               "other": False, "none": None}) == \
        ["--max-batch-size", "4", "--exit-with-parent"]
    parser = serve._parser()
    args = parser.parse_args(serve.option_flags({"exit_with_parent": True, "threads": 2}))
    assert args.exit_with_parent is True and args.threads == 2


def test_switch_interval_is_validated():
    assert serve.switch_interval_s({}) == serve.SWITCH_INTERVAL_S
    assert serve.switch_interval_s({"LABKIT_SWITCH_INTERVAL_S": "0.002"}) == 0.002
    for bad in ("fast", "nan", "inf", "0", "-1", "5"):
        with pytest.raises(ValueError, match="LABKIT_SWITCH_INTERVAL_S"):
            serve.switch_interval_s({"LABKIT_SWITCH_INTERVAL_S": bad})


def test_serve_leaves_the_switch_interval_of_its_process_alone(monkeypatch, capsys):
    import sys

    calls = []
    monkeypatch.setattr(serve, "_run_uvicorn", lambda *a: calls.append(sys.getswitchinterval()))
    before = sys.getswitchinterval()
    serve.serve(serve.ServerConfig())                    # as from a notebook
    assert calls == [before] and sys.getswitchinterval() == before
    serve.serve(serve.ServerConfig(), switch_interval=0.0005)     # as the CLI does
    assert calls[-1] == pytest.approx(0.0005) and sys.getswitchinterval() == before
    assert "warning" not in capsys.readouterr().err      # 127.0.0.1: no warning
    serve.serve(serve.ServerConfig(), host="0.0.0.0")
    assert "no authentication" in capsys.readouterr().err
    monkeypatch.setenv("LABKIT_SWITCH_INTERVAL_S", "fast")
    assert serve.serve_cli([]) == 2 and "LABKIT_SWITCH_INTERVAL_S" in capsys.readouterr().err


def test_help_warns_about_binding_every_address():
    assert "no authentication" in " ".join(serve._parser().format_help().split())


def test_server_log_lives_under_scratch_and_stale_logs_are_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path))
    dead = subprocess_pid_that_exited()
    stale = tmp_path / f"{serve.LOG_PREFIX}{dead}-1234-abc"
    stale.mkdir()
    (stale / "server.log").write_text("old")
    mine = tmp_path / f"{serve.LOG_PREFIX}{os.getpid()}-1-abc"
    mine.mkdir()
    assert serve.sweep_logs() == [stale] and mine.exists() and not stale.exists()
    mine.rmdir()
    server = serve.ServerProcess(max_batch_size=2)
    try:
        server.start()
        folders = list(tmp_path.glob(serve.LOG_PREFIX + "*"))
        assert len(folders) == 1 and (folders[0] / "server.log").exists()
        assert "--max-batch-size" not in server.log()      # the log is the server's output
    finally:
        server.stop()
    assert not list(tmp_path.glob(serve.LOG_PREFIX + "*"))   # removed on stop


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


# -- the serving manifests: the metric each autoscaler reads exists -----------------------------
def manifest(name):
    from pathlib import Path

    from labkit import k8s

    path = Path(__file__).resolve().parent.parent / "book" / "manifests" / name
    return {d["kind"]: d for d in k8s.load_manifests(path)}


def test_hpa_metric_is_created_by_the_adapter_rule_from_vllm_gauges():
    import yaml

    docs = manifest("09-realtime-serving.yaml")
    name = docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])["rules"]
    rule = next(r for r in rules if r["name"]["as"] == name)
    served = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    model = served[served.index("--served-model-name") + 1]
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert f'{gauge}{{<<.LabelMatchers>>,model_name="{model}"}}' in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    pdb = docs["PodDisruptionBudget"]["spec"]
    assert pdb["selector"] == docs["Deployment"]["spec"]["selector"]
    assert pdb["maxUnavailable"] < docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"]


def test_keda_trigger_reads_the_course_servers_gauge():
    docs = manifest("05-inference-server.yaml")
    spec = docs["ScaledObject"]["spec"]
    assert "labkit_requests_in_flight" in spec["triggers"][0]["metadata"]["query"]
    assert "labkit_requests_in_flight" in serve.Metrics().render().decode()
    # KEDA's cooldownPeriod only acts when scaling to zero; scale-down is the HPA's behaviour
    assert "cooldownPeriod" not in spec and spec["minReplicaCount"] >= 1
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
