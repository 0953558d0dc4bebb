"""Overload and memory targets of the course server (labkit.serve); run by hand, not a unit test.

    .venv/bin/python scripts/serve_targets.py [DURATION_S]   # default 60

Finds the saturating rate with 32 closed-loop clients, offers twice that rate as Poisson
arrivals for DURATION_S seconds (expect 429s, no 5xx, the server still healthy after), then
sends 1,000 requests in ten rounds and prints the server's resident memory after each round.
One JSON object per line. Traffic goes only to 127.0.0.1; the server is always stopped.
"""
import json, sys, time, httpx
from labkit.serve import start_server
from labkit.loadgen import closed_loop, open_loop
duration = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
def say(**kw):
    print(json.dumps(kw), flush=True)
with start_server(max_batch_size=16) as s:
    closed_loop(s.url, 16, 64, max_tokens=32)
    sat = closed_loop(s.url, 32, 320, max_tokens=32)
    say(saturating_rps=sat.rps, sat_p95_ms=sat.p95_ms)
    rate = 2 * sat.rps
    t0 = time.perf_counter()
    over = open_loop(s.url, rate, duration, max_tokens=32, seed=1, connections=512)
    say(overload={"rate": rate, "wall_s": time.perf_counter() - t0, **over.as_dict()})
    say(alive_after=s.running() and httpx.get(s.url + "/healthz").status_code == 200,
        metrics_5xx=[l for l in httpx.get(s.url + "/metrics").text.splitlines()
                     if l.startswith('labkit_requests_total{status="5')])
    rss = [s.rss_bytes()]
    for _ in range(10):
        r = closed_loop(s.url, 16, 100, max_tokens=32)
        assert r.ok == 100, r
        rss.append(s.rss_bytes())
    say(rss_mib_every_100=[round(x / 2**20, 1) for x in rss],
        rss_growth_mib=(rss[-1] - rss[0]) / 2**20)
