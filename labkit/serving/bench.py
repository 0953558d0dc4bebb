"""``python -m labkit bench serve``: batching off vs on, dynamic vs continuous, and goodput
under a flood, each against servers started for it and always stopped.

Imports :mod:`labkit.serving.process` (to start servers) and :mod:`labkit.serving.loadgen`.
"""

from __future__ import annotations

import argparse
import json
import math

from labkit.serving.process import start_server

__all__ = ["bench_serve", "bench_serve_cli", "bench_flood", "FLOOD_TARGETS"]

#: the targets of issue #14 for a flood: goodput ratio at least, 5xx at most, p99 of a 429 and
#: worst /healthz at most (ms)
FLOOD_TARGETS = {"flood_goodput_ratio": 0.9, "flood_5xx": 0, "flood_429_p99_ms": 50.0,
                 "flood_healthz_max_ms": 100.0}


def bench_flood(server, *, connections: int = 256, duration_s: float = 5.0,
                saturate_clients: int = 64, max_tokens: int = 32, open_rate_factor: float = 10,
                prefix: str = "flood_") -> dict:
    """Goodput of ``server`` under a flood, against its saturating throughput measured just
    before on the same server with the same generator and request.

    1. saturating throughput: ``saturate_clients`` connections in a closed loop (with the
       default queue of 64 nobody is refused, and the batch stays full);
    2. closed-loop flood: ``connections`` connections, no think time;
    3. open-loop flood: Poisson arrivals at ``open_rate_factor`` x the saturating rate;
    4. saturating throughput again. On a shared machine the capacity drifts while other
       work comes and goes, so the ratios divide by the *larger* of the two saturating
       measurements (the harder test).

    Keys (with ``prefix``): ``goodput_ratio`` (flood 200/s over saturating 200/s), ``5xx``
    (5xx answers and failed connections, both floods), ``429_p99_ms`` (closed-loop flood),
    ``healthz_max_ms`` (worst of both), ``saturating_rps``, ``ok_rps``, ``offered_rps`` (all
    answers per second in the closed loop), ``connections``, and ``open_*`` for the open loop.
    """
    from labkit.serving.loadgen import flood

    flood(server.url, saturate_clients, 1.0, max_tokens=max_tokens)              # warm-up
    before = flood(server.url, saturate_clients, duration_s, max_tokens=max_tokens)
    closed = flood(server.url, connections, duration_s, max_tokens=max_tokens)
    rate = open_rate_factor * before.rps
    opened = flood(server.url, connections, duration_s, rate=rate, max_tokens=max_tokens,
                   seed=1)
    after = flood(server.url, saturate_clients, duration_s, max_tokens=max_tokens)
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
            f"{p}open_5xx": opened.five_xx, f"{p}duration_s": duration_s}


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
                flood_duration_s: float = 5.0, engine: str = "process") -> dict:
    """Throughput of ``clients`` closed-loop clients against the server with batching off
    (``max_batch_size=1``) and on; each server is started for it and always stopped.

    With ``continuous=True`` it also compares dynamic and continuous batching under a load of
    *mixed* answer lengths (each request's ``max_tokens`` drawn from ``mixed_max_tokens``
    with ``seed``, streamed so that the time to first token is measured): the dynamic run
    uses the batched server above, the continuous one a third server with
    ``batching="continuous"`` and ``max_batch_size`` slots. That adds the ``mixed_*`` and
    ``*_continuous`` keys; the others keep their meaning (fixed ``max_tokens``, not
    streamed, ``errors`` counting those two runs only).
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
                                      duration_s=flood_duration_s, max_tokens=max_tokens)
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
                         flood_duration_s=args.flood_duration_s, engine=args.engine)
    failed = result["errors"] + result.get("errors_continuous", 0) \
        + result.get("flood_saturating_5xx", 0)
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
        if "flood_goodput_ratio" in result:
            for key, (value, target, met) in flood_verdicts(result).items():
                print(f"{key}: {value:.3g} (target {'>=' if 'ratio' in key else '<='} "
                      f"{target:g}): {'met' if met else 'NOT met'}")
    return 0 if failed == 0 else 1


