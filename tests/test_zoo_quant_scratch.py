import pytest
import torch

from labkit.inference import quant, zoo
from labkit.planning import memory
from labkit.machine import scratch


@pytest.mark.parametrize("d_model,n_layers", [(64, 1), (128, 3)])
def test_transformer_params_match_the_formula(d_model, n_layers):
    model = zoo.transformer_lm(vocab_size=500, d_model=d_model, n_layers=n_layers, n_heads=4, context=64)
    assert zoo.count_params(model) == zoo.transformer_params_formula(500, d_model, n_layers, 64)
    with torch.inference_mode():
        assert model(torch.zeros(2, 10, dtype=torch.long)).shape == (2, 10, 500)


def test_transformer_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        zoo.transformer_lm(d_model=10, n_heads=3)
    model = zoo.transformer_lm(vocab_size=50, d_model=16, n_layers=1, n_heads=2, context=8)
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_cnn_and_unet_shapes_and_seeding():
    cnn = zoo.small_cnn(n_classes=7)
    assert cnn(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    unet = zoo.tiny_unet()
    x = torch.randn(1, 3, 16, 16)
    assert zoo.denoise(unet, x, 2).shape == x.shape
    assert torch.equal(zoo.tiny_unet().out.weight, unet.out.weight)   # seeded: same weights
    with pytest.raises(ValueError, match="steps"):
        zoo.denoise(unet, x, 0)


def test_int8_per_channel_roundtrip():
    w = torch.randn(16, 32)
    q, scale = quant.quantize_int8_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (16,)
    assert (quant.dequantize_int8(q, scale) - w).abs().max() <= scale.max() / 2 + 1e-6
    with pytest.raises(ValueError, match="2-D"):
        quant.quantize_int8_per_channel(torch.zeros(3))


@pytest.mark.parametrize("dtype,bpp", [("fp32", 4), ("fp16", 2), ("bf16", 2)])
def test_convert_state_dict_float(dtype, bpp):
    sd = torch.nn.Linear(8, 4, bias=False).state_dict()
    assert memory.tensor_bytes(quant.convert_state_dict(sd, dtype)) == 32 * bpp


def test_convert_state_dict_int8_keeps_scales_and_vectors_fp32():
    sd = torch.nn.Linear(8, 4).state_dict()
    out = quant.convert_state_dict(sd, "int8")
    assert out["weight"].dtype == torch.int8 and out["weight.scale"].dtype == torch.float32
    assert out["bias"].dtype == torch.float32
    assert memory.tensor_bytes(out) == 32 + 4 * 4 + 4 * 4
    with pytest.raises(ValueError, match="fp32, fp16, bf16 and int8"):
        quant.convert_state_dict(sd, "int4")


def test_scratch_dir_is_removed_on_success_and_on_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path / "scratch"))
    with scratch.scratch_dir(1000) as folder:
        (folder / "f").write_bytes(b"x")
    assert not folder.exists()
    with pytest.raises(RuntimeError, match="boom"):
        with scratch.scratch_dir(1000) as folder:
            (folder / "f").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not folder.exists() and not (tmp_path / "scratch").exists()


def test_scratch_dir_is_removed_on_keyboard_interrupt(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with scratch.scratch_dir(10) as folder:
            raise KeyboardInterrupt
    assert not folder.exists()


def test_scratch_refuses_without_space(monkeypatch, tmp_path):
    import shutil
    from collections import namedtuple

    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(100, 90, 10))
    with pytest.raises(RuntimeError, match="LABKIT_SCRATCH"):
        with scratch.scratch_dir(6):
            pass
    with pytest.raises(ValueError, match="above the limit"):
        with scratch.scratch_dir(3 * 2**30):
            pass
