import math

import pytest
import torch

from labkit.planning import memory


@pytest.mark.parametrize("dtype,expected", [("fp32", 4), ("fp16", 2), ("bf16", 2), ("fp8", 1),
                                            ("int8", 1), ("int4", 0.5)])
def test_weight_bytes_per_dtype(dtype, expected):
    assert memory.weight_bytes(1000, dtype) == 1000 * expected


def test_published_reference_points():
    # A 7B model in fp16 needs about 14-16 GB for its weights (14 GB exactly, before runtime overhead).
    assert memory.weight_bytes(7e9, "fp16") == 14e9
    assert 14e9 <= memory.weight_bytes(7e9, "fp16") * 1.1 <= 16e9
    # Llama 3 8B (32 layers, 8 KV heads of 128) keeps 128 KiB of KV cache per token in fp16.
    assert memory.kv_cache_bytes(n_layers=32, n_kv_heads=8, head_dim=128, seq_len=1) == 128 * 1024
    # Mixed-precision AdamW: 16 bytes per parameter (ZeRO paper), 112 GB for 7B.
    assert memory.training_bytes(7e9) == 112e9


def test_aliases_and_torch_dtypes():
    assert memory.weight_bytes(10, "float16") == 20
    assert memory.weight_bytes(10, torch.bfloat16) == 20
    assert memory.normalize_dtype("FP32") == "fp32"


@pytest.mark.parametrize("bad", ["fp64", "int3", "", None])
def test_unknown_dtype_names_what_is_allowed(bad):
    with pytest.raises(ValueError, match="fp32, fp16, bf16, fp8, int8, int4"):
        memory.weight_bytes(10, bad)


@pytest.mark.parametrize("bad", [-1, float("nan"), "7e9", True])
def test_bad_sizes_raise(bad):
    with pytest.raises(ValueError, match="n_params"):
        memory.weight_bytes(bad, "fp16")


def test_kv_cache_scales_linearly_and_rejects_negatives():
    one = memory.kv_cache_bytes(n_layers=2, n_kv_heads=2, head_dim=4, seq_len=10)
    assert memory.kv_cache_bytes(n_layers=2, n_kv_heads=2, head_dim=4, seq_len=20, batch_size=3) == 6 * one
    assert memory.kv_cache_bytes(n_layers=2, n_kv_heads=2, head_dim=4, seq_len=10, dtype="fp32") == 2 * one
    with pytest.raises(ValueError, match="seq_len"):
        memory.kv_cache_bytes(n_layers=2, n_kv_heads=2, head_dim=4, seq_len=-5)


@pytest.mark.parametrize("recipe,per_param", [("fp32-adamw", 16), ("mixed-adamw", 16), ("bf16-adamw", 12),
                                              ("fp32-sgd", 8), ("fp32-sgd-momentum", 12)])
def test_training_recipes(recipe, per_param):
    parts = memory.training_breakdown(1000, recipe)
    assert parts["total"] == memory.training_bytes(1000, recipe) == 1000 * per_param
    assert parts["total"] == parts["weights"] + parts["gradients"] + parts["optimizer_states"]


def test_unknown_recipe():
    with pytest.raises(ValueError, match="mixed-adamw"):
        memory.training_bytes(10, "adam")


def test_fits_and_gpus_needed():
    assert memory.fits(7e9, "fp16", 24)
    assert not memory.fits(70e9, "fp16", 80)
    assert memory.gpus_needed(70e9, "fp16", 80) == math.ceil(140 * 1.2 / 80)
    assert memory.fits(70e9, "int4", 80)
    assert memory.fits(7e9, "fp16", 14.0, overhead=0.0)
    assert not memory.fits(7e9, "fp16", 14.0, overhead=0.01)
    with pytest.raises(ValueError, match="gpu_memory_gb"):
        memory.fits(7e9, "fp16", 0)
    with pytest.raises(ValueError, match="overhead"):
        memory.fits(7e9, "fp16", 24, overhead=-0.1)


def test_tensor_bytes_of_module_state_dict_and_tensor():
    layer = torch.nn.Linear(10, 5)            # 50 weights + 5 biases, fp32
    assert memory.tensor_bytes(layer) == 55 * 4
    assert memory.tensor_bytes(layer.state_dict()) == 55 * 4
    assert memory.tensor_bytes(torch.zeros(3, dtype=torch.int8)) == 3
    with pytest.raises(ValueError, match="tensors"):
        memory.tensor_bytes([1, 2])


def test_weight_bytes_docstring_counts_int4_metadata_honestly():
    doc = memory.weight_bytes.__doc__
    assert "6.25 %" in doc and "25 %" in doc and "under 3 %" not in doc
    # the arithmetic behind the docstring: fp16 scale per group of 64 over a 4-bit payload
    assert 16 / 64 / 4 == 0.0625
    # GGUF Q4_1: 20 bytes per 32 weights = 5 bits per weight, 25 % over 4
    assert 20 * 8 / 32 == 5.0


@pytest.mark.parametrize("tp,heads,kv,ok", [(1, 64, 8, True), (2, 64, 8, True), (3, 64, 8, False),
                                            (8, 64, 8, True), (16, 64, 8, True),
                                            (5, 40, 40, True), (8, 40, 40, True),
                                            (3, 9, 3, True), (2, 9, 3, False), (6, 9, 3, False)])
def test_tensor_parallel_follows_the_head_counts(tp, heads, kv, ok):
    assert memory.tensor_parallel_ok(tp, heads, kv) is ok


def test_tensor_parallel_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        memory.tensor_parallel_ok(1, 10, 4)
    with pytest.raises(ValueError, match="tp"):
        memory.tensor_parallel_ok(0, 8, 8)


@pytest.mark.parametrize("params,gpu_gb,heads,kv,expected", [
    (70e9, 80, 64, 8, (4, 4, 1, 1, 3)),        # Llama 3 70B on H100: 3 by memory, 4 deployable
    (405e9, 80, 128, 8, (16, 8, 2, 2, 13)),    # Llama 3.1 405B on H100: 2 nodes x 8, PP=2
    (405e9, 141, 128, 8, (8, 8, 1, 1, 7)),     # on H200: one p5e node
    (7e9, 24, 32, 32, (1, 1, 1, 1, 1)),
    (13e9, 24, 40, 40, (2, 2, 1, 1, 2)),
    (405e9, 24, 128, 8, (48, 8, 6, 6, 41)),
])
def test_deployable_gpus(params, gpu_gb, heads, kv, expected):
    d = memory.deployable_gpus(params, "fp16", gpu_gb, n_heads=heads, n_kv_heads=kv)
    assert tuple(d) == expected
    assert d.gpus == d.tensor_parallel * d.pipeline_parallel >= d.minimum
    assert d.minimum == memory.gpus_needed(params, "fp16", gpu_gb)


def test_deployable_gpus_respects_heads_that_8_does_not_divide():
    # 12 query heads / 4 KV heads: TP 1, 2 or 4 within an 8-GPU node, never 8
    d = memory.deployable_gpus(70e9, "fp16", 24, n_heads=12, n_kv_heads=4)
    assert d.tensor_parallel == 4 and d.gpus == 8 and d.pipeline_parallel == 2
    with pytest.raises(ValueError, match="gpus_per_node"):
        memory.deployable_gpus(7e9, "fp16", 24, n_heads=32, n_kv_heads=8, gpus_per_node=0)


def test_process_memory_sees_an_allocation():
    """In a fresh process, so that memory freed by earlier tests cannot absorb the block."""
    import json
    import subprocess
    import sys

    script = ("import json, torch\n"
              "from labkit.planning.memory import process_memory\n"
              "before = process_memory()\n"
              "block = torch.ones(64 * 2**20 // 4)\n"
              "print(json.dumps([before, process_memory()]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    before, after = json.loads(out.strip().splitlines()[-1])
    assert set(before) == {"anon", "file", "shmem", "peak", "total"}
    assert after["anon"] - before["anon"] > 48 * 2**20        # 64 MiB of private memory
    assert after["peak"] >= after["total"]


def test_measure_load_memory_tells_a_copy_from_a_mapping(tmp_path):
    """A pickle load holds the weights in private memory; a streamed safetensors load keeps
    about one tensor there, the rest is page cache of the mapped file."""
    from safetensors.torch import save_file

    state = {f"w{i}": torch.ones(1024, 1024) for i in range(8)}      # 32 MiB, 4 MiB per tensor
    torch.save(state, tmp_path / "m.pt")
    save_file(state, tmp_path / "m.safetensors")
    size = 32 * 2**20
    copied = memory.measure_load_memory(tmp_path / "m.pt", "torch.load")
    streamed = memory.measure_load_memory(tmp_path / "m.safetensors", "safetensors-stream")
    assert copied["anon"] > 0.9 * size
    assert streamed["anon"] < 0.25 * size and streamed["file"] > 0.5 * size
    with pytest.raises(ValueError, match="unknown loader"):
        memory.measure_load_memory(tmp_path / "m.pt", "pickle")
    with pytest.raises(ValueError, match="not a file"):
        memory.measure_load_memory(tmp_path / "nope.pt", "torch.load")
