"""Tests of labkit.serving (the inference server) and its load generator.

Most tests talk to the app in-process through FastAPI's TestClient with the tiny model (the
engine then runs in a thread); a few start the real server as a subprocess (the engine in its
own process) and check what only a real process shows: graceful shutdown, refusals, an engine
that dies, and that nothing is left behind. The OpenAI client's tests are in
test_serving_openai.py.
"""

import asyncio
import json
import os
import signal
import threading
import time

import pytest

pytest.importorskip("fastapi")

from labkit.serving import bench, config as cfg, frontend, loadgen, process  # noqa: E402
from labkit.serving.batching import Scheduler, Sequence  # noqa: E402
from labkit.inference.language_model import load_tiny_gpt  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return load_tiny_gpt()


def wait_ready(client, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the engine did not become ready"
        time.sleep(0.01)
    return client


class client_for:
    """``with client_for(model, **config) as c:`` a TestClient whose engine is ready."""

    def __init__(self, model, **config):
        from fastapi.testclient import TestClient

        self.client = TestClient(frontend.create_app(cfg.ServerConfig(**config), model=model))

    def __enter__(self):
        return wait_ready(self.client.__enter__())

    def __exit__(self, *exc):
        return self.client.__exit__(*exc)


@pytest.fixture(scope="module")
def client(model):
    with client_for(model) as c:
        yield c


@pytest.fixture(scope="module")
def continuous(model):
    with client_for(model, batching="continuous", max_batch_size=3) as c:
        yield c


def post(client, body, path="/v1/completions", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, content=data, headers={"content-type": "application/json"}, **kw)


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
def test_health_ready_and_models(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["model"] == "tiny-gpt" and ready["engine"] == "thread"
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny-gpt"]


def test_not_ready_until_the_engine_is_loaded(client):
    engine = client.app.state.engine
    engine.ready = False
    try:
        assert client.get("/readyz").status_code == 503
        r = post(client, {"prompt": "The pod"})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
    finally:
        engine.ready = True
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("fixture", ["client", "continuous"])
def test_completion_matches_the_model(fixture, model, request):
    c = request.getfixturevalue(fixture)
    r = post(c, {"prompt": "The pod", "max_tokens": 8})
    assert r.status_code == 200
    body = r.json()
    want = model.generate("The pod", 8).text
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == want
    assert body["choices"][0]["finish_reason"] in ("length", "stop")
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(model.encode("The pod"))
    assert 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("fixture", ["client", "continuous"])
def test_seeded_sampling_is_what_generate_alone_samples(fixture, model, request):
    c = request.getfixturevalue(fixture)
    body = {"prompt": "A node", "max_tokens": 12, "temperature": 1.0, "seed": 3}
    first = post(c, body).json()["choices"][0]["text"]
    assert first == post(c, body).json()["choices"][0]["text"]
    assert first == model.generate("A node", 12, temperature=1.0, seed=3).text


def stream_events(client, body, path="/v1/completions"):
    with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


@pytest.mark.parametrize("fixture", ["client", "continuous"])
def test_streaming_sends_events_then_done(fixture, request):
    c = request.getfixturevalue(fixture)
    plain = post(c, {"prompt": "The pod", "max_tokens": 10}).json()["choices"][0]["text"]
    events = stream_events(c, {"prompt": "The pod", "max_tokens": 10, "stream": True})
    assert "".join(e["choices"][0]["text"] for e in events) == plain
    assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


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


def test_metrics_carry_vllm_names_with_the_model_name_label(client):
    from labkit.check.serving import metric_value
    from labkit.serving.metrics import VLLM_METRICS

    post(client, {"prompt": "The pod", "max_tokens": 4})
    text = client.get("/metrics").text
    for name in VLLM_METRICS:
        assert f'{name}' in text and 'model_name="tiny-gpt"' in text, name
    for name in ("labkit_requests_total", "labkit_batch_size_bucket",
                 "labkit_requests_in_flight", "process_resident_memory_bytes",
                 "vllm:time_to_first_token_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_count"):
        assert name in text, name
    assert 'labkit_requests_total{status="200"}' in text
    labels = {"model_name": "tiny-gpt"}
    assert metric_value(text, "vllm:request_success_total",
                        {**labels, "finished_reason": "length"}) >= 1
    assert metric_value(text, "vllm:generation_tokens_total", labels) >= 4
    assert metric_value(text, "vllm:num_requests_running", labels) == 0   # all answered


# -- malformed requests: every one gets a 4xx with a message in OpenAI's shape ------------------
BAD = [
    (b"this is not json", 422, "not valid JSON"),
    (b"", 422, "not valid JSON"),
    (b"\xff\xfe", 422, "not valid JSON"),
    ([1, 2], 422, "JSON object"),
    ({}, 422, "missing field 'prompt'"),
    ({"max_tokens": 4}, 422, "missing field 'prompt'"),
    ({"prompt": 42}, 422, "'prompt' must be a string or a non-empty list"),
    ({"prompt": []}, 422, "'prompt' must be a string or a non-empty list"),
    ({"prompt": [1, 2]}, 422, "token-id prompts are not supported"),
    ({"prompt": None}, 422, "'prompt' must be a string"),
    ({"prompt": ""}, 422, "'prompt' is empty"),
    ({"prompt": "hi", "max_tokens": "8"}, 422, "'max_tokens' must be an integer"),
    ({"prompt": "hi", "max_tokens": 8.5}, 422, "'max_tokens' must be an integer"),
    ({"prompt": "hi", "max_tokens": True}, 422, "'max_tokens' must be an integer"),
    ({"prompt": "hi", "max_tokens": 0}, 422, "between 1 and"),
    ({"prompt": "hi", "max_tokens": 10_000}, 422, "between 1 and"),
    ({"prompt": "hi", "temperature": "hot"}, 422, "'temperature'"),
    ({"prompt": "hi", "temperature": -1}, 422, "'temperature'"),
    ({"prompt": "hi", "top_p": 0}, 422, "'top_p'"),
    ({"prompt": "hi", "top_p": 1.5}, 422, "'top_p'"),
    ({"prompt": "hi", "n": 0}, 422, "'n' must be an integer from 1"),
    ({"prompt": "hi", "n": 99}, 422, "'n' must be an integer from 1"),
    ({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 422, "'stop'"),
    ({"prompt": "hi", "stop": [""]}, 422, "'stop'"),
    ({"prompt": "hi", "stream": "yes"}, 422, "'stream' must be true or false"),
    ({"prompt": "hi", "seed": -1}, 422, "'seed'"),
    ({"prompt": "hi", "stream_options": {"include_usage": True}}, 422, "only allowed with"),
    ({"prompt": "hi", "stream": True, "stream_options": True}, 422, "must be an object"),
    ({"prompt": "x" * 5000}, 422, "characters; the limit is"),
    ({"prompt": "pods and nodes " * 270, "max_tokens": 8}, 422, "exceeds the context"),
    ({"prompt": "hi", "model": "gpt-9"}, 404, "does not exist"),
    ({"prompt": "x" * 1_000_000}, 413, "the limit is"),
]


@pytest.mark.parametrize("body, status, message", BAD,
                         ids=[f"{i}-{s}" for i, (_, s, _) in enumerate(BAD)])
def test_malformed_requests_get_a_4xx_with_a_message(client, body, status, message):
    r = post(client, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}       # OpenAI's shape
    assert message in error["message"] and error["code"] == status


def test_continuous_validation_and_limits(continuous):
    for body, status, message in BAD:
        r = post(continuous, body)
        assert r.status_code == status and message in r.json()["error"]["message"], body


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


# -- OpenAI features: lists of prompts, n, stop, top_p, chat -------------------------------------
def test_a_list_of_prompts_is_served_as_a_batch_with_n_choices_each(client, model):
    body = {"prompt": ["The pod", "A node"], "max_tokens": 6, "n": 2}
    r = post(client, body).json()
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in r["choices"]]
    assert texts[:2] == [model.generate("The pod", 6).text] * 2      # greedy: n equal choices
    assert texts[2:] == [model.generate("A node", 6).text] * 2
    assert r["usage"]["prompt_tokens"] == 2 * (len(model.encode("The pod"))
                                               + len(model.encode("A node")))


def test_stop_strings_cut_the_text_before_them(client, model):
    full = model.generate("The pod", 20).text
    stop = full[5:7]
    r = post(client, {"prompt": "The pod", "max_tokens": 20, "stop": [stop]}).json()
    choice = r["choices"][0]
    assert choice["text"] == full[:full.index(stop)] and choice["finish_reason"] == "stop"
    events = stream_events(client, {"prompt": "The pod", "max_tokens": 20, "stop": stop,
                                    "stream": True})
    assert "".join(e["choices"][0]["text"] for e in events) == choice["text"]


def test_top_p_keeps_the_most_likely_tokens():
    import torch

    from labkit.serving.batching import sample

    logits = torch.tensor([[5.0, 4.9, -10.0, -10.0]])
    g = torch.Generator().manual_seed(0)
    picks = {sample(logits, 1.0, 0.5, g) for _ in range(50)}
    assert picks == {0}                          # top_p 0.5: only the most likely token
    picks = {sample(logits, 1.0, 0.999, g) for _ in range(200)}
    assert picks == {0, 1}                       # the nucleus: the two likely ones, never 2, 3


def test_chat_uses_the_models_template(client, model):
    from labkit.serving.protocol import render_chat

    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is a pod?"}]
    prompt = render_chat(messages, "plain")
    assert prompt == "system: Be brief.\nuser: What is a pod?\nassistant:"
    r = post(client, {"messages": messages, "max_tokens": 6}, "/v1/chat/completions").json()
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"] == {"role": "assistant",
                                          "content": model.generate(prompt, 6).text}
    events = stream_events(client, {"messages": messages, "max_tokens": 6, "stream": True},
                           "/v1/chat/completions")
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == \
        r["choices"][0]["message"]["content"]


def test_smollm2_chat_template_is_its_own_jinja_template():
    from labkit.serving.protocol import render_chat

    source = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != "
              "'system' %}{{ '<|im_start|>system\nDefault<|im_end|>\n' }}{% endif %}"
              "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
              "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|im_start|>assistant\n' }}{% endif %}")
    text = render_chat([{"role": "user", "content": "hi"}], "model", source)
    assert text == ("<|im_start|>system\nDefault<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_smollm2s_own_template_frames_a_chat_as_chat_prompt_does():
    from labkit.inference.language_model import SMOLLM2_SYSTEM
    from labkit.inference.smollm2 import smollm2_dir
    from labkit.serving.protocol import render_chat

    path = smollm2_dir() / "chat_template.jinja"
    if not path.exists():
        pytest.skip("SmolLM2 is not prepared (make setup)")
    text = render_chat([{"role": "user", "content": "What is a pod?"}], "model",
                       path.read_text())
    assert text == (f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n<|im_start|>user\n"
                    f"What is a pod?<|im_end|>\n<|im_start|>assistant\n")


# -- queue, timeout, batching -------------------------------------------------------------------
@pytest.mark.parametrize("batching", ["dynamic", "continuous"])
def test_timeout_answers_504(model, batching):
    with client_for(model, batching=batching, request_timeout_s=0.0) as c:
        r = post(c, {"prompt": "The pod", "max_tokens": 4})
        assert r.status_code == 504 and "did not finish" in r.json()["error"]["message"]


@pytest.mark.parametrize("batching", ["dynamic", "continuous"])
def test_full_queue_answers_429_over_http(model, batching):
    config = dict(batching=batching, max_batch_size=1, max_queue_size=1, max_tokens_limit=200)
    with client_for(model, **config) as c:
        statuses = post_concurrently(c, {"prompt": "The pod", "max_tokens": 200}, 8)
        text = c.get("/metrics").text
    assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}
    assert f'labkit_requests_total{{status="429"}} {float(statuses.count(429))}' in text


def test_dynamic_batching_batches_concurrent_requests(model):
    with client_for(model, max_batch_size=8, max_queue_delay_ms=200) as c:
        results = post_concurrently(c, {"prompt": "The pod", "max_tokens": 4}, 8)
        metrics = c.get("/metrics").text
    from labkit.check.serving import metric_value
    assert results == [200] * 8
    batches = metric_value(metrics, "labkit_batch_size_count")
    assert 1 <= batches < 8, "8 concurrent requests within the queue delay share batches"


MIXED = [("The pod", 2), ("A node", 24), ("The cluster", 5), ("Kubernetes", 17),
         ("The model", 3), ("A GPU", 11), ("The queue", 7), ("Pods and nodes", 20)]


def test_continuous_completions_equal_generate_alone(continuous, model):
    """8 concurrent requests of different lengths through 3 slots: each answer is exactly what
    the model gives that prompt alone."""
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


# -- the scheduler on its own --------------------------------------------------------------------
def seq(model, rid, prompt="The pod", max_tokens=4, **kw):
    return Sequence(rid, model.encode(prompt), max_tokens, **kw)


def drain(sched, limit=500):
    events = []
    for _ in range(limit):
        if sched.seconds_until_work() is None:
            return events
        if sched.seconds_until_work() == 0:
            events += sched.step()[0]
        else:
            time.sleep(sched.seconds_until_work())
    raise AssertionError("the scheduler did not finish")


def test_dynamic_scheduler_waits_for_the_batch_then_runs_it_whole(model):
    sched = Scheduler(model, cfg.ServerConfig(max_batch_size=2, max_queue_delay_ms=50))
    sched.add(seq(model, "a", max_tokens=2))
    assert 0 < sched.seconds_until_work() <= 0.05        # waits for a second request
    sched.add(seq(model, "b", max_tokens=6))
    assert sched.seconds_until_work() == 0               # the batch is full
    events = sched.step()[0]
    sched.add(seq(model, "c"))
    events += drain(sched)
    order = [e[1] for e in events if e[3] is not None]
    assert order == ["a", "b", "c"]                      # c waited for the whole batch
    assert sched.batches == 2 and sched.cache.lengths == [0, 0]


def test_continuous_scheduler_admits_into_a_free_slot(model):
    sched = Scheduler(model, cfg.ServerConfig(batching="continuous", max_batch_size=2))
    for rid, n in (("a", 2), ("b", 12), ("c", 2)):
        sched.add(seq(model, rid, max_tokens=n))
    events = drain(sched)
    order = [e[1] for e in events if e[3] is not None]
    assert order == ["a", "c", "b"]                      # c took a's slot, before b ended
    assert sched.slot_uses == [2, 1]


def test_aborted_rows_leave_and_a_fully_aborted_batch_ends(model):
    sched = Scheduler(model, cfg.ServerConfig(max_batch_size=2, max_queue_delay_ms=0))
    sched.add(seq(model, "a", max_tokens=50))
    sched.add(seq(model, "b", max_tokens=50))
    sched.step()
    sched.abort("a")
    sched.abort("b")
    events, _ = sched.step()
    assert events == [] and not sched.running and not sched.has_unfinished()
    sched.add(seq(model, "w"))
    sched.abort("w")                                      # a waiting one leaves too
    assert not sched.waiting


def test_a_failure_while_admitting_reaches_the_request(model, monkeypatch):
    """ROB-02: a sequence is registered in its slot before its prefill, so an error there
    answers it (500) instead of leaving its client to time out."""
    sched = Scheduler(model, cfg.ServerConfig(batching="continuous", max_batch_size=2))
    sched.add(seq(model, "a"))

    def broken(*args, **kwargs):
        raise MemoryError("no room")
    monkeypatch.setattr(model.net, "prefill_slot", broken)
    events, _ = sched.step()
    assert events == [("err", "a", 500, "generation failed: no room")]
    assert not sched.running and not sched.waiting
    monkeypatch.undo()
    sched.add(seq(model, "b", max_tokens=2))              # and the engine keeps serving
    assert [e[3] for e in drain(sched)][-1] == "length"


def test_config_validation():
    with pytest.raises(ValueError, match="model"):
        cfg.ServerConfig(model="gpt-9")
    with pytest.raises(ValueError, match="max_batch_size"):
        cfg.ServerConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue_delay_ms"):
        cfg.ServerConfig(max_queue_delay_ms=-1)
    with pytest.raises(ValueError, match="batching must be one of"):
        cfg.ServerConfig(batching="static")
    with pytest.raises(ValueError, match="engine must be one of"):
        cfg.ServerConfig(engine="fork")
    assert cfg.ServerConfig(served_model_name="m").name == "m"


def test_cli(capsys):
    from labkit.__main__ import BENCHES, main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--max-batch-size" in out and "--engine" in out
    assert process.serve_cli(["--max-batch-size", "0"]) == 2
    assert BENCHES["serve"] == "labkit.serving.bench:bench_serve_cli"
    parser = process._parser()
    assert parser.parse_args(["--batching", "continuous"]).batching == "continuous"
    with pytest.raises(SystemExit):
        parser.parse_args(["--batching", "static"])


def test_bench_serve_cli_offers_continuous_and_the_flood(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.bench_serve_cli(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--continuous" in out and "--no-flood" in out


def test_wrk_durations_are_read_in_seconds():
    assert bench._wrk_seconds("250.00us") == pytest.approx(250e-6)
    assert bench._wrk_seconds("12.5ms") == pytest.approx(0.0125)
    assert bench._wrk_seconds("5.01s") == pytest.approx(5.01)
    assert bench._wrk_seconds("1.00m") == pytest.approx(60)


def test_flood_verdicts():
    result = {"flood_goodput_ratio": 0.95, "flood_5xx": 0, "flood_429_p99_ms": 60.0,
              "flood_healthz_max_ms": 20.0}
    v = bench.flood_verdicts(result)
    assert v["flood_goodput_ratio"][2] and v["flood_5xx"][2] and v["flood_healthz_max_ms"][2]
    assert not v["flood_429_p99_ms"][2]


def test_old_imports_keep_working_with_a_deprecation_warning():
    import importlib
    import sys

    for name, attr in (("labkit.serve", "start_server"), ("labkit.loadgen", "closed_loop")):
        sys.modules.pop(name, None)
        with pytest.warns(DeprecationWarning, match="labkit.serving"):
            module = importlib.import_module(name)
        assert callable(getattr(module, attr))


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
    f = loadgen.FloodResult("closed", 4, 2.0, statuses=[200, 429, 429, 503, 0],
                            latencies_s={200: [0.5], 429: [0.001, 0.003], 503: [0.01],
                                         0: [0.1]}, healthz_s=[0.002, 0.004])
    assert f.ok == 1 and f.rps == 0.5 and f.five_xx == 2 and f.answered_rps == 2.5
    assert f.p_ms(429, 50) == pytest.approx(2) and f.healthz_max_ms == pytest.approx(4)


def test_mixed_lengths_in_the_load_generator():
    draw = loadgen._bodies("The pod", (4, 64), True, 0.0, seed=1)
    lengths = [draw()["max_tokens"] for _ in range(200)]
    again = loadgen._bodies("The pod", (4, 64), True, 0.0, seed=1)
    assert lengths == [again()["max_tokens"] for _ in range(200)]     # seeded
    assert min(lengths) >= 4 and max(lengths) <= 64 and len(set(lengths)) > 20
    for bad in ((0, 4), (8, 4), (1, 2, 3), (1.5, 4)):
        with pytest.raises(ValueError, match="max_tokens"):
            loadgen._bodies("p", bad, False, 0.0, 0)


def test_run_in_a_notebook_is_cancelled_by_an_interrupt(monkeypatch):
    """ROB-01: inside a running event loop (Jupyter) the load runs on a thread; a
    KeyboardInterrupt in the caller cancels it instead of leaving it running."""
    cancelled = threading.Event()

    async def forever():
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    real_join = threading.Thread.join
    calls = []

    def join(self, timeout=None):
        if self.name == "loadgen" and not calls:
            calls.append(1)
            raise KeyboardInterrupt
        return real_join(self, timeout)
    monkeypatch.setattr(threading.Thread, "join", join)

    async def notebook():
        with pytest.raises(KeyboardInterrupt):
            loadgen._run(forever())
    asyncio.run(notebook())
    assert cancelled.wait(5)
    assert not [t for t in threading.enumerate() if t.name == "loadgen"]


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


# -- process hygiene: flags, switch interval, host warning -------------------------------------
def test_option_flags_turn_booleans_into_bare_flags():
    assert process.option_flags({"max_batch_size": 4, "exit_with_parent": True,
                                 "other": False, "none": None}) == \
        ["--max-batch-size", "4", "--exit-with-parent"]
    args = process._parser().parse_args(
        process.option_flags({"exit_with_parent": True, "threads": 2}))
    assert args.exit_with_parent is True and args.threads == 2


def test_switch_interval_is_validated():
    assert process.switch_interval_s({}) == process.SWITCH_INTERVAL_S
    assert process.switch_interval_s({"LABKIT_SWITCH_INTERVAL_S": "0.002"}) == 0.002
    for bad in ("fast", "nan", "inf", "0", "-1", "5"):
        with pytest.raises(ValueError, match="LABKIT_SWITCH_INTERVAL_S"):
            process.switch_interval_s({"LABKIT_SWITCH_INTERVAL_S": bad})


def test_serve_leaves_the_switch_interval_of_its_process_alone(monkeypatch, capsys):
    import sys

    calls = []
    monkeypatch.setattr(process, "_run_uvicorn",
                        lambda *a: calls.append(sys.getswitchinterval()) or 0)
    before = sys.getswitchinterval()
    process.serve(cfg.ServerConfig())                    # as from a notebook
    assert calls == [before] and sys.getswitchinterval() == before
    process.serve(cfg.ServerConfig(), switch_interval=0.0005)     # as the CLI does
    assert calls[-1] == pytest.approx(0.0005) and sys.getswitchinterval() == before
    assert "warning" not in capsys.readouterr().err      # 127.0.0.1: no warning
    process.serve(cfg.ServerConfig(), host="0.0.0.0")
    assert "no authentication" in capsys.readouterr().err
    monkeypatch.setenv("LABKIT_SWITCH_INTERVAL_S", "fast")
    assert process.serve_cli([]) == 2 and "LABKIT_SWITCH_INTERVAL_S" in capsys.readouterr().err
    assert "no authentication" in " ".join(process._parser().format_help().split())


# -- the real server, as a subprocess ------------------------------------------------------------
def gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[-1].startswith("Z"):   # a zombie has exited
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


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


def client_hangs_up(server) -> None:
    """A client that closes its connection while its request runs: the server counts a 499,
    its in-flight gauge returns to 0 and nothing keeps running; a non-streamed request is
    aborted in the engine (the server notices the disconnect at once)."""
    import socket

    for n, stream in enumerate((False, True), start=1):
        body = json.dumps({"prompt": "The pod", "max_tokens": 200, "stream": stream}).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                         + body)
            server.wait_in_flight(1)
        deadline = time.monotonic() + 20
        while server.metric("labkit_requests_total", {"status": "499"}) < n \
                or server.in_flight():
            assert time.monotonic() < deadline, "the server did not notice the client left"
            time.sleep(0.02)
        if not stream:      # a stream may end before its writes notice the client is gone
            assert server.metric("vllm:request_success_total",
                                 {"finished_reason": "abort"}) == 1
    assert server.metric("vllm:num_requests_running") == 0     # nothing left behind


def test_real_server_streams_shuts_down_gracefully_and_leaves_no_process():
    """``python -m labkit serve --batching continuous``: the engine runs in its own process,
    a load of mixed lengths streams (tokens counted from the usage), SIGTERM lets the requests
    in flight finish, and both processes are gone afterwards."""
    server = process.start_server(batching="continuous", max_batch_size=4, max_tokens_limit=200)
    try:
        assert server.engine_pid not in (None, server.pid)             # its own process
        mixed = loadgen.closed_loop(server.url, clients=4, requests=12, max_tokens=(2, 24),
                                    stream=True, seed=0)
        assert mixed.ok == 12 and len(mixed.ttfts_s) == 12 and not mixed.failures
        assert mixed.missing_usage == 0 and 0 < mixed.pieces <= mixed.tokens
        assert mixed.tokens == server.metric("vllm:generation_tokens_total")
        client_hangs_up(server)
        sigterm_with_requests_in_flight(server)
        assert server.proc.wait(30) in (0, -signal.SIGTERM)   # uvicorn re-raises the signal
    finally:
        server.stop()
    assert not server.running() and gone(server.engine_pid)


def test_real_server_refuses_a_flood_and_turns_a_dead_engine_into_503s(tmp_path, monkeypatch):
    """One dynamic-batching server: a burst and a small flood get 429s and no 5xx; the log
    lives under scratch; then its engine is killed: the request in flight and every later
    one get 503, /readyz says so, and the server exits with code 1 by itself (no hang)."""
    import httpx

    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path))
    server = process.start_server(max_batch_size=1, max_queue_size=1, max_tokens_limit=200)
    try:
        assert len(list(tmp_path.glob(process.LOG_PREFIX + "*"))) == 1
        burst = loadgen.closed_loop(server.url, clients=3, requests=3, max_tokens=200)
        assert set(burst.statuses) == {200, 429} and not burst.failures, burst
        assert server.metric("labkit_requests_total", {"status": "429"}) == burst.errors[429]
        flooded = loadgen.flood(server.url, connections=32, duration_s=1.0, max_tokens=8)
        assert flooded.five_xx == 0 and flooded.count(429) > 0 and flooded.ok > 0, flooded
        assert set(flooded.statuses) <= {200, 429}
        keys = bench.bench_flood(server, connections=16, duration_s=0.5, saturate_clients=2,
                                 max_tokens=4, generator="python")
        assert keys["flood_5xx"] == 0 and keys["flood_refused"] > 0, keys
        assert keys["flood_generator"] == "labkit.serving.loadgen.flood"
        assert {"flood_goodput_ratio", "flood_429_p99_ms", "flood_healthz_max_ms",
                "flood_open_goodput_ratio"} <= set(keys)
        box = {}
        thread = threading.Thread(target=lambda: box.update(r=httpx.post(
            server.url + "/v1/completions", json={"prompt": "The pod", "max_tokens": 200},
            timeout=60)))
        thread.start()
        server.wait_in_flight(1)
        os.kill(server.engine_pid, signal.SIGKILL)
        thread.join(30)
        assert box["r"].status_code == 503, box["r"].text
        assert "engine" in box["r"].json()["error"]["message"]
        assert server.proc.wait(30) == 1
    finally:
        server.stop()
    assert not server.running() and gone(server.engine_pid)
    assert not list(tmp_path.glob(process.LOG_PREFIX + "*"))      # removed on stop


# -- the serving manifests: the metric each autoscaler reads exists -----------------------------
def manifest(name):
    from pathlib import Path

    from labkit import k8s

    path = Path(__file__).resolve().parent.parent / "book" / "manifests" / name
    return {d["kind"]: d for d in k8s.load_manifests(path)}


def test_hpa_reads_vllms_gauges_through_the_adapter_rule():
    """Chapter 09: the HPA names vLLM's own series, and the Prometheus Adapter rule serves
    each of them per Pod, filtered on the Deployment's served model name."""
    import re

    import yaml

    docs = manifest("09-realtime-serving.yaml")
    names = [m["pods"]["metric"]["name"]
             for m in docs["HorizontalPodAutoscaler"]["spec"]["metrics"]]
    assert names == ["vllm:num_requests_running", "vllm:num_requests_waiting"]
    served = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    model = served[served.index("--served-model-name") + 1]
    rules = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])["rules"]
    for name in names:
        rule = next(r for r in rules if re.fullmatch(r["name"]["matches"], name))
        assert re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"),
                      name) == name
        assert f'model_name="{model}"' in rule["seriesQuery"]
        assert f'<<.Series>>{{<<.LabelMatchers>>,model_name="{model}"}}' in rule["metricsQuery"]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    pdb = docs["PodDisruptionBudget"]["spec"]
    assert pdb["selector"] == docs["Deployment"]["spec"]["selector"]
    assert pdb["maxUnavailable"] < docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"]


def test_keda_trigger_reads_vllms_gauges_which_the_course_server_exports():
    from labkit.serving.metrics import Metrics

    docs = manifest("05-inference-server.yaml")
    spec = docs["ScaledObject"]["spec"]
    query = spec["triggers"][0]["metadata"]["query"]
    args = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    model = args[args.index("--served-model-name") + 1]
    exported = Metrics(model).render().decode()
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert f'{gauge}{{app_kubernetes_io_name="labkit-server",model_name="{model}"}}' in query
        assert f'{gauge}{{engine="0",model_name="{model}"}}' in exported
    assert "labkit_" not in query
    # KEDA's cooldownPeriod only acts when scaling to zero; scale-down is the HPA's behaviour
    assert "cooldownPeriod" not in spec and spec["minReplicaCount"] >= 1
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
