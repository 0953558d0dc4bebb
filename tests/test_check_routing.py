"""labkit.check.routing (Lab 7): every check accepts the right answer and rejects the typical
wrong ones (the inverse, milliseconds for seconds, off by 2x, the wrong row or policy, an
unfilled ``...``) with its own hint."""

import math
from pathlib import Path

import pytest

from labkit import k8s
from labkit.check import LabCheckError, Passed
from labkit.check import routing as check
from labkit.serving.loadgen import LoadResult

ROOT = Path(__file__).resolve().parent.parent


def rejects(hint, fn, *args, **kwargs):
    with pytest.raises(LabCheckError, match=hint):
        fn(*args, **kwargs)


# -- Task 1 ------------------------------------------------------------------------------------
def streamed(ttfts, latency):
    n = len(ttfts)
    return LoadResult("closed", 8, 2.0, statuses=[200] * n, latencies_s=[latency] * n,
                      ttfts_s=list(ttfts))


CACHED = streamed([0.010, 0.020, 0.030, 0.100], latency=0.30)     # mean 40 ms, p50 25 ms
UNCACHED = streamed([0.100, 0.100, 0.100, 0.100], latency=0.40)   # mean 100 ms, p50 100 ms


def test_prefix_cache_ratio():
    ok = check.check_prefix_cache_ratio(0.4, CACHED, UNCACHED)
    assert isinstance(ok, Passed) and "0.40x" in ok
    rejects("upside down", check.check_prefix_cache_ratio, 2.5, CACHED, UNCACHED)
    rejects("seconds and the other in milliseconds", check.check_prefix_cache_ratio, 0.4e-3,
            CACHED, UNCACHED)
    rejects("seconds and the other in milliseconds", check.check_prefix_cache_ratio, 400,
            CACHED, UNCACHED)
    rejects("difference in milliseconds", check.check_prefix_cache_ratio, 60, CACHED, UNCACHED)
    rejects("share of TTFT saved", check.check_prefix_cache_ratio, 0.6, CACHED, UNCACHED)
    rejects("median TTFTs", check.check_prefix_cache_ratio, 0.25, CACHED, UNCACHED)
    rejects("whole-request latencies", check.check_prefix_cache_ratio, 0.75, CACHED, UNCACHED)
    rejects(r"2\.00x the expected", check.check_prefix_cache_ratio, 0.8, CACHED, UNCACHED)
    rejects("replace it with your answer", check.check_prefix_cache_ratio, ..., CACHED, UNCACHED)
    rejects("stream=True", check.check_prefix_cache_ratio, 0.4, streamed([], 0.1), UNCACHED)


def test_prefix_cache_ratio_accepts_dicts():
    a = {"ttft_mean_ms": 40.0, "ttft_p50_ms": 25.0, "p50_ms": 300.0}
    b = {"ttft_mean_ms": 100.0, "ttft_p50_ms": 100.0, "p50_ms": 400.0}
    assert check.check_prefix_cache_ratio(0.4, a, b)


# -- Tasks 2 and 3 -----------------------------------------------------------------------------
def row(p50, p95, rps, hit):
    return {"ttft_p50_ms": p50, "ttft_p95_ms": p95, "req_per_s": rps, "prefix_hit_rate": hit}


RESULT = {"round_robin": row(100.0, 300.0, 30.0, 0.40),
          "least_outstanding": row(90.0, 240.0, 36.0, 0.42),
          "prefix_aware": row(35.0, 120.0, 45.0, 0.85),
          "prefix_vs_round_robin_ttft_p50": 0.35}


def test_prefix_vs_round_robin():
    ok = check.check_prefix_vs_round_robin(0.35, RESULT)
    assert isinstance(ok, Passed) and "85%" in ok and "40%" in ok
    assert check.check_prefix_vs_round_robin(RESULT["prefix_vs_round_robin_ttft_p50"], RESULT)
    rejects("upside down", check.check_prefix_vs_round_robin, 100 / 35, RESULT)
    rejects("p95 ratio", check.check_prefix_vs_round_robin, 120 / 300, RESULT)
    rejects("that is prefix_aware / least_outstanding", check.check_prefix_vs_round_robin,
            35 / 90, RESULT)
    rejects("that is least_outstanding / round_robin", check.check_prefix_vs_round_robin,
            0.9, RESULT)
    rejects("throughputs", check.check_prefix_vs_round_robin, 1.5, RESULT)
    rejects("ratio of hit rates", check.check_prefix_vs_round_robin, 0.85 / 0.40, RESULT)
    rejects(r"2\.00x the expected", check.check_prefix_vs_round_robin, 0.70, RESULT)
    rejects("replace it with your answer", check.check_prefix_vs_round_robin, ..., RESULT)
    rejects("bench_route", check.check_prefix_vs_round_robin, 0.35, {"round_robin": {}})


def test_miss_ratio():
    want = 0.60 / 0.15
    ok = check.check_miss_ratio(want, RESULT)
    assert isinstance(ok, Passed) and "4.0x" in ok
    rejects("upside down", check.check_miss_ratio, 1 / want, RESULT)
    rejects("ratio of hit rates", check.check_miss_ratio, 0.85 / 0.40, RESULT)
    rejects("ratio of hit rates", check.check_miss_ratio, 0.40 / 0.85, RESULT)
    rejects("difference of hit rates", check.check_miss_ratio, 0.45, RESULT)
    rejects("difference of hit rates", check.check_miss_ratio, 45, RESULT)
    rejects("fractions", check.check_miss_ratio, 99.6 / 99.15, RESULT)
    rejects(r"2\.00x the expected", check.check_miss_ratio, 2 * want, RESULT)
    rejects("replace it with your answer", check.check_miss_ratio, ..., RESULT)
    perfect = {**RESULT, "prefix_aware": row(35.0, 120.0, 45.0, 1.0)}
    rejects("undefined", check.check_miss_ratio, 1.0, perfect)


def test_least_outstanding_ratio():
    ok = check.check_least_outstanding_ratio(0.9, RESULT)
    assert isinstance(ok, Passed) and "42%" in ok
    rejects("upside down", check.check_least_outstanding_ratio, 100 / 90, RESULT)
    rejects("p95 ratio", check.check_least_outstanding_ratio, 240 / 300, RESULT)
    rejects("that is prefix_aware / round_robin", check.check_least_outstanding_ratio, 0.35,
            RESULT)
    rejects("throughputs", check.check_least_outstanding_ratio, 36 / 30, RESULT)
    rejects(r"2\.00x the expected", check.check_least_outstanding_ratio, 1.8, RESULT)
    rejects("replace it with your answer", check.check_least_outstanding_ratio, ..., RESULT)


def test_when_least_outstanding():
    assert set(check.LEAST_OUTSTANDING_CHOICES) == {"a", "b", "c", "d"}
    assert isinstance(check.check_when_least_outstanding("b"), Passed)
    assert check.check_when_least_outstanding(" (B) ")
    rejects("never looks at a prompt", check.check_when_least_outstanding, "a")
    rejects("same work", check.check_when_least_outstanding, "c")
    rejects("by count, not by work", check.check_when_least_outstanding, "d")
    rejects("one letter", check.check_when_least_outstanding, "e")
    rejects("still Ellipsis", check.check_when_least_outstanding, ...)


# -- Task 4 ------------------------------------------------------------------------------------
SIZING = dict(tenants=40, rps_per_tenant=0.5, result=RESULT, replicas=3)   # 20 req/s at 15 each


def test_replicas():
    ok = check.check_replicas(2, 15.0, **SIZING)
    assert isinstance(ok, Passed) and "2 replicas" in ok
    rejects("whole pool's throughput", check.check_replicas, 1, 45.0, **SIZING)
    rejects("seconds per request", check.check_replicas, 2, 1 / 15, **SIZING)
    rejects("round_robin's throughput", check.check_replicas, 2, 10.0, **SIZING)
    rejects(r"2\.00x the expected", check.check_replicas, 2, 30.0, **SIZING)
    rejects("round up", check.check_replicas, 20 / 15, 15.0, **SIZING)
    rejects("rounded down", check.check_replicas, 1, 15.0, **SIZING)
    rejects("serves one tenant", check.check_replicas, 1, 15.0,
            **{**SIZING, "tenants": 100})                                # 50 req/s: 4 replicas
    rejects("off by 2x", check.check_replicas, 4, 15.0, **SIZING)
    rejects("replace it with your answer", check.check_replicas, ..., 15.0, **SIZING)
    rejects("replace it with your answer", check.check_replicas, 2, ..., **SIZING)


def test_replicas_divided_by_the_pool():
    big = {**SIZING, "tenants": 400}                                     # 200 req/s
    assert check.check_replicas(math.ceil(200 / 15), 15.0, **big)
    rejects("whole pool's throughput", check.check_replicas, math.ceil(200 / 45), 15.0, **big)


# -- Task 5 ------------------------------------------------------------------------------------
DOCS = k8s.load_manifests(ROOT / "book" / "manifests" / "05-inference-pool.yaml")


def test_pool_reading():
    ok = check.check_pool_reading(8000, "vllm-llama3-8b-epp", DOCS)
    assert isinstance(ok, Passed) and "8000" in ok
    rejects("endpoint picker's port", check.check_pool_reading, 9002, "vllm-llama3-8b-epp", DOCS)
    rejects("Service's port", check.check_pool_reading, 80, "vllm-llama3-8b-epp", DOCS)
    rejects("targetPorts", check.check_pool_reading, 8080, "vllm-llama3-8b-epp", DOCS)
    rejects("the pool itself", check.check_pool_reading, 8000, "vllm-llama3-8b", DOCS)
    rejects("the Gateway", check.check_pool_reading, 8000, "inference-gateway", DOCS)
    rejects("endpointPickerRef.name", check.check_pool_reading, 8000, "epp", DOCS)
    rejects("replace it with your answer", check.check_pool_reading, ..., "x", DOCS)
    rejects("fill in a name", check.check_pool_reading, 8000, ..., DOCS)
    rejects("InferencePool among them", check.check_pool_reading, 8000, "x", DOCS[:1])
