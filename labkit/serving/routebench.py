"""``python -m labkit bench route``: round-robin, least-outstanding and prefix-aware routing
on one multi-tenant shared-prefix load, and the prefix cache's effect on TTFT for
``bench serve``.

**The load.** ``tenants`` tenants each have their own long system prompt (``system_tokens``
tokens of deterministic text); every request is one tenant's system prompt followed by a
question of its own, streamed, with a few output tokens, so its time to first token is mostly
the prefill. Requests arrive open-loop (Poisson, ``rate`` per second, seeded: the same
arrivals, tenants and questions for every policy), like independent users.

**The mechanism.** Each replica's prefix cache is bounded (``prefix_cache_blocks``, the
stand-in for a GPU's KV memory) to about the prefixes of ``ceil(tenants / replicas)`` tenants,
so it cannot hold every tenant's. Round-robin sends every tenant to every replica, and each
replica's cache thrashes; prefix-aware routing keeps each tenant on the replica that holds its
prefix. Before each policy the replicas' caches are emptied (``POST /reset_prefix_cache``) and
the hit rate is read from their ``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``
counters (hit tokens over queried tokens).

Imports :mod:`labkit.serving.process`, :mod:`labkit.serving.router` and
:mod:`labkit.serving.loadgen` (HTTP only: the models run in the replicas' engines).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import statistics
import sys
import threading
import time

from labkit.serving.loadgen import LoadResult, percentile, run_coroutine, stream_events
from labkit.serving.process import ServerProcess
from labkit.serving.router import POLICIES, RouterProcess

__all__ = ["bench_route", "bench_route_cli", "bench_prefix_cache", "tenant_prompts",
           "shared_prefix_load", "round_robin_capacity", "WORDS"]

#: words the system prompts are drawn from (the course's vocabulary; the tiny model's
#: tokenizer was trained on it, so they cost few tokens each)
WORDS = ("the pod runs on a node of the cluster and the model server answers requests from "
         "users through a service with a gateway that routes traffic to replicas while the "
         "scheduler places workloads on accelerators memory cache tokens batch latency "
         "throughput queue deployment container image weights storage network GPU").split()


def tenant_prompts(tenants: int, chars: int, seed: int = 0) -> list[str]:
    """One system prompt of about ``chars`` characters per tenant, deterministic in ``seed``;
    they differ from their first characters on."""
    out = []
    for t in range(tenants):
        rng = random.Random(seed * 7919 + t)
        words, size = [f"Tenant {t} instructions:"], 0
        while size < chars:
            words.append(rng.choice(WORDS))
            size += len(words[-1]) + 1
        out.append(" ".join(words) + "\n")
    return out


def _question(rng: random.Random, i: int) -> str:
    return f"Question {i}: " + " ".join(rng.choice(WORDS) for _ in range(4)) + "?"


async def _send(client, url: str, body: dict, start: float, result: LoadResult) -> None:
    import httpx

    status, first = 0, None
    try:
        async with client.stream("POST", url, json=body) as resp:
            status = resp.status_code
            async for event in stream_events(resp):
                if "error" in event:
                    status = event["error"].get("code", 500)
                    break
                if first is None and any(c.get("text") for c in event.get("choices") or []):
                    first = time.perf_counter() - start
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as err:
        name = type(err).__name__
        result.failures[name] = result.failures.get(name, 0) + 1
    result.statuses.append(status)
    if status == 200:
        result.latencies_s.append(time.perf_counter() - start)
        if first is not None:
            result.ttfts_s.append(first)


async def _open_loop(url: str, bodies: list, gaps: list, timeout_s: float) -> LoadResult:
    import httpx

    result = LoadResult("open", 0.0, 0.0)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        start = time.perf_counter()
        t, tasks = 0.0, []
        for body, gap in zip(bodies, gaps, strict=True):
            t += gap
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(client, url, body, start + t, result)))
        result.send_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
        result.duration_s = time.perf_counter() - start
    return result


def _bodies(prompts: list[str], requests: int, rate: float, seed: int, max_tokens: int):
    rng = random.Random(seed)
    bodies, gaps = [], []
    for i in range(requests):
        tenant = rng.randrange(len(prompts))
        bodies.append({"prompt": prompts[tenant] + _question(rng, i), "max_tokens": max_tokens,
                       "temperature": 0.0, "stream": True})
        gaps.append(rng.expovariate(rate))
    return bodies, gaps


def shared_prefix_load(base_url: str, prompts: list[str], requests: int, rate: float, *,
                       seed: int = 0, max_tokens: int = 2, timeout_s: float = 60.0
                       ) -> LoadResult:
    """``requests`` streamed completions arriving open-loop at ``rate`` per second, each the
    system prompt of a tenant drawn at random (uniformly, seeded) from ``prompts`` plus a
    question of its own; greedy, ``max_tokens`` tokens. TTFT is the first text piece."""
    if not prompts or not 1 <= requests <= 20_000 or not rate > 0:
        raise ValueError("give at least one prompt, requests 1..20000 and rate > 0")
    bodies, gaps = _bodies(prompts, requests, rate, seed, max_tokens)
    result = run_coroutine(_open_loop(base_url.rstrip("/") + "/v1/completions", bodies, gaps,
                                      timeout_s))
    result.offered = rate
    return result


async def _closed_loop(url: str, bodies: list, clients: int, timeout_s: float) -> LoadResult:
    import httpx

    result = LoadResult("closed", clients, 0.0)
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        async def user():
            while queue:
                await _send(client, url, queue.pop(), time.perf_counter(), result)
        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(clients)))
        result.duration_s = time.perf_counter() - start
    return result


def round_robin_capacity(router_url: str, prompts: list[str], requests: int = 60, *,
                         clients: int = 6, seed: int = 0, max_tokens: int = 2) -> float:
    """Requests per second the replicas sustain behind a round-robin router on this load:
    ``clients`` users in a closed loop (each sends its next request when its answer is in)."""
    bodies, _ = _bodies(prompts, requests, 1.0, seed + 1, max_tokens)
    result = run_coroutine(_closed_loop(router_url.rstrip("/") + "/v1/completions", bodies,
                                        clients, 60.0))
    return result.rps


def _counters(url: str) -> tuple[float, float]:
    import httpx

    from labkit.serving.metrics import metric_sum

    text = httpx.get(url + "/metrics", timeout=30).text
    return (metric_sum(text, "vllm:prefix_cache_hits_total"),
            metric_sum(text, "vllm:prefix_cache_queries_total"))


def _calibrate(url: str, tenants: int, system_tokens: int, seed: int) -> tuple[list, int]:
    """System prompts of about ``system_tokens`` tokens, measured on the server (its
    ``usage.prompt_tokens``); returns them and the longest request's prompt tokens."""
    import httpx

    def tokens(text: str) -> int:
        body = {"prompt": text, "max_tokens": 1, "temperature": 0.0}
        resp = httpx.post(url + "/v1/completions", json=body, timeout=30)
        resp.raise_for_status()
        return resp.json()["usage"]["prompt_tokens"]

    chars = 4 * system_tokens
    for _ in range(3):
        got = tokens(tenant_prompts(1, chars, seed)[0])
        if abs(got - system_tokens) <= 2:
            break
        chars = max(8, int(chars * system_tokens / got))
    prompts = tenant_prompts(tenants, chars, seed)
    longest = max(tokens(p + _question(random.Random(0), 99999)) for p in prompts[:2])
    return prompts, longest


def _start_all(servers: list) -> None:
    """Start the servers in parallel (each waits for its own readiness)."""
    errors: list = []

    def start(server):
        try:
            server.start()
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _summary(result: LoadResult, hits: float, queries: float) -> dict:
    return {"ttft_p50_ms": percentile(result.ttfts_s, 50) * 1e3,
            "ttft_p95_ms": percentile(result.ttfts_s, 95) * 1e3,
            "ttft_mean_ms": statistics.fmean(result.ttfts_s) * 1e3 if result.ttfts_s
            else math.nan,
            "req_per_s": result.rps, "prefix_hit_rate": hits / queries if queries else 0.0,
            "errors": sum(1 for s in result.statuses if s != 200),
            "achieved_rate": result.achieved_rate}


def bench_route(replicas: int = 3, requests: int = 90, tenants: int = 6, seed: int = 0, *,
                rate: float | None = None, load: float = 0.7, model: str = "tiny-gpt",
                system_tokens: int = 200,
                max_tokens: int = 2, block_size: int = 16, prefix_cache_blocks: int | None = None,
                max_batch_size: int = 8, policies=POLICIES, threads: int = 1) -> dict:
    """Each policy of ``policies`` in front of the same ``replicas`` servers, on the same
    multi-tenant shared-prefix load (see the module docstring); every server and router is
    started for it and always stopped. ``requests`` per policy, in two halves: the policies
    run in turn, then again in reverse order, each half from emptied caches.

    ``prefix_cache_blocks`` (per replica) defaults to the blocks of ``ceil(tenants /
    replicas)`` system prompts plus half a prompt: room for the tenants a prefix-aware router
    sends to a replica, not for all of them.

    ``rate`` (arrivals per second): by default ``load`` x the throughput the replicas sustain
    behind a round-robin router on this load, measured first
    (:func:`round_robin_capacity`, key ``round_robin_capacity_rps``): the same relative load
    on a fast or a slow (or busy) machine. A router matters when replicas are busy; at 0.7 a
    round-robin fleet is busy but keeps up.
    """
    if not isinstance(replicas, int) or not 1 <= replicas <= 8:
        raise ValueError(f"replicas must be an integer from 1 to 8, got {replicas!r}")
    if not isinstance(tenants, int) or tenants < 1:
        raise ValueError(f"tenants must be an integer >= 1, got {tenants!r}")
    if rate is not None and not rate > 0 or not 0 < load <= 2:
        raise ValueError(f"rate must be > 0 (or None: load x the round-robin capacity) and "
                         f"load in (0, 2]; got rate {rate!r}, load {load!r}")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ValueError(f"policies must be among {POLICIES}, got {list(policies)!r}")
    per_prompt = -(-system_tokens // block_size)
    if prefix_cache_blocks is None:
        prefix_cache_blocks = -(-tenants // replicas) * per_prompt + per_prompt // 2
    began = time.perf_counter()
    out: dict = {}
    with contextlib.ExitStack() as stack:
        servers = [ServerProcess(model=model, batching="continuous",
                                 max_batch_size=max_batch_size, threads=threads,
                                 max_queue_size=max(64, requests), block_size=block_size,
                                 prefix_cache_blocks=prefix_cache_blocks)
                   for _ in range(replicas)]
        urls = [s.url for s in servers]
        routers = {policy: RouterProcess(replica=urls, policy=policy) for policy in policies}
        for process in servers + list(routers.values()):
            stack.callback(process.stop)
        _start_all(servers + list(routers.values()))        # in parallel: the start is slow
        prompts, longest = _calibrate(urls[0], tenants, system_tokens, seed)
        import httpx

        capacity = None
        if rate is None:
            probe = routers.get("round_robin")
            if probe is None:
                probe = RouterProcess(replica=urls, policy="round_robin").start()
                stack.callback(probe.stop)
            capacity = round_robin_capacity(probe.url, prompts, seed=seed,
                                            max_tokens=max_tokens)
            rate = load * capacity
        startup = time.perf_counter() - began

        # two rounds, the second in reverse order (ABC then CBA), each with half the requests
        # (the same arrivals for every policy): a machine that gets busier or quieter during
        # the run then weighs on every policy alike, not on the one that happens to run first
        order = list(routers) + list(reversed(routers))
        halves = [requests - requests // 2, requests // 2]
        merged = {p: {"result": LoadResult("open", rate, 0.0), "hits": 0.0, "queries": 0.0,
                      "sent": [0] * replicas} for p in routers}
        for step, policy in enumerate(order):
            part = step // len(routers)
            if halves[part] == 0:
                continue
            router, m = routers[policy], merged[policy]
            for url in urls:
                httpx.post(url + "/reset_prefix_cache", timeout=30).raise_for_status()
            before = [_counters(u) for u in urls]
            sent0 = [router.metric("labkit_router_requests_total", {"replica": u})
                     for u in urls]                      # the capacity probe's, if any
            result = shared_prefix_load(router.url, prompts, halves[part], rate,
                                        seed=seed + part, max_tokens=max_tokens)
            sent = [router.metric("labkit_router_requests_total", {"replica": u}) - n
                    for u, n in zip(urls, sent0, strict=True)]
            after = [_counters(u) for u in urls]
            m["hits"] += sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
            m["queries"] += sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
            m["sent"] = [a + int(b) for a, b in zip(m["sent"], sent, strict=True)]
            r = m["result"]
            r.statuses += result.statuses
            r.ttfts_s += result.ttfts_s
            r.latencies_s += result.latencies_s
            r.duration_s += result.duration_s
            r.send_s = (0.0 if math.isnan(r.send_s) else r.send_s) + result.send_s
        for policy, m in merged.items():
            out[policy] = {**_summary(m["result"], m["hits"], m["queries"]),
                           "requests_per_replica": m["sent"]}
    base = out.get("round_robin", {}).get("ttft_p50_ms")
    for summary in out.values():
        summary["prefix_vs_round_robin_ttft_p50"] = (summary["ttft_p50_ms"] / base
                                                     if base else math.nan)
    if "prefix_aware" in out:
        out["prefix_vs_round_robin_ttft_p50"] = out["prefix_aware"][
            "prefix_vs_round_robin_ttft_p50"]
    out.update({"replicas": replicas, "requests": requests, "tenants": tenants, "rate": rate,
                "load": load if capacity is not None else None,
                "round_robin_capacity_rps": capacity,
                "seed": seed, "model": model, "system_tokens": system_tokens,
                "prompt_tokens_max": longest, "max_tokens": max_tokens,
                "block_size": block_size, "prefix_cache_blocks": prefix_cache_blocks,
                "max_batch_size": max_batch_size, "threads": threads,
                "startup_s": startup, "duration_s": time.perf_counter() - began})
    return out


async def _one_by_one(url: str, bodies: list, timeout_s: float) -> LoadResult:
    import httpx

    result = LoadResult("closed", 1, 0.0)
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        start = time.perf_counter()
        for body in bodies:
            await _send(client, url, body, time.perf_counter(), result)
        result.duration_s = time.perf_counter() - start
    return result


def bench_prefix_cache(requests: int = 8, *, model: str = "smollm2", system_tokens: int = 400,
                       max_tokens: int = 2, seed: int = 0, threads: int = 1) -> dict:
    """Mean TTFT with prefix caching over without, on a load whose requests share one long
    system prompt (``system_tokens`` tokens, a question of their own after it): ``requests``
    streamed requests one after the other against a server with the cache (emptied first, so
    the first request misses), then the same against a server started with
    ``--no-enable-prefix-caching``. SmolLM2 by default: its prefill of a few hundred tokens
    takes most of a second on one CPU thread, so the time to first token is mostly prefill,
    as it is for a long prompt on a GPU, not HTTP overhead.

    Keys: ``prefix_cache_ttft_ratio`` (on / off, mean TTFT), ``prefix_cache_ttft_mean_ms_on``
    / ``_off``, ``prefix_cache_hit_rate`` (hit tokens / queried tokens, with the cache),
    ``prefix_cache_prompt_tokens``, ``prefix_cache_requests``, ``prefix_cache_model``,
    ``prefix_cache_errors``."""
    import httpx

    if not isinstance(requests, int) or not 2 <= requests <= 1000:
        raise ValueError(f"requests must be an integer from 2 to 1000, got {requests!r}")
    runs, hit_rate, tokens = {}, 0.0, 0
    prompt = tenant_prompts(1, 4 * system_tokens, seed)[0]
    rng = random.Random(seed)
    bodies = [{"prompt": prompt + _question(rng, i), "max_tokens": max_tokens,
               "temperature": 0.0, "stream": True} for i in range(requests)]
    for enable in (True, False):
        with ServerProcess(model=model, batching="continuous", threads=threads,
                           enable_prefix_caching=enable).start() as server:
            if enable:
                answer = httpx.post(server.url + "/v1/completions", timeout=60,
                                    json={**bodies[0], "stream": False, "max_tokens": 1})
                answer.raise_for_status()
                tokens = answer.json()["usage"]["prompt_tokens"]
                httpx.post(server.url + "/reset_prefix_cache", timeout=30).raise_for_status()
            hits0, queries0 = _counters(server.url)
            runs[enable] = run_coroutine(_one_by_one(server.url + "/v1/completions", bodies,
                                                     120.0))
            hits, queries = _counters(server.url)
            if enable:
                hit_rate = (hits - hits0) / max(1.0, queries - queries0)
    on, off = (statistics.fmean(runs[k].ttfts_s) * 1e3 if runs[k].ttfts_s else math.nan
               for k in (True, False))
    return {"prefix_cache_ttft_ratio": on / off, "prefix_cache_ttft_mean_ms_on": on,
            "prefix_cache_ttft_mean_ms_off": off, "prefix_cache_hit_rate": hit_rate,
            "prefix_cache_prompt_tokens": tokens, "prefix_cache_requests": requests,
            "prefix_cache_model": model,
            "prefix_cache_errors": sum(1 for r in runs.values() for s in r.statuses
                                       if s != 200)}


def bench_route_cli(argv: list[str]) -> int:
    """``python -m labkit bench route [--json] [--replicas 3] [--requests N] …``."""
    p = argparse.ArgumentParser(prog="python -m labkit bench route",
                                description=bench_route.__doc__.splitlines()[0])
    for flag, kind, default, help_text in (
            ("replicas", int, 3, "replicas of the server"),
            ("requests", int, 90, "requests per policy"),
            ("tenants", int, 6, "tenants, each with its own system prompt"),
            ("rate", float, None, "arrivals per second (Poisson); default: --load x the "
                                  "round-robin capacity, measured first"),
            ("load", float, 0.7, "the rate as a fraction of the round-robin capacity"),
            ("seed", int, 0, "seed of the arrivals, tenants and questions"),
            ("model", str, "tiny-gpt", "the replicas' model"),
            ("system-tokens", int, 200, "tokens of each tenant's system prompt"),
            ("max-tokens", int, 2, "tokens generated per request"),
            ("prefix-cache-blocks", int, None,
             "per replica (default: room for ceil(tenants/replicas) system prompts)")):
        p.add_argument(f"--{flag}", type=kind, default=default, help=help_text)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    args = p.parse_args(argv)
    try:
        result = bench_route(args.replicas, args.requests, args.tenants, args.seed,
                             rate=args.rate, load=args.load, model=args.model,
                             system_tokens=args.system_tokens,
                             max_tokens=args.max_tokens,
                             prefix_cache_blocks=args.prefix_cache_blocks,
                             policies=args.policies)
    except ValueError as err:
        print(f"labkit bench route: {err}", file=sys.stderr)
        return 2
    errors = sum(result[p]["errors"] for p in args.policies)
    if args.json:
        print(json.dumps(result))
    else:
        for policy in args.policies:
            r = result[policy]
            print(f"{policy:>17}: TTFT p50 {r['ttft_p50_ms']:.1f} ms, p95 "
                  f"{r['ttft_p95_ms']:.1f} ms, {r['req_per_s']:.1f} req/s, prefix hit rate "
                  f"{r['prefix_hit_rate']:.0%}, per replica {r['requests_per_replica']}, "
                  f"p50 / round-robin {r['prefix_vs_round_robin_ttft_p50']:.2f}")
        print(f"{args.requests} requests per policy at {result['rate']:.1f}/s, {args.tenants} "
              f"tenants, {args.replicas} replicas, {result['duration_s']:.0f} s")
    return 0 if errors == 0 else 1
