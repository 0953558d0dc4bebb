"""Tests of the router (labkit.serving.router): the three policies as deterministic choices,
the reverse proxy in front of fake replicas (streaming passes through, per-replica metrics, a
dead replica answers 502), its process lifecycle, and ``bench route --json`` on a small load."""

import asyncio
import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")

from labkit.serving import router as rt  # noqa: E402
from labkit.serving.router import Picker, prefix_hashes, prompt_text  # noqa: E402

A = "Tenant A: you answer questions about pods and nodes of the cluster. " * 4
B = "Tenant B: you write Terraform for the EKS cluster and its node groups. " * 4
CLOSED: list = []          # fake replicas whose slow stream ended (finished or abandoned)


# -- the policies ------------------------------------------------------------------------------
def test_round_robin_cycles_whatever_the_load():
    p = Picker(3, "round_robin")
    assert [p.pick(A) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert p.outstanding == [3, 2, 2] and p.sent == [3, 2, 2]


def test_least_outstanding_picks_the_least_busy_replica():
    p = Picker(3, "least_outstanding")
    assert [p.pick() for _ in range(3)] == [0, 1, 2]
    p.done(1)
    assert p.pick() == 1                                # the only one with nothing in flight
    p.done(0)
    p.done(2)
    assert p.pick() == 0                                # a tie: fewer sent, then lowest index
    assert p.outstanding == [1, 1, 0] and p.sent == [2, 2, 1]


def test_prefix_aware_keeps_a_prefix_on_its_replica():
    p = Picker(3, "prefix_aware", max_imbalance=2)
    a = p.pick(A + "question 1")
    b = p.pick(B + "question 1")
    assert a != b                                       # a new prefix goes to the least loaded
    assert p.pick(A + "question 2") == a                # longest match, though a is busier
    assert p.pick(B + "question 2") == b
    assert p.matched[a] == len(prefix_hashes(A))      # A's blocks, found on a
    p.pick(A + "question 3")                            # a: 3 in flight, the third replica 0
    assert p.outstanding[a] == 3
    spilled = p.pick(A + "question 4")                  # 3 > 0 + 2: load breaks the tie
    assert spilled not in (a, b)
    assert p.pick(A + "question 5") in (a, spilled)     # both now hold the prefix


def test_prefix_aware_forgets_the_oldest_hashes():
    p = Picker(2, "prefix_aware", table_blocks=4)
    p.pick(A + A)
    assert len(prefix_hashes(A + A)) == 8 and len(p.tables[0]) == 4


def test_picker_done_never_goes_negative_and_bad_settings_are_refused():
    p = Picker(2)
    p.done(0)
    assert p.outstanding == [0, 0]
    for kwargs, match in (({"replicas": 0}, "replicas"), ({"policy": "random"}, "policy"),
                          ({"block_chars": 0}, "block_chars"),
                          ({"max_imbalance": -1}, "max_imbalance")):
        args = {"replicas": 2, **kwargs}
        with pytest.raises(ValueError, match=match):
            Picker(args.pop("replicas"), **args)
    with pytest.raises(ValueError, match="list of URLs"):
        rt.start_router("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="http://"):
        rt.start_router(["127.0.0.1:1"])
    with pytest.raises(ValueError, match="policy"):
        rt.start_router(["http://127.0.0.1:1"], "fastest")


def test_prompt_text_and_hashes():
    assert prompt_text({"prompt": "hi"}) == "hi" and prompt_text({"prompt": ["a", "b"]}) == "a"
    chat = prompt_text({"messages": [{"role": "system", "content": "S"},
                                     {"role": "user", "content": "U"}]})
    assert chat == "system: S\nuser: U\n" and prompt_text([1]) == ""
    h = prefix_hashes("x" * 130, 64)
    assert len(h) == 2 and prefix_hashes("x" * 128 + "y", 64) == h
    assert prefix_hashes("y" + "x" * 129, 64)[1] != h[1]


# -- the proxy ---------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_replica(name: str):
    """An app that answers completions with its name (streamed as two events when asked)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "not JSON"}}, status_code=422)
        if body.get("slow"):                # many events, slowly: a client may leave
            async def slow():
                try:
                    for i in range(100):
                        yield f"data: {json.dumps({'choices': [{'text': str(i)}]})}\n\n"
                        await asyncio.sleep(0.05)
                finally:
                    CLOSED.append(name)
            return StreamingResponse(slow(), media_type="text/event-stream")
        if body.get("stream"):
            def events():
                for piece in (name, "!"):
                    yield f"data: {json.dumps({'choices': [{'text': piece}]})}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return {"choices": [{"text": name}], "usage": {"prompt_tokens": 1}}

    @app.get("/v1/models")
    async def models():
        return {"data": [{"id": name}]}

    return app


@pytest.fixture(scope="module")
def replicas():
    import uvicorn

    servers, threads, urls = [], [], []
    for name in ("r0", "r1"):
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(fake_replica(name), host="127.0.0.1", port=port,
                                               log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append(server)
        threads.append(thread)
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 20
    while not all(s.started for s in servers):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield urls
    for server in servers:
        server.should_exit = True
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def test_the_proxy_spreads_streams_and_counts(replicas):
    from fastapi.testclient import TestClient

    from labkit.check.serving import metric_value

    with TestClient(rt.create_router_app(replicas, "round_robin")) as c:
        names = [c.post("/v1/completions", json={"prompt": "p"}).json()["choices"][0]["text"]
                 for _ in range(4)]
        assert names == ["r0", "r1", "r0", "r1"]
        with c.stream("POST", "/v1/completions", json={"prompt": "p", "stream": True}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-labkit-replica"] == replicas[0]
            lines = [line for line in r.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and '"r0"' in lines[0]
        assert c.get("/v1/models").json()["data"][0]["id"] == "r0"
        metrics = c.get("/metrics").text
        for url, n in zip(replicas, (3, 2)):
            assert metric_value(metrics, "labkit_router_requests_total",
                                {"replica": url, "policy": "round_robin"}) == n
            assert metric_value(metrics, "labkit_router_outstanding", {"replica": url}) == 0
        assert c.get("/readyz").json()["replicas"] == replicas


def test_prefix_aware_proxy_sticks_a_tenant_and_a_dead_replica_is_a_502(replicas):
    from fastapi.testclient import TestClient

    with TestClient(rt.create_router_app(replicas, "prefix_aware")) as c:
        first = c.post("/v1/completions", json={"prompt": A + "1"}).json()
        for i in range(3):
            again = c.post("/v1/completions", json={"prompt": A + str(i)}).json()
            assert again == first
        other = c.post("/v1/completions", json={"prompt": B}).json()
        assert other != first
        assert c.post("/v1/completions", content=b"not json").status_code == 422
    dead = f"http://127.0.0.1:{free_port()}"
    with TestClient(rt.create_router_app([dead], "round_robin")) as c:
        r = c.post("/v1/completions", json={"prompt": "p"})
        assert r.status_code == 502 and "failed" in r.json()["error"]["message"]
        assert c.app.state.picker.outstanding == [0]


def test_start_router_runs_a_process_and_leaves_none(replicas):
    import httpx

    with rt.start_router(replicas, "least_outstanding") as router:
        assert router.running() and router.url.startswith("http://127.0.0.1:")
        r = httpx.post(router.url + "/v1/completions", json={"prompt": "p"}, timeout=10)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] in ("r0", "r1")
        assert router.metric("labkit_router_requests_total") == 1
    assert not router.running()


def test_a_client_that_leaves_mid_stream_aborts_the_replicas_request(replicas):
    import httpx

    with rt.start_router(replicas[:1], "round_robin") as router:
        began = time.monotonic()
        with httpx.stream("POST", router.url + "/v1/completions", timeout=10,
                          json={"prompt": "p", "slow": True}) as r:
            next(r.iter_lines())                        # the first event, then hang up
        deadline = time.monotonic() + 3
        while "r0" not in CLOSED:
            assert time.monotonic() < deadline, "the replica kept streaming"
            time.sleep(0.02)
        assert time.monotonic() - began < 4             # not the 5 s of the whole stream
        assert router.metric("labkit_router_outstanding", {"replica": replicas[0]}) == 0


def test_route_cli_refuses_bad_settings(capsys):
    from labkit.__main__ import main

    assert main(["route", "--replica", "localhost:8000"]) == 2
    assert "http://" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["route", "--replica", "http://127.0.0.1:1", "--policy", "random"])


# -- the benchmark -----------------------------------------------------------------------------
def test_bench_route_json_has_every_key(capsys):
    """A small real run: 2 replicas of the tiny model, 3 routers, a few requests each."""
    from labkit.__main__ import BENCHES, main

    assert BENCHES["route"] == "labkit.serving.routebench:bench_route_cli"
    code = main(["bench", "route", "--json", "--replicas", "2", "--tenants", "2",
                 "--requests", "8", "--rate", "20", "--system-tokens", "48"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    for policy in rt.POLICIES:
        r = out[policy]
        for key in ("ttft_p50_ms", "ttft_p95_ms", "req_per_s", "prefix_hit_rate",
                    "prefix_vs_round_robin_ttft_p50", "requests_per_replica", "errors"):
            assert key in r, (policy, key)
        assert r["errors"] == 0 and sum(r["requests_per_replica"]) == 8
        assert 0 <= r["prefix_hit_rate"] <= 1
    assert out["round_robin"]["prefix_vs_round_robin_ttft_p50"] == 1
    assert out["prefix_vs_round_robin_ttft_p50"] == \
        out["prefix_aware"]["prefix_vs_round_robin_ttft_p50"]
    assert out["prefix_aware"]["prefix_hit_rate"] > 0           # the tenants' prompts repeat
    for key in ("replicas", "requests", "tenants", "rate", "seed", "prefix_cache_blocks",
                "round_robin_capacity_rps", "load"):
        assert key in out
    assert out["rate"] == 20 and out["round_robin_capacity_rps"] is None   # a given rate
