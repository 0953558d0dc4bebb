"""``python -m labkit bench serve``: batching off vs on, dynamic vs continuous, and goodput
under a flood, each against servers started for it and always stopped.

The closed-loop flood uses ``wrk`` (a C load generator: ``apt-get install wrk``) when it is
installed and :func:`labkit.serving.loadgen.flood` otherwise; ``flood_generator`` says which.
The difference matters on a small machine: the generator shares the cores with the server,
and a closed loop with no think time keeps it busy whatever it is, so the less CPU it spends
per request, the more is left for the server. On a cluster the load comes from elsewhere.

Imports :mod:`labkit.serving.process` (to start servers), :mod:`labkit.serving.loadgen`, and
runs ``wrk`` as a subprocess when present.
"""

from __future__ import annotations

import argparse
import json
import math

from labkit.serving.process import start_server

__all__ = ["bench_serve", "bench_serve_cli", "bench_flood", "FLOOD_TARGETS"]

#: the targets of issue #14 for a flood (goodput ratio at least, 5xx at most, p99 of a 429
#: and worst /healthz at most, in ms)
FLOOD_TARGETS = {"flood_goodput_ratio": 0.9, "flood_5xx": 0, "flood_429_p99_ms": 50.0,
                 "flood_healthz_max_ms": 100.0}


class WrkRun:
    """A closed-loop flood by ``wrk``, read like a :class:`~labkit.serving.loadgen.FloodResult`:
    answers by status from the server's ``labkit_requests_total`` (before and after). wrk
    cannot tell the latency of a 429 from that of a 200, so a probe thread sends, every 50 ms
    during the run, one ``GET /healthz`` and one completion request on fresh connections, as a
    user arriving during the flood would: ``p_ms(status, q)`` is over the probe's completion
    requests of that status, ``healthz_s`` its health checks."""

    LUA = ('wrk.method = "POST"\nwrk.body = \'{body}\'\n'
           'wrk.headers["Content-Type"] = "application/json"\n')

    def __init__(self, url: str, connections: int, duration_s: float, max_tokens: int) -> None:
        import os
        import re
        import subprocess
        import tempfile
        import threading
        import time

        self.mode, self.offered = "closed", connections
        seconds = max(1, round(duration_s))
        body = json.dumps({"prompt": "The pod", "max_tokens": max_tokens, "temperature": 0.0})
        before = _statuses(url)
        self.healthz_s: list[float] = []
        self.probe_s: dict[int, list[float]] = {}
        done = threading.Event()
        prober = threading.Thread(target=_probe, args=(url, body, done, self.healthz_s,
                                                       self.probe_s), daemon=True)
        prober.start()
        try:
            with tempfile.TemporaryDirectory() as folder:
                script = os.path.join(folder, "flood.lua")
                with open(script, "w") as f:
                    f.write(self.LUA.format(body=body))
                started = time.perf_counter()
                out = subprocess.run(
                    ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
                     "--latency", "-s", script, url + "/v1/completions"],
                    capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
                self.duration_s = time.perf_counter() - started
        finally:
            done.set()
            prober.join(10)
        after = _statuses(url)
        self.by_status = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        span = re.search(r"requests in ([\d.]+\w+),", out)
        self.duration_s = _wrk_seconds(span[1]) if span else self.duration_s
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                           r"timeout (\d+)", out)
        self.socket_errors = sum(int(x) for x in errors.groups()) if errors else 0
        self.answers = int(re.search(r"(\d+) requests in", out)[1])
        self.output = out

    def count(self, status: int) -> int:
        return self.by_status.get(str(status), 0)

    @property
    def ok(self) -> int:
        return self.count(200)

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s

    @property
    def answered_rps(self) -> float:
        return self.answers / self.duration_s

    @property
    def five_xx(self) -> int:
        return sum(n for k, n in self.by_status.items() if int(k) >= 500) + self.socket_errors

    def p_ms(self, status: int, q: float) -> float:
        """The ``q``-th percentile of the probe's requests answered ``status``, ms."""
        from labkit.serving.loadgen import percentile

        return percentile(self.probe_s.get(status, ()), q) * 1e3

    @property
    def healthz_max_ms(self) -> float:
        return max(self.healthz_s) * 1e3 if self.healthz_s else math.nan


def _wrk_seconds(text: str) -> float:
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("m", 60.0), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    return float(text)


def _statuses(url: str) -> dict:
    import httpx

    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    return {s.labels["status"]: int(s.value) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "labkit_requests_total"}


def _probe(url: str, body: str, done, healthz: list, by_status: dict) -> None:
    """Every 50 ms until ``done``: ``GET /healthz`` and one completion request, each on a
    fresh connection; record their latencies (a failed health check counts as ``inf``)."""
    import socket
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = f"Host: {parts.netloc}\r\nConnection: close\r\n"
    health = f"GET /healthz HTTP/1.1\r\n{head}\r\n".encode()
    post = (f"POST /v1/completions HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def call(request: bytes) -> tuple[int, float]:
        began = time.perf_counter()
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(request)
            line = sock.recv(64)
        return int(line.split()[1]), time.perf_counter() - began

    while not done.is_set():
        try:
            status, seconds = call(health)
            healthz.append(seconds if status == 200 else math.inf)
        except (OSError, IndexError, ValueError):
            healthz.append(math.inf)
        try:
            status, seconds = call(post)
            by_status.setdefault(status, []).append(seconds)
        except (OSError, IndexError, ValueError):
            by_status.setdefault(0, []).append(math.inf)
        done.wait(0.05)


def bench_flood(server, *, connections: int = 256, duration_s: float = 5.0,
                saturate_clients: int = 64, max_tokens: int = 32, open_rate_factor: float = 10,
                prefix: str = "flood_", generator: str = "auto") -> dict:
    """Goodput of ``server`` under a flood, against its saturating throughput measured just
    before on the same server with the same generator and request.

    1. saturating throughput: ``saturate_clients`` connections in a closed loop (with the
       default queue of 64 nobody is refused, and the batch stays full);
    2. closed-loop flood: ``connections`` connections, no think time;
    3. open-loop flood: Poisson arrivals at ``open_rate_factor`` x the saturating rate;
    4. saturating throughput again. On a shared machine the capacity drifts while other
       work comes and goes, so the ratios divide by the *larger* of the two saturating
       measurements (the harder test).

    ``generator``: ``"wrk"``, ``"python"`` (:func:`~labkit.serving.loadgen.flood`) or
    ``"auto"`` (wrk when installed) for steps 1, 2 and 4; the open loop always uses
    :func:`~labkit.serving.loadgen.flood`.

    Keys (with ``prefix``): ``goodput_ratio`` (flood 200/s over saturating 200/s), ``5xx``
    (5xx answers and failed connections, both floods), ``429_p99_ms`` (closed-loop flood;
    with wrk, over the probe's requests answered 429),
    ``healthz_max_ms`` (worst of both), ``saturating_rps``, ``ok_rps``, ``offered_rps`` (all
    answers per second in the closed loop), ``connections``, and ``open_*`` for the open loop.
    """
    import shutil

    from labkit.serving.loadgen import flood

    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"

    def closed_loop(connections, seconds):
        if generator == "wrk":
            return WrkRun(server.url, connections, seconds, max_tokens)
        return flood(server.url, connections, seconds, max_tokens=max_tokens)

    closed_loop(saturate_clients, 1.0)                                             # warm-up
    before = closed_loop(saturate_clients, duration_s)
    closed = closed_loop(connections, duration_s)
    rate = open_rate_factor * before.rps
    opened = flood(server.url, connections, duration_s, rate=rate, max_tokens=max_tokens,
                   seed=1)
    after = closed_loop(saturate_clients, duration_s)
    sat = max(before, after, key=lambda r: r.rps)
    p = prefix
    return {f"{p}goodput_ratio": closed.rps / sat.rps, f"{p}5xx": closed.five_xx + opened.five_xx,
            f"{p}429_p99_ms": closed.p_ms(429, 99),
            f"{p}healthz_max_ms": max(closed.healthz_max_ms, opened.healthz_max_ms),
            f"{p}saturating_rps": sat.rps,
            f"{p}saturating_rps_before": before.rps, f"{p}saturating_rps_after": after.rps,
            f"{p}saturating_5xx": before.five_xx + after.five_xx,
            f"{p}ok_rps": closed.rps, f"{p}offered_rps": closed.answered_rps,
            f"{p}refused": closed.count(429), f"{p}connections": connections,
            f"{p}open_rate": rate, f"{p}open_achieved_rate": opened.achieved_rate,
            f"{p}open_goodput_ratio": opened.rps / sat.rps,
            f"{p}open_429_p99_ms": opened.p_ms(429, 99),
            f"{p}open_5xx": opened.five_xx, f"{p}duration_s": duration_s,
            f"{p}generator": "wrk" if generator == "wrk" else "labkit.serving.loadgen.flood"}


def flood_verdicts(result: dict, prefix: str = "flood_") -> dict:
    """Each flood target of :data:`FLOOD_TARGETS`: ``{"key": (value, target, met)}``."""
    out = {}
    for key, target in FLOOD_TARGETS.items():
        value = result[prefix + key[len("flood_"):]]
        met = value >= target if key == "flood_goodput_ratio" else value <= target
        out[key] = (value, target, bool(met) and not math.isnan(value))
    return out


def bench_serve(clients: int = 16, requests: int = 192, max_tokens: int = 32,
                max_batch_size: int = 16, threads: int = 1, stream: bool = False, *,
                continuous: bool = False, mixed_max_tokens: tuple[int, int] = (4, 64),
                seed: int = 0, flood: bool = True, flood_connections: int = 256,
                flood_duration_s: float = 5.0, engine: str = "process",
                flood_generator: str = "auto", prefix: bool = True) -> dict:
    """Throughput of ``clients`` closed-loop clients against the server with batching off
    (``max_batch_size=1``) and on; each server is started for it and always stopped.

    With ``continuous=True`` it also compares dynamic and continuous batching under a load of
    *mixed* answer lengths (each request's ``max_tokens`` drawn from ``mixed_max_tokens``
    with ``seed``, streamed so that the time to first token is measured): the dynamic run
    uses the batched server above, the continuous one a third server with
    ``batching="continuous"`` and ``max_batch_size`` slots. That adds the ``mixed_*`` and
    ``*_continuous`` keys; the others keep their meaning (fixed ``max_tokens``, not
    streamed, ``errors`` counting those two runs only).

    With ``prefix=True`` (the default) it also measures automatic prefix caching on a load
    whose requests share a long system prompt
    (:func:`labkit.serving.routebench.bench_prefix_cache`): ``prefix_cache_ttft_ratio`` is the
    mean TTFT with the cache over without, with the ``prefix_cache_*`` keys that explain it.
    """
    from labkit.serving.loadgen import closed_loop

    mixed = tuple(mixed_max_tokens)

    def measure(server, max_tokens, stream, warm_seed=0):
        closed_loop(server.url, clients=clients, requests=2 * clients, max_tokens=max_tokens,
                    stream=stream, seed=warm_seed)                     # warm-up
        return closed_loop(server.url, clients=clients, requests=requests,
                           max_tokens=max_tokens, stream=stream, seed=seed)

    def measure_mixed(server):
        return measure(server, mixed, stream=True, warm_seed=seed + 1)

    limit = {"max_tokens_limit": mixed[1]} if continuous and mixed[1] > 128 else {}
    results, mixed_runs, flooded = {}, {}, {}
    for label, bs in (("unbatched", 1), ("batched", max_batch_size)):
        with start_server(max_batch_size=bs, threads=threads, engine=engine,
                          max_queue_size=max(64, 2 * clients), **limit) as server:
            results[label] = measure(server, max_tokens, stream)
            if continuous and label == "batched":
                mixed_runs["dynamic"] = measure_mixed(server)
            if flood and label == "batched":
                flooded = bench_flood(server, connections=flood_connections,
                                      duration_s=flood_duration_s, max_tokens=max_tokens,
                                      generator=flood_generator)
    if continuous:
        with start_server(batching="continuous", max_batch_size=max_batch_size,
                          threads=threads, max_queue_size=max(64, 2 * clients),
                          engine=engine, **limit) as server:
            mixed_runs["continuous"] = measure_mixed(server)
    un, ba = results["unbatched"], results["batched"]
    errors = {f"{k}:{s}": n for k, r in results.items() for s, n in r.errors.items()}
    out = {"clients": clients, "requests": requests, "max_tokens": max_tokens,
           "max_batch_size": max_batch_size, "threads": threads,
           "unbatched_rps": un.rps, "batched_rps": ba.rps, "ratio": ba.rps / un.rps,
           "p50_ms_unbatched": un.p50_ms, "p50_ms_batched": ba.p50_ms,
           "p95_ms_unbatched": un.p95_ms, "p95_ms_batched": ba.p95_ms,
           "errors": sum(errors.values()), "errors_by_status": errors, "engine": engine}
    out.update(flooded)
    if prefix:
        from labkit.serving.routebench import bench_prefix_cache

        out.update(bench_prefix_cache(threads=threads, seed=seed))
    if continuous:
        dy, co = mixed_runs["dynamic"], mixed_runs["continuous"]
        out.update({
            "mixed_max_tokens": list(mixed),
            "mixed_dynamic_rps": dy.rps, "continuous_rps": co.rps,
            "continuous_ratio": co.rps / dy.rps,
            "p50_ms_mixed_dynamic": dy.p50_ms, "p50_ms_continuous": co.p50_ms,
            "p95_ms_mixed_dynamic": dy.p95_ms, "p95_ms_continuous": co.p95_ms,
            "ttft_mean_ms_mixed_dynamic": dy.ttft_mean_ms,
            "ttft_mean_ms_continuous": co.ttft_mean_ms,
            "ttft_p95_ms_mixed_dynamic": dy.ttft_p95_ms, "ttft_p95_ms_continuous": co.ttft_p95_ms,
            "errors_continuous": sum(sum(r.errors.values()) for r in (dy, co))})
    return out


def bench_serve_cli(argv: list[str]) -> int:
    """``python -m labkit bench serve [--json] [--continuous]``: batching off vs on at 16
    clients; with ``--continuous`` also dynamic vs continuous batching at mixed lengths."""
    p = argparse.ArgumentParser(prog="python -m labkit bench serve",
                                description=bench_serve.__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=192, help="measured requests per setting")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--continuous", action="store_true",
                   help="also compare dynamic and continuous batching under mixed answer "
                        "lengths (streamed; adds throughput, p95 latency and TTFT keys)")
    p.add_argument("--mixed-max-tokens", type=int, nargs=2, default=(4, 64),
                   metavar=("LOW", "HIGH"),
                   help="with --continuous: each request's max_tokens is drawn from LOW..HIGH "
                        "(default 4 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mixed lengths")
    p.add_argument("--no-flood", action="store_true",
                   help="skip the flood (goodput under overload, the flood_* keys)")
    p.add_argument("--flood-connections", type=int, default=256)
    p.add_argument("--flood-duration-s", type=float, default=5.0)
    p.add_argument("--flood-generator", choices=("auto", "wrk", "python"), default="auto",
                   help="closed-loop flood by wrk (auto: when installed) or by "
                        "labkit.serving.loadgen.flood")
    p.add_argument("--no-prefix", action="store_true",
                   help="skip the prefix-cache run (mean TTFT with and without automatic "
                        "prefix caching, the prefix_cache_* keys)")
    p.add_argument("--engine", choices=("process", "thread"), default="process",
                   help="where the servers' engine runs (thread: the single-process design)")
    args = p.parse_args(argv)
    low, high = args.mixed_max_tokens
    if not 1 <= low <= high:
        p.error("--mixed-max-tokens needs 1 <= LOW <= HIGH")
    result = bench_serve(args.clients, args.requests, args.max_tokens, args.max_batch_size,
                         args.threads, continuous=args.continuous, mixed_max_tokens=(low, high),
                         seed=args.seed, flood=not args.no_flood,
                         flood_connections=args.flood_connections,
                         flood_duration_s=args.flood_duration_s, engine=args.engine,
                         flood_generator=args.flood_generator, prefix=not args.no_prefix)
    failed = result["errors"] + result.get("errors_continuous", 0) \
        + result.get("flood_saturating_5xx", 0) + result.get("prefix_cache_errors", 0)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.clients} clients, {args.max_tokens} tokens each: "
              f"unbatched {result['unbatched_rps']:.1f} req/s (p95 "
              f"{result['p95_ms_unbatched']:.0f} ms), batched {result['batched_rps']:.1f} "
              f"req/s (p95 {result['p95_ms_batched']:.0f} ms): {result['ratio']:.1f}x; "
              f"errors {result['errors']}")
        if args.continuous:
            r = result
            print(f"{args.clients} clients, {low}-{high} tokens each (streamed): dynamic "
                  f"{r['mixed_dynamic_rps']:.1f} req/s (p95 {r['p95_ms_mixed_dynamic']:.0f} ms, "
                  f"TTFT mean {r['ttft_mean_ms_mixed_dynamic']:.0f} / p95 "
                  f"{r['ttft_p95_ms_mixed_dynamic']:.0f} ms), continuous "
                  f"{r['continuous_rps']:.1f} req/s (p95 {r['p95_ms_continuous']:.0f} ms, TTFT "
                  f"mean {r['ttft_mean_ms_continuous']:.0f} / p95 "
                  f"{r['ttft_p95_ms_continuous']:.0f} ms): {r['continuous_ratio']:.1f}x; "
                  f"errors {r['errors_continuous']}")
        if "prefix_cache_ttft_ratio" in result:
            r = result
            print(f"shared system prompt ({r['prefix_cache_prompt_tokens']} tokens): mean TTFT "
                  f"{r['prefix_cache_ttft_mean_ms_on']:.1f} ms with prefix caching, "
                  f"{r['prefix_cache_ttft_mean_ms_off']:.1f} ms without: "
                  f"{r['prefix_cache_ttft_ratio']:.2f}x (hit rate "
                  f"{r['prefix_cache_hit_rate']:.0%})")
        if "flood_goodput_ratio" in result:
            for key, (value, target, met) in flood_verdicts(result).items():
                print(f"{key}: {value:.3g} (target {'>=' if 'ratio' in key else '<='} "
                      f"{target:g}): {'met' if met else 'NOT met'}")
    return 0 if failed == 0 else 1


