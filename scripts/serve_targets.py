"""Overload and memory targets of the course server (labkit.serving); run by hand, not a unit test.

    .venv/bin/python scripts/serve_targets.py [--duration 60] [--batching dynamic|continuous]
                                              [--engine process|thread]

1. Finds the saturating rate with 32 closed-loop clients (labkit.serving.loadgen).
2. Offers twice that rate as Poisson arrivals for --duration seconds and reports the answers
   by status (expect 200s and 429s, no 5xx), then checks that the server is still healthy.
   The load comes from `wrk` when it is installed (`apt-get install wrk`): a C load generator
   that needs a few percent of a core, paced by a Lua script (1,024 connections, each waiting
   an exponential gap between requests). Without wrk it falls back to labkit.serving.loadgen's open
   loop, which on a 2-core machine competes with the server for the CPU and may not reach the
   offered rate (`achieved_rate` says what it reached).
3. Floods it: 256 connections, no think time, for 10 s (issue #14's reproduction) with `wrk`
   when it is installed, else with labkit.serving.loadgen.flood; reports the answers by
   status and the goodput over the saturating rate.
4. Sends 1,000 requests in ten rounds and prints the resident memory of the front end and
   the engine after each.

Every rate depends on the machine: the first line reports the cores the server and the load
generator share. Network failures are reported by exception type (``failures``), apart from
the HTTP statuses.

One JSON object per line. Traffic goes only to 127.0.0.1; the server is always stopped.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import httpx

from labkit.serving.config import BATCHING, ENGINES
from labkit.serving.loadgen import closed_loop, flood, open_loop
from labkit.serving.process import start_server

POISSON_LUA = """
wrk.method = "POST"
wrk.body = '{"prompt": "The pod", "max_tokens": 32}'
wrk.headers["Content-Type"] = "application/json"
local mean_ms = tonumber(os.getenv("LABKIT_MEAN_GAP_MS"))
function delay() return -math.log(1 - math.random()) * mean_ms end
"""


def say(**kw):
    print(json.dumps(kw), flush=True)


def statuses(url: str) -> dict:
    text = httpx.get(url + "/metrics").text
    return {m[1]: int(float(m[2])) for m in
            re.finditer(r'^labkit_requests_total\{status="(\d+)"\} (\S+)$', text, re.M)}


def overload_with_wrk(url: str, rate: float, duration: float, busy_s: float,
                      connections: int = 1024) -> dict:
    before = statuses(url)
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "poisson.lua")
        with open(script, "w") as f:
            f.write(POISSON_LUA)
        # each connection sends one request every connections/rate seconds on average: a gap
        # drawn from an exponential distribution plus the time its request takes (busy_s, an
        # estimate), so that together they offer about `rate` requests per second
        gap_s = max(1e-3, connections / rate - busy_s)
        env = dict(os.environ, LABKIT_MEAN_GAP_MS=str(1e3 * gap_s))
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s",
                              "--timeout", "30s", "-s", script, url + "/v1/completions"],
                             capture_output=True, text=True, env=env, check=True).stdout
    after = statuses(url)
    answered = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    sent = float(re.search(r"Requests/sec:\s+(\S+)", out)[1])
    return {"generator": "wrk", "offered_rate": rate, "achieved_rate": sent,
            "by_status": answered, "ok_rps": answered.get("200", 0) / duration,
            "wrk_latency_line": next((l.strip() for l in out.splitlines()
                                      if l.strip().startswith("Latency")), "")}


FLOOD_LUA = """
wrk.method = "POST"
wrk.body = '{"prompt": "The pod", "max_tokens": 32}'
wrk.headers["Content-Type"] = "application/json"
"""


def flood_with_wrk(url: str, duration: float, connections: int = 256) -> dict:
    before = statuses(url)
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "flood.lua")
        with open(script, "w") as f:
            f.write(FLOOD_LUA)
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s",
                              "--timeout", "30s", "-s", script, url + "/v1/completions"],
                             capture_output=True, text=True, check=True).stdout
    after = statuses(url)
    answered = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {"generator": "wrk", "connections": connections,
            "answers_per_s": float(re.search(r"Requests/sec:\s+(\S+)", out)[1]),
            "by_status": answered, "ok_rps": answered.get("200", 0) / duration}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=60.0, help="overload seconds")
    p.add_argument("--batching", choices=BATCHING, default="dynamic")
    p.add_argument("--engine", choices=ENGINES, default="process")
    args = p.parse_args()
    with start_server(max_batch_size=16, batching=args.batching, engine=args.engine) as s:
        closed_loop(s.url, 16, 64, max_tokens=32)
        sat = closed_loop(s.url, 32, 320, max_tokens=32)
        # the condition every number below holds under: this machine's cores, shared by the
        # server (one inference thread) and the load generator
        say(batching=args.batching, engine=args.engine, cores=len(os.sched_getaffinity(0)),
            saturating_rps=sat.rps, sat_p95_ms=sat.p95_ms)
        rate = 2 * sat.rps
        t0 = time.perf_counter()
        if shutil.which("wrk"):
            # about half the requests are accepted (they take about the saturated median
            # latency), the others are refused at once
            over = overload_with_wrk(s.url, rate, args.duration, busy_s=0.5 * sat.p50_ms / 1e3)
        else:
            over = {"generator": "labkit.serving.loadgen",
                    **open_loop(s.url, rate, args.duration, max_tokens=32, seed=1,
                                connections=512).as_dict()}
        say(overload={"wall_s": time.perf_counter() - t0, **over})
        say(alive_after=s.running() and httpx.get(s.url + "/healthz").status_code == 200,
            answered_5xx={k: v for k, v in statuses(s.url).items() if k.startswith("5")})
        if shutil.which("wrk"):
            flooded = flood_with_wrk(s.url, 10)
        else:
            f = flood(s.url, 256, 10, max_tokens=32)
            flooded = {"generator": "labkit.serving.loadgen.flood", **f.as_dict(),
                       "ok_rps": f.rps}
        say(flood={**flooded, "goodput_ratio": flooded["ok_rps"] / sat.rps})
        engine = args.engine == "process"

        def rss():
            return s.rss_bytes() + (s.rss_bytes(engine=True) if engine else 0)
        sizes = [rss()]
        for _ in range(10):
            r = closed_loop(s.url, 16, 100, max_tokens=32)
            assert r.ok == 100, r
            sizes.append(rss())
        say(rss_mib_every_100=[round(x / 2**20, 1) for x in sizes],
            rss_growth_mib=(sizes[-1] - sizes[0]) / 2**20,
            rss_counts="front end + engine" if engine else "one process")


if __name__ == "__main__":
    main()
