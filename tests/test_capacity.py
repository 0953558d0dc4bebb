"""Tests of labkit.capacity, including published reference points."""

from __future__ import annotations

import re

import pytest

from labkit.planning import capacity, catalog, memory


@pytest.mark.parametrize("key, published_billions, tolerance", [
    ("llama-2-7b", 6.74, 0.01),     # "7B": 6,738,415,616 parameters
    ("llama-3-8b", 8.03, 0.01),     # "8B": 8,030,261,248
    ("mistral-7b", 7.25, 0.01),     # v0.3 "7B": 7,248,023,552 (vocab 32,768)
    ("llama-3-70b", 70.6, 0.01),    # "70B": 70,553,706,496
    ("smollm2-135m", 0.1345, 0.01),
])
def test_parameter_counts_derived_from_config_match_published(key, published_billions, tolerance):
    assert capacity.model(key).n_params / 1e9 == pytest.approx(published_billions, rel=tolerance)


def test_streamed_params_leave_out_an_untied_input_embedding():
    llama = capacity.model("llama-3-8b")
    assert llama.n_params - llama.streamed_params == 128256 * 4096     # 0.525 B: 1.05 GB bf16
    smol = capacity.model("smollm2-135m")                               # tied: the head stays in
    assert smol.streamed_params == smol.n_params
    # Llama 3 8B on an L4 (300 GB/s cited): 15.0 GB per token, so 20.0 tokens/s at most.
    assert memory.weight_bytes(llama.streamed_params, "bf16") / 1e9 == pytest.approx(15.01, abs=0.01)
    assert capacity.decode_roofline(llama, "L4") == pytest.approx(20.0, abs=0.05)


def test_mistral_is_the_v03_config_without_a_sliding_window():
    m = capacity.model("mistral-7b")
    assert m.name == "Mistral 7B v0.3" and m.vocab_size == 32768
    assert "c170c708c41dac9275d15a8fff4eca08d52bab71" in m.source


def test_published_reference_points():
    # A 7B model in fp16 needs about 14-16 GB for its weights.
    weights = capacity.memory_breakdown("llama-2-7b", context=1, dtype="fp16").weights
    assert 13.4e9 <= weights <= 16e9
    assert 14e9 <= memory.weight_bytes(7e9, "fp16") <= 16e9
    # Llama 3 8B: 128 KiB of KV cache per token in fp16 (GQA: 8 KV heads);
    # Llama 2 7B: 512 KiB (32 KV heads); Llama 3 70B: 320 KiB.
    assert capacity.model("llama-3-8b").kv_bytes_per_token("fp16") == 128 * 1024
    assert capacity.model("llama-2-7b").kv_bytes_per_token("fp16") == 512 * 1024
    assert capacity.model("llama-3-70b").kv_bytes_per_token("fp16") == 320 * 1024
    # ... so 4,096 tokens of Llama 2 7B take 2 GiB.
    kv = capacity.memory_breakdown("llama-2-7b", context=4096, dtype="fp16").kv_cache
    assert kv == 2 * 2**30


def test_breakdown_parts_and_scaling():
    one = capacity.memory_breakdown("llama-3-8b", context=2048, batch=1)
    four = capacity.memory_breakdown("llama-3-8b", context=2048, batch=4)
    assert four.weights == one.weights                   # weights do not grow with batch
    assert four.kv_cache == pytest.approx(4 * one.kv_cache)
    assert one.overhead == pytest.approx(0.1 * (one.weights + one.kv_cache + one.activations))
    assert one.total == pytest.approx(sum(v for k, v in one.as_gb().items() if k != "total") * 1e9)
    int8 = capacity.memory_breakdown("llama-3-8b", context=2048, dtype="int8", kv_dtype="bf16")
    assert int8.weights == pytest.approx(one.weights / 2) and int8.kv_cache == one.kv_cache


def test_neuron_memory_is_published_in_gib():
    assert capacity.device_memory_bytes("Inferentia2") == 32 * 2**30
    assert capacity.device_memory_bytes("A10G") == 24e9


def test_a_replica_must_fit_the_servers_memory_budget_not_the_whole_device():
    assert capacity.MEMORY_UTILIZATION == 0.9                      # vLLM's default
    assert capacity.device_budget_bytes("L4") == pytest.approx(21.6e9)
    # Lab 6's replica (Llama 3 8B, 8 x 4k): 22.75 GB fits 24 GB, not the 21.6 GB budget.
    need = capacity.memory_breakdown("llama-3-8b", context=4096, batch=8)
    assert 21.6e9 < need.total < 24e9
    (l4,) = capacity.options("llama-3-8b", context=4096, batch=8, instances=["g6.xlarge"])
    assert not l4.fits and l4.device_budget_GB == pytest.approx(21.6)
    (full,) = capacity.options("llama-3-8b", context=4096, batch=8, instances=["g6.xlarge"],
                               utilization=1.0)
    assert full.tensor_parallel == 1
    # Mistral 7B, 4 x 32k: 37.6 GB, over the 36 GB budget of a 40 GB A100.
    (a100,) = capacity.options("mistral-7b", context=32768, batch=4, instances=["p4d.24xlarge"])
    assert a100.tensor_parallel == 2
    with pytest.raises(ValueError, match="utilization"):
        capacity.device_budget_bytes("L4", 1.5)


def test_7b_fp16_fits_one_24gb_gpu_but_not_a_16gb_v100():
    opts = {o.instance: o for o in capacity.options("llama-2-7b", context=4096, dtype="fp16")}
    assert opts["g5.xlarge"].tensor_parallel == 1       # A10G 24 GB (the draft's C02 example)
    assert opts["g6.xlarge"].tensor_parallel == 1       # L4 24 GB
    assert not opts["p3.2xlarge"].fits                  # V100 16 GB: 14 GB weights + KV do not fit
    assert opts["p4d.24xlarge"].replicas_per_node == 8  # 8 x A100 40 GB, one replica each


def test_70b_needs_tensor_parallelism():
    opts = {o.instance: o for o in capacity.options("llama-3-70b", context=8192)}
    assert all(o.tensor_parallel != 1 for o in opts.values() if o.device_memory_GB < 150)
    assert opts["p6-b200.48xlarge"].tensor_parallel == 1        # 180 GB B200: 162 GB usable
    # 141 GB of bf16 weights + KV + activations + 10 % = 160 GB: over 2 x 72 GB (90 % of 80)
    assert opts["p5.48xlarge"].tensor_parallel == 4
    assert opts["p4d.24xlarge"].tensor_parallel == 8     # 40 GB A100s: 36 GB usable each
    assert not opts["g6e.xlarge"].fits


def test_tensor_parallel_respects_heads():
    big = capacity.MemoryBreakdown(135e9, 0, 0, 0)     # 135 GB: two 80 GB H100s
    assert capacity.smallest_tensor_parallel(big, "H100", 8) == 2
    assert capacity.smallest_tensor_parallel(big, "H100", 8, n_heads=9) is None  # 9 heads


def test_replicas_needed():
    assert capacity.replicas_needed(100, 10, 1.0) == 10
    assert capacity.replicas_needed(100, 10, 0.7) == 15
    assert capacity.replicas_needed(0.1, 10) == 1
    with pytest.raises(ValueError, match="per_replica_rate must be > 0"):
        capacity.replicas_needed(1, 0)
    with pytest.raises(ValueError, match="target_utilization"):
        capacity.replicas_needed(1, 1, 1.5)


def test_prices_are_cited_and_dated():
    for name in capacity.priced_instances():
        price = capacity.on_demand_price(name)
        assert price["usd_per_hour"] > 0 and price["region"] == "us-east-1"
        assert re.match(r"^\d{4}-\d{2}-\d{2}$", price["price_date"])
        assert price["sources"] and all(s["url"].startswith("https://") for s in price["sources"])
    assert capacity.on_demand_price("g5.xlarge")["usd_per_hour"] == pytest.approx(1.006)


def test_missing_price_says_why_instead_of_guessing():
    with pytest.raises(ValueError, match="p5e.48xlarge.*Capacity Blocks"):
        capacity.on_demand_price("p5e.48xlarge")
    with pytest.raises(ValueError, match="not in the course's price list"):
        capacity.on_demand_price("x9.huge")


def test_plan_is_cheapest_first_and_counts_nodes():
    plans = capacity.plan("llama-2-7b", context=4096, dtype="fp16", request_rate=20,
                          per_replica_rate=2.0, instances=["g5.xlarge", "g5.12xlarge", "g6.xlarge"])
    assert [p.usd_per_hour for p in plans] == sorted(p.usd_per_hour for p in plans)
    by_name = {p.instance: p for p in plans}
    assert by_name["g5.xlarge"].replicas == 15 and by_name["g5.xlarge"].nodes == 15
    assert by_name["g5.12xlarge"].nodes == 4                # 4 replicas per node
    g6 = by_name["g6.xlarge"]
    g6_price = capacity.on_demand_price("g6.xlarge")["usd_per_hour"]
    assert g6.usd_per_hour == pytest.approx(15 * g6_price)
    assert g6.usd_per_million_requests == pytest.approx(g6.usd_per_hour / (20 * 3600) * 1e6)


def test_plan_skips_unpriced_unfitting_and_none_rates():
    plans = capacity.plan("llama-3-70b", context=4096, request_rate=1,
                          per_replica_rate=lambda o: None if o.accelerator == "L40S" else 1.0)
    names = {p.instance for p in plans}
    assert "p5e.48xlarge" not in names          # no cited price
    assert "g6.xlarge" not in names             # does not fit
    assert "g6e.12xlarge" not in names          # rate function said None
    assert "p5.48xlarge" in names


def test_decode_roofline():
    h100 = capacity.decode_roofline("llama-3-8b", "H100")
    l4 = capacity.decode_roofline("llama-3-8b", "L4")
    ratio = catalog.accelerator("H100")["memory_bandwidth_GBps"] / 300
    assert h100 / l4 == pytest.approx(ratio)              # batch 1: bandwidth-bound
    streamed = memory.weight_bytes(capacity.model("llama-3-8b").streamed_params, "bf16")
    assert h100 == pytest.approx(3350e9 / streamed)      # every weight but the input embedding
    batched = capacity.decode_roofline("llama-3-8b", "H100", batch=64, context=1024)
    assert batched > 10 * h100                            # batching reuses each weight read
    assert capacity.decode_roofline("llama-3-8b", "A10G") is None   # no vendor bandwidth
    tp2 = capacity.decode_roofline("llama-3-8b", "H100", tensor_parallel=2)
    assert tp2 == pytest.approx(2 * h100)


def test_unknown_model_says_what_to_do():
    with pytest.raises(ValueError, match="config.json"):
        capacity.model("gpt-17")
    with pytest.raises(ValueError, match="context must be"):
        capacity.memory_breakdown("llama-3-8b", context=0)


NODEPOOL = {
    "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "gpu"},
    "spec": {"template": {"spec": {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "x"},
        "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
        "requirements": [{"key": "karpenter.k8s.aws/instance-family", "operator": "In",
                          "values": ["g6"]}]}},
        "limits": {"nvidia.com/gpu": "8"},
        "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "300s"}}}


def test_nodepool_schema_accepts_the_v1_api_and_rejects_typos():
    import copy

    from labkit import k8s

    assert k8s.validate_manifest(NODEPOOL) == "crd schema"
    typo = copy.deepcopy(NODEPOOL)
    typo["spec"]["template"]["spec"]["taint"] = typo["spec"]["template"]["spec"].pop("taints")
    with pytest.raises(ValueError, match="taint"):
        k8s.validate_manifest(typo)
    bad_effect = copy.deepcopy(NODEPOOL)
    bad_effect["spec"]["template"]["spec"]["taints"][0]["effect"] = "NoScheduling"
    with pytest.raises(ValueError, match="NoScheduling"):
        k8s.validate_manifest(bad_effect)
    old_api = {**NODEPOOL, "apiVersion": "karpenter.sh/v1beta1"}
    with pytest.raises(ValueError, match="karpenter.sh/v1"):
        k8s.validate_manifest(old_api)


def test_an_accelerator_without_native_bf16_does_not_fit_bf16():
    bf16 = {o.instance: o for o in capacity.options("llama-3-8b", context=8192, batch=8)}
    assert not bf16["p3dn.24xlarge"].fits and not bf16["p3dn.24xlarge"].runs_dtype   # V100: no bf16
    fp16 = {o.instance: o for o in capacity.options("llama-3-8b", context=8192, batch=8, dtype="fp16")}
    assert fp16["p3dn.24xlarge"].fits and fp16["p3dn.24xlarge"].runs_dtype
