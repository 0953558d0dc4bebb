"""labkit.quant: formats, layers against their plain reference, the decoder hook, quality."""

import json
import warnings

import pytest
import torch

from labkit.inference import language_model, quant, quant_bench, quant_quality
from labkit.machine import dtypes, facts


@pytest.fixture(scope="module")
def tiny():
    return language_model.load_tiny_gpt()


def test_int4_pack_roundtrip_and_error_bound():
    torch.manual_seed(0)
    w = torch.randn(8, 100)                     # 100 is not a multiple of the group: padded
    q, scale, lo = quant.quantize_int4_groupwise(w, 32)
    assert q.shape == (8, 128) and q.dtype == torch.uint8 and int(q.max()) <= 15
    assert scale.shape == lo.shape == (8, 4)
    packed = quant.pack_int4(q)
    assert packed.shape == (8, 64)
    assert torch.equal(quant.unpack_int4(packed), q)
    back = quant.dequantize_int4(packed, scale, lo, 32, in_features=100)
    err = (back - w).abs().view(8, -1)
    assert back.shape == w.shape
    assert float(err.max()) <= float(scale.max()) / 2 + 1e-5
    with pytest.raises(ValueError, match="even integer"):
        quant.quantize_int4_groupwise(w, 7)
    with pytest.raises(ValueError, match="2-D"):
        quant.quantize_int4_groupwise(torch.zeros(4), 32)


@pytest.mark.parametrize("make", [
    quant.Int8WeightOnlyLinear, quant.Int8DynamicLinear,
    lambda w: quant.Int4WeightOnlyLinear(w, 32), lambda w: quant.Int4WeightOnlyLinear(w, 64)])
def test_layers_match_their_plain_reference_and_fp32(make):
    torch.manual_seed(1)
    w = torch.randn(96, 160) * 0.05
    layer = make(w)
    x = torch.randn(2, 3, 160)
    y = layer(x)
    assert y.shape == (2, 3, 96) and y.dtype == torch.float32
    ref = layer.reference(x)
    exact = x @ w.t()
    scale = exact.abs().max()
    assert (y - ref).abs().max() < 0.02 * scale      # kernel == plain maths (bf16 rounding)
    assert (y - exact).abs().max() < 0.15 * scale    # and close to the fp32 product


def test_bytes_per_format():
    w = torch.randn(256, 512)
    fp32 = 256 * 512 * 4
    int8 = quant.format_bytes_of(quant.Int8WeightOnlyLinear(w))
    int4 = quant.format_bytes_of(quant.Int4WeightOnlyLinear(w, 64))
    assert int8 == 256 * 512 + 256 * 4 and int8 <= 0.3 * fp32
    assert int4 == 256 * 256 + 2 * 256 * 8 * 4 and int4 < int8


def test_quantize_model_swaps_layers_through_the_hook(tiny):
    fp32_ids = tiny.generate("A Kubernetes node", 8).token_ids
    q = quant.quantize_model(tiny, "int8")
    assert isinstance(q.net.layers[0].w_down, quant.Int8WeightOnlyLinear)
    assert isinstance(q.net.lm_head, quant.Int8WeightOnlyLinear)
    assert type(tiny.net.layers[0].w_down) is torch.nn.Linear       # original untouched
    assert tiny.generate("A Kubernetes node", 8).token_ids == fp32_ids
    # the fast decode loop (decode_step) and the full forward agree on the quantized model
    ids = torch.tensor([tiny.encode("A Kubernetes node runs pods")])
    with torch.inference_mode():
        full = q.net(ids)[0, -1]
        cache = q.net.new_cache(1, ids.shape[1] + 1)
        q.net(ids[:, :-1], cache)
        step = q.net.decode_step(ids[:, -1:], cache)[0]
    assert torch.allclose(full, step, atol=1e-3 * full.abs().max())
    assert q.weight_bytes_per_token < 0.3 * tiny.weight_bytes_per_token
    lin = quant_quality.model_bytes(q)["linear"]
    assert lin <= 0.3 * quant_quality.model_bytes(tiny)["linear"]
    skipped = quant.quantize_model(tiny, "int8", skip=("w_down",))
    assert type(skipped.net.layers[0].w_down) is torch.nn.Linear
    with pytest.raises(ValueError, match="unknown precision"):
        quant.quantize_model(tiny, "int3")
    with pytest.raises(ValueError, match="unknown projection"):
        quant.quantize_model(tiny, "int8", skip=("mlp",))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_float_conversions(tiny, precision):
    m = quant.quantize_model(tiny, precision)
    assert m.net.layers[0].wqkv.weight.dtype == dtypes.torch_dtype(precision)
    assert m.net.lm_head.weight is m.net.embed.weight
    assert quant_quality.model_bytes(m)["total"] == quant_quality.model_bytes(tiny)["total"] // 2


def test_quality_targets_on_the_tiny_model(tiny):
    """The issue's targets: int8 within 3 % of fp32 perplexity, int4 (group 64) within 25 %."""
    ref = quant_quality.quality(tiny)
    assert ref["top1_agreement"] == 1.0 and 1 < ref["perplexity"] < tiny.config.vocab_size
    for precision, limit in (("int8", 0.03), ("int4-g64", 0.25)):
        q = quant_quality.quality(quant.quantize_model(tiny, precision), ref["logits"])
        assert q["perplexity"] <= ref["perplexity"] * (1 + limit), precision
        assert q["top1_agreement"] > 0.6, precision


def test_no_deprecation_warning(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for precision in quant.PRECISIONS:
            quant.quantize_model(tiny, precision).generate("A node", 3)


def test_heldout_text_is_not_training_text():
    held = quant_quality.heldout_text()
    corpus = (language_model.DATA_DIR / "tiny_corpus.txt").read_text()
    assert len(held.split()) > 300
    sentences = [s.strip() for s in held.replace("\n", " ").split(".") if len(s.strip()) > 30]
    assert sentences and not any(s in corpus for s in sentences)


def test_activation_outliers_cover_every_projection(tiny):
    rows = quant_quality.activation_outliers(tiny, max_tokens=32)
    assert len(rows) == 4 * tiny.config.n_layers
    assert {r["name"] for r in rows} == {"wqkv", "wo", "w_gate_up", "w_down"}
    assert all(r["ratio"] >= 1 and r["absmax"] > 0 for r in rows)


def test_bench_quant_cli_json(capsys):
    code = quant_bench.bench_quant_cli(["--model", "tiny-gpt", "--precisions", "int8,int4-g64",
                                  "--tokens", "3", "--repeats", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"fp32", "int8", "int4-g64", "meta"} | set(quant_bench.ONNX_PRECISIONS)
    for name in ("int8", "ort-int8", "ort-int4", "ort-int4-g32"):
        for key in ("bytes", "decode_tok_s", "perplexity", "top1_agreement", "roofline_tok_s"):
            assert out[name][key] > 0
    assert out["int8"]["bytes"] <= 0.3 * out["fp32"]["bytes"]
    # ONNX Runtime's fp32 graph computes the same model: same bytes, same perplexity
    assert out["ort-fp32"]["bytes"] == out["fp32"]["bytes"]
    assert out["ort-fp32"]["perplexity"] == pytest.approx(out["fp32"]["perplexity"], rel=1e-3)
    assert out["ort-fp32"]["top1_agreement"] >= 0.99
    # MatMulNBits: 8-bit is a bit over 1/4 of fp32 (one fp32 scale per 32), 4-bit under 1/6
    assert 0.25 < out["ort-int8"]["bytes"] / out["fp32"]["bytes"] < 0.3
    assert out["ort-int4"]["bytes"] / out["fp32"]["bytes"] < 1 / 6
    # the float minimum adds one fp32 remainder per block of 32 (1/32 of fp32's bytes)
    assert (out["ort-int4-g32"]["bytes"] - out["ort-int4"]["bytes"]) / out["fp32"]["bytes"] \
        == pytest.approx(1 / 32, rel=0.05)
    assert out["meta"]["threads"] == facts.usable_cores()      # default: every usable core
    assert out["meta"]["onnxruntime"] and "llc_bytes" in out["meta"]
    code = quant_bench.bench_quant_cli(["--model", "tiny-gpt", "--precisions", "int8", "--tokens", "3",
                                  "--repeats", "1", "--json", "--no-onnx"])
    assert set(json.loads(capsys.readouterr().out)) == {"fp32", "int8", "meta"}
    with pytest.raises(SystemExit):
        quant_bench.bench_quant_cli(["--precisions", "int3"])
    with pytest.raises(SystemExit):
        quant_bench.bench_quant_cli(["--threads", "0"])


def test_stored_state_is_what_model_bytes_counts(tiny, tmp_path):
    from safetensors.torch import save_file

    q = quant.quantize_model(tiny, "int4-g64")
    state = quant_quality.stored_state(q)
    assert not any(k.rsplit(".", 1)[-1].startswith("_") for k in state)
    save_file(state, str(tmp_path / "m.safetensors"))
    size = (tmp_path / "m.safetensors").stat().st_size
    assert 0 < size - quant_quality.model_bytes(q)["total"] < 64 * 1024    # plus the JSON header


def test_lab_checks_give_specific_feedback(capsys):
    from labkit.check import LabCheckError
    from labkit.check import quant as check

    rows = [{"precision": "fp32", "bytes": 400, "decode_tok_s": 10.0, "perplexity": 20.0,
             "top1_agreement": 1.0},
            {"precision": "int8", "bytes": 101, "decode_tok_s": 14.0, "perplexity": 20.1,
             "top1_agreement": 0.95},
            {"precision": "int8-dynamic", "bytes": 101, "decode_tok_s": 15.0,
             "perplexity": 20.3, "top1_agreement": 0.8},
            {"precision": "int4-g64", "bytes": 60, "decode_tok_s": 20.0, "perplexity": 30.0,
             "top1_agreement": 0.6}]
    check.check_bytes_ratio(101 / 400, rows)
    with pytest.raises(LabCheckError, match="fp32 / int8"):
        check.check_bytes_ratio(400 / 101, rows)
    check.check_speedup(1.4, rows)
    with pytest.raises(LabCheckError, match="on top"):
        check.check_speedup(10 / 14, rows)
    check.check_perplexity_change(0.5, rows)
    with pytest.raises(LabCheckError, match="fraction"):
        check.check_perplexity_change(0.005, rows)
    assert check.recommended(rows) == "int8"
    check.check_recommendation("int8", rows)
    with pytest.raises(LabCheckError, match="hides"):
        check.check_recommendation("int8-dynamic", rows)
    with pytest.raises(LabCheckError, match="budget"):
        check.check_recommendation("int4-g64", rows)
    outliers = [{"name": "wo", "ratio": 3.0, "layer": 0, "absmax": 1.0, "channel": 2},
                {"name": "w_down", "ratio": 900.0, "layer": 5, "absmax": 99.0, "channel": 7}]
    check.check_outlier_layer("w_down", outliers)
    with pytest.raises(LabCheckError, match="not the worst"):
        check.check_outlier_layer("wo", outliers)
    assert "✔" in capsys.readouterr().out


def test_core_gain_check():
    from labkit.check import LabCheckError
    from labkit.check import quant as check

    core_rows = [{"precision": "fp32", "threads": 1, "decode_tok_s": 30.0},
                 {"precision": "fp32", "threads": 2, "decode_tok_s": 31.5},
                 {"precision": "int8", "threads": 1, "decode_tok_s": 45.0},
                 {"precision": "int8", "threads": 2, "decode_tok_s": 72.0}]
    assert check.core_gains(core_rows) == {"fp32": 1.05, "int8": 1.6}
    assert "int8 gains more" in check.check_core_gain({"fp32": 1.05, "int8": 1.6}, core_rows)
    with pytest.raises(LabCheckError, match="on top"):
        check.check_core_gain({"fp32": 1 / 1.05, "int8": 1 / 1.6}, core_rows)
    with pytest.raises(LabCheckError, match="keys"):
        check.check_core_gain({"int8": 1.6}, core_rows)
    with pytest.raises(LabCheckError, match="dict"):
        check.check_core_gain(1.6, core_rows)
    busy = [dict(r, decode_tok_s=r["decode_tok_s"] / 2) if r["threads"] == 2 else r
            for r in core_rows]
    assert "does not show the expected pattern" in check.check_core_gain({"fp32": 0.525,
                                                                          "int8": 0.8}, busy)
    one_core = [r for r in core_rows if r["threads"] == 1]
    assert "one core" in check.check_core_gain({"fp32": 1.0, "int8": 1.0}, one_core)


def test_llc_bytes_reads_sysfs():
    size = facts.last_level_cache_bytes()
    assert size is None or size >= 2**20        # a last-level cache is at least a MiB


def test_onnx_rows_refuse_unknown_names(tiny):
    with pytest.raises(ValueError, match="unknown ONNX rows"):
        quant_bench.measure_onnx_precisions(tiny, ("ort-int3",), bandwidth_GBps=10.0)
