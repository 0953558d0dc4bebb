"""Tests of labkit.decide: the decision guide reproduces the course's reference points."""

from __future__ import annotations

import pytest

from labkit.planning import capacity, catalog, decide


def test_small_models_go_to_cpu():
    rec = decide.recommend(0.5e9)
    assert rec.accelerator == "CPU" and rec.instance is None and rec.size_band == "<1B"
    assert "ONNX Runtime" in rec.library


def test_7b_fp16_needs_one_24gb_gpu_not_four_to_eight():
    rec = decide.recommend(7e9, dtype="fp16")
    assert rec.devices_per_replica == 1 and rec.nodes_per_replica == 1
    assert catalog.gpu_memory_gb(rec.accelerator) >= 24
    assert 14 <= rec.memory_gb <= 17                  # 14 GB of weights + 20 %
    assert rec.alternative.startswith("inf2")         # the AWS-silicon option, shown


def test_kv_cache_can_change_the_instance():
    short = decide.recommend(model="llama-3-8b", context=2048, batch=1)
    long = decide.recommend(model="llama-3-8b", context=8192, batch=8)
    assert long.memory_gb > short.memory_gb + 8
    assert catalog.gpu_memory_gb(long.accelerator) > catalog.gpu_memory_gb(short.accelerator)


def test_70b_needs_tensor_parallelism_on_one_node():
    rec = decide.recommend(70e9)
    assert rec.devices_per_replica >= 2 and rec.nodes_per_replica == 1
    assert "tensor parallelism" in rec.library


def test_405b_needs_several_of_the_largest_gpus():
    rec = decide.recommend(405e9)                               # 972 GB with 20 % overhead
    usable = decide.capacity.MEMORY_UTILIZATION * catalog.accelerator(rec.accelerator)["memory_GB"]
    assert rec.devices_per_replica >= 4 and rec.devices_per_replica * usable >= rec.memory_gb
    assert (rec.devices_per_replica - 1) * usable < rec.memory_gb     # no GPU more than needed
    fp8 = decide.recommend(405e9, dtype="fp8")                  # half the bytes
    assert fp8.memory_gb == rec.memory_gb / 2 and decide.supports(fp8.accelerator, "fp8")
    fp8_usable = decide.capacity.MEMORY_UTILIZATION * catalog.accelerator(fp8.accelerator)["memory_GB"]
    assert fp8.devices_per_replica * fp8_usable >= fp8.memory_gb


def test_bf16_is_not_placed_on_gpus_without_bf16():
    for dtype in ("bf16", "fp8"):
        for name in decide.candidates("gpu", "inference", dtype):
            assert catalog.instance(name)["accelerator"] not in ("T4", "V100-16GB", "V100-32GB")
    assert "p3.2xlarge" in decide.candidates("gpu", "inference", "fp16")
    assert decide.supports("H100", "fp8") and not decide.supports("A100-80GB", "fp8")
    assert decide.supports("RTX PRO 6000", "fp8")       # Blackwell; only an unqualified figure is cited


def test_training_uses_16_bytes_per_parameter_and_shards():
    small = decide.recommend(1e9, workload="training")
    assert small.devices_per_replica == 1 and "data parallelism" in small.training
    seven = decide.recommend(7e9, workload="training")
    assert seven.memory_gb == pytest.approx(7 * 16 * 1.2)
    assert seven.devices_per_replica >= 2 and "FSDP" in seven.training
    big = decide.recommend(175e9, workload="training")          # 3.4 TB of training state
    assert big.nodes_per_replica >= 2 and "EFA" in big.training
    assert catalog.instance(big.instance)["efa"]
    assert "Trainium" in big.alternative or "trn" in big.alternative


def test_trainium_serves_models_too_large_for_inferentia2():
    big = decide.recommend(405e9, prefer="neuron")            # 972 GB: more than an inf2 node
    assert big.instance == "trn2.48xlarge" and big.devices_per_replica == 16
    assert big.usd_per_hour is None                           # no cited trn2 price: not guessed
    assert "vllm-neuron" in big.library
    assert "trn1.32xlarge" in decide.candidates("neuron", "inference", "bf16")
    assert "inf2.xlarge" in decide.candidates("neuron", "inference", "bf16")
    small = decide.recommend(7e9, prefer="neuron")            # still the cheapest: inf2
    assert small.instance == "inf2.xlarge" and "NxD Inference" in small.library


def test_training_is_priced_by_the_whole_nodes_it_occupies():
    seven = decide.recommend(7e9, workload="training")
    node_hour = {n: capacity.on_demand_price(n)["usd_per_hour"]
                 for n in decide.candidates("gpu", "training", "bf16")
                 if n in capacity.priced_instances()}
    assert seven.usd_per_hour == min(node_hour.values())      # cheapest node that holds it
    big = decide.recommend(70e9, workload="training")
    job = big.usd_per_hour * big.nodes_per_replica
    assert any(f"${job:,.2f} per hour" in r for r in big.reasons)
    one = decide.recommend(1e9, workload="training")
    assert "pays for all 8" in one.training


def test_neuron_preference_and_storage_and_scaling():
    rec = decide.recommend(7e9, prefer="neuron", pattern="batch")
    assert rec.accelerator == "Inferentia2" and "Neuron" in rec.library
    assert "Indexed Job" in rec.scaling and rec.alternative.startswith("g")
    assert "init container" in decide.recommend(3e9).storage
    assert "FSx for Lustre" in decide.recommend(405e9).storage
    assert "requests in flight" in decide.recommend(7e9).scaling
    assert "KEDA" in decide.recommend(7e9, pattern="streaming").scaling


def test_prices_come_from_the_cited_list():
    rec = decide.recommend(7e9, dtype="fp16")
    assert rec.usd_per_hour == capacity.on_demand_price(rec.instance)["usd_per_hour"]
    unpriced = decide.recommend(70e9, workload="training", prefer="neuron")   # trn2: no cited price
    assert unpriced.instance == "trn2.48xlarge" and unpriced.usd_per_hour is None
    assert "no cited price" in dict(unpriced.rows())["instance type"]


@pytest.mark.parametrize("kwargs, match", [
    ({"workload": "fine-tune"}, "workload"), ({"pattern": "cron"}, "pattern"),
    ({"prefer": "tpu"}, "prefer"), ({}, "n_params"),
])
def test_bad_arguments_say_what_is_allowed(kwargs, match):
    args = () if match == "n_params" else (7e9,)
    with pytest.raises(ValueError, match=match):
        decide.recommend(*args, **kwargs)


def test_size_bands():
    assert [decide.size_band(n) for n in (0.5e9, 7e9, 70e9, 405e9)] == \
        ["<1B", "1–10B", "10–100B", ">100B"]
