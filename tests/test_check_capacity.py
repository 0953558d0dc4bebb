"""labkit.check.capacity (Lab 6): every check accepts the right answer and rejects the usual
wrong ones (off by 2x, the wrong unit, the wrong row, the inverse, an unfilled ``...``), each
with its own hint."""

from __future__ import annotations

import numpy as np
import pytest

from labkit.planning import capacity, queueing
from labkit.check import LabCheckError
from labkit.check import capacity as lab

LLAMA = capacity.model("llama-3-8b")
KW = {"context": 4096, "batch": 8}                   # Lab 6's scenario


def rejects(match, fn, *args, **kwargs):
    with pytest.raises(LabCheckError, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("placeholder", [..., float("nan")])
def test_an_unfilled_placeholder_gets_the_placeholder_hint(placeholder):
    parts = capacity.memory_breakdown(LLAMA, **KW).as_gb()
    per_token = LLAMA.kv_bytes_per_token("bf16")
    rejects("placeholder", lab.check_weights, placeholder)
    rejects("placeholder", lab.check_kv_cache, placeholder, 1.0, **KW)
    rejects("placeholder", lab.check_kv_cache, per_token, placeholder, **KW)
    rejects("placeholder", lab.check_breakdown, {**parts, "activations": placeholder}, **KW)
    rejects("placeholder", lab.check_instance, "g6e.xlarge", placeholder, **KW)
    rejects("placeholder", lab.check_replicas, placeholder, arrival_rate=10,
            service_times=[0.1], slo_s=1)
    cost = {"instance": "g6e.xlarge", "replicas": 2, "replicas_per_node": 1, "request_rate": 1}
    rejects("placeholder", lab.check_cost, placeholder, 1.0, **cost)
    rejects("placeholder", lab.check_cost, 2 * 1.861, placeholder, **cost)


def test_a_non_number_says_so():
    rejects("should be a number", lab.check_weights, "sixteen")
    rejects("placeholder", lab.check_instance, ..., 1, **KW)


def test_check_weights(capsys):
    right = LLAMA.n_params * 2 / 1e9
    lab.check_weights(right)
    assert "16.06 GB" in capsys.readouterr().out
    rejects("fp32", lab.check_weights, 2 * right)                       # off by 2x
    rejects("int8", lab.check_weights, right / 2)
    rejects("GiB", lab.check_weights, LLAMA.n_params * 2 / 2**30)       # wrong unit
    rejects("in bytes", lab.check_weights, LLAMA.n_params * 2)
    rejects("rounded size", lab.check_weights, 14.0, model="llama-2-7b")  # 7e9 x 2
    llama2 = capacity.model("llama-2-7b").n_params * 2 / 1e9
    rejects("weight memory of Llama 2 7B", lab.check_weights, llama2)   # the wrong row
    rejects("parameters x bytes", lab.check_weights, 3.0)               # no known slip


def test_check_kv_cache():
    per_token = LLAMA.kv_bytes_per_token("bf16")
    total = per_token * 4096 * 8 / 1e9
    lab.check_kv_cache(per_token, total, **KW)
    rejects("query heads", lab.check_kv_cache, 4 * per_token, total, **KW)   # wrong row
    rejects("K and V", lab.check_kv_cache, per_token / 2, total, **KW)
    rejects("4 bytes per value", lab.check_kv_cache, 2 * per_token, total, **KW)  # 2x
    rejects("layers", lab.check_kv_cache, per_token / 32, total, **KW)
    rejects("KiB", lab.check_kv_cache, per_token / 1024, total, **KW)        # wrong unit
    rejects("batch of 8", lab.check_kv_cache, per_token, total / 8, **KW)
    rejects("context", lab.check_kv_cache, per_token, total / 4096, **KW)
    rejects("GiB", lab.check_kv_cache, per_token, total * 1e9 / 2**30, **KW)
    rejects("bytes per token x context x batch", lab.check_kv_cache, per_token, 2 * total,
            **KW)


def test_check_breakdown():
    parts = capacity.memory_breakdown(LLAMA, **KW).as_gb()
    lab.check_breakdown(parts, **KW)
    rejects("10 %", lab.check_breakdown, {**parts, "overhead": 0}, **KW)
    rejects("20 %", lab.check_breakdown, {**parts, "overhead": 2 * parts["overhead"]}, **KW)
    rejects("kv_cache", lab.check_breakdown,
            {k: v for k, v in parts.items() if k != "kv_cache"}, **KW)
    gib = {k: v * 1e9 / 2**30 for k, v in parts.items()}
    rejects("GiB", lab.check_breakdown, gib, **KW)                          # wrong unit
    rejects("kv_cache figure", lab.check_breakdown,
            {**parts, "weights": parts["kv_cache"]}, **KW)                  # the wrong row
    rejects("capacity.memory_breakdown", lab.check_breakdown,
            {**parts, "activations": 2 * parts["activations"]}, **KW)      # off by 2x
    rejects("dict", lab.check_breakdown, [1, 2, 3, 4], **KW)


def test_check_instance():
    lab.check_instance("g6e.xlarge", 1, **KW)
    lab.check_instance("g6e.xlarge", 1.0, **KW)                       # a float that is whole
    # 22.75 GB fits 24 GB but not the 21.6 GB a server may use (90 %): the wrong row
    rejects(r"does not fit.*21\.6 GB.*90 %", lab.check_instance, "g6.xlarge", 1, **KW)
    rejects("tensor_parallel=1 already", lab.check_instance, "p5.48xlarge", 2, **KW)  # 2x
    rejects("would span nodes", lab.check_instance, "g6e.xlarge", 2, **KW)
    rejects("not in the catalog", lab.check_instance, "g9.huge", 1, **KW)
    rejects("whole number", lab.check_instance, "g6e.xlarge", 0.5, **KW)  # the inverse of 2
    rejects("whole number", lab.check_instance, "g6e.xlarge", 0, **KW)


def test_check_instance_says_when_a_cheaper_type_exists(capsys):
    lab.check_instance("g6e.xlarge", 1, **KW)
    assert "cheaper per replica-hour: inf2.xlarge" in capsys.readouterr().out


SERVICE = np.random.default_rng(0).gamma(4, 0.005, 300)
REPLICAS_KW = {"arrival_rate": 120, "service_times": SERVICE, "slo_s": 0.06}


def _fewest():
    return next(c for c in range(1, 20) if queueing.simulate_queue(
        120, SERVICE, replicas=c, seed=0).p95 <= 0.06)


def test_check_replicas():
    enough = _fewest()
    lab.check_replicas(enough, **REPLICAS_KW)
    rejects("not enough", lab.check_replicas, enough - 1, **REPLICAS_KW)
    rejects("one too many", lab.check_replicas, enough + 1, **REPLICAS_KW)
    rejects("one too many", lab.check_replicas, 2 * enough, **REPLICAS_KW)     # off by 2x
    rejects("at least one", lab.check_replicas, 0, **REPLICAS_KW)
    rejects("whole replicas", lab.check_replicas, enough - 0.5, **REPLICAS_KW)


COST = {"instance": "g6e.12xlarge", "replicas": 9, "replicas_per_node": 4, "request_rate": 30}


def _price():
    return capacity.on_demand_price("g6e.12xlarge")["usd_per_hour"]


def test_check_cost_hourly():
    hourly = 3 * _price()
    per_million = hourly / (30 * 3600) * 1e6
    lab.check_cost(hourly, per_million, **COST)
    rejects("round the node count up", lab.check_cost, 9 / 4 * _price(), per_million, **COST)
    rejects("one node per replica", lab.check_cost, 9 * _price(), per_million, **COST)
    rejects(r"nodes = ceil\(9 / 4\) = 3", lab.check_cost, 2 * hourly, per_million, **COST)


def test_check_cost_per_million():
    hourly = 3 * _price()
    per_million = hourly / (30 * 3600) * 1e6
    rejects("3,600", lab.check_cost, hourly, per_million * 3600, **COST)     # forgot x 3600
    rejects("3,600", lab.check_cost, hourly, per_million / 3600, **COST)
    rejects("per thousand", lab.check_cost, hourly, per_million / 1000, **COST)
    rejects("inverse", lab.check_cost, hourly, 1 / per_million, **COST)
    rejects("hourly cost /", lab.check_cost, hourly, 2 * per_million, **COST)  # off by 2x
