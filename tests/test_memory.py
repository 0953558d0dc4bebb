import math

import pytest
import torch

from labkit import memory


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
