"""labkit.backends: export to ONNX, run in ONNX Runtime, compare with PyTorch."""

import warnings

import numpy as np
import pytest
import torch

from labkit.inference import backends, language_model, zoo


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    tiny = language_model.load_tiny_gpt()
    tokens = torch.tensor([tiny.encode("A Kubernetes node runs pods")])
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    dims = {"tokens": {0: torch.export.Dim("batch", max=32),
                       1: torch.export.Dim("seq", max=tiny.context_length)}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # the export must not leak warnings
        exported = backends.export_onnx(tiny.net, (tokens,), path, input_names=["tokens"],
                                        output_names=["logits"], dynamic_shapes=dims)
    return tiny, exported


def test_export_writes_one_checked_file(tiny_export):
    _, exported = tiny_export
    assert exported.path.is_file() and exported.bytes == exported.path.stat().st_size
    assert not list(exported.path.parent.glob("*.data"))      # weights inside the one file
    assert exported.seconds > 0 and exported.opset >= 18 and exported.n_nodes > 10


def test_onnx_runtime_agrees_with_eager_on_other_shapes(tiny_export):
    tiny, exported = tiny_export
    session = backends.onnx_session(exported.path, threads=1)
    assert session.provider == "CPUExecutionProvider" or torch.cuda.is_available()
    assert session.input_names == ["tokens"] and session.output_names == ["logits"]
    for shape in ((1, 5), (3, 40)):                       # dynamic batch and sequence
        tokens = torch.randint(0, tiny.config.vocab_size, shape,
                               generator=torch.Generator().manual_seed(shape[1]))
        with torch.inference_mode():
            expected = tiny.net(tokens)
        got = session.run(tokens=tokens)
        assert got.shape == tuple(expected.shape)
        assert backends.max_abs_diff(got, expected) < 1e-4


def test_session_input_errors(tiny_export, tmp_path):
    _, exported = tiny_export
    session = backends.onnx_session(exported.path)
    with pytest.raises(ValueError, match="missing"):
        session.run(ids=np.zeros((1, 3), dtype=np.int64))
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        backends.onnx_session(tmp_path / "nothing.onnx")
    with pytest.raises(ValueError, match="threads"):
        backends.onnx_session(exported.path, threads=0)


def test_export_argument_errors(tmp_path):
    model = zoo.transformer_lm(vocab_size=50, d_model=16, n_layers=1, n_heads=2, context=8)
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="does not exist"):
        backends.export_onnx(model, (tokens,), tmp_path / "no" / "m.onnx",
                             input_names=["tokens"], output_names=["logits"])
    with pytest.raises(TypeError, match="tuple"):
        backends.export_onnx(model, tokens, tmp_path / "m.onnx", input_names=["tokens"],
                             output_names=["logits"])
    with pytest.raises(ValueError, match="input names"):
        backends.export_onnx(model, (tokens,), tmp_path / "m.onnx", input_names=["a", "b"],
                             output_names=["logits"])


def test_export_failure_is_explained(tmp_path):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:                       # a Python branch on a value: not exportable
                return x * 2
            return x

    with pytest.raises(RuntimeError, match="export_onnx: torch.onnx.export failed"):
        backends.export_onnx(DataDependent(), (torch.ones(2),), tmp_path / "d.onnx",
                             input_names=["x"], output_names=["y"])


def test_max_abs_diff():
    assert backends.max_abs_diff(torch.ones(2, 2), np.ones((2, 2)) + 0.5) == 0.5
    with pytest.raises(ValueError, match="shapes differ"):
        backends.max_abs_diff(np.ones(2), np.ones(3))


def test_int8_copy_is_smaller_and_close(tiny_export, tmp_path):
    tiny, exported = tiny_export
    size = backends.quantize_onnx_int8(exported.path, tmp_path / "int8.onnx")
    assert size < 0.5 * exported.bytes
    tokens = torch.tensor([tiny.encode("A Kubernetes node runs pods")])
    fp32 = backends.onnx_session(exported.path).run(tokens=tokens)
    int8 = backends.onnx_session(tmp_path / "int8.onnx").run(tokens=tokens)
    assert 0 < backends.max_abs_diff(fp32, int8) < 0.2 * np.abs(fp32).max()
    with pytest.raises(FileNotFoundError):
        backends.quantize_onnx_int8(tmp_path / "none.onnx", tmp_path / "x.onnx")


@pytest.fixture(scope="module")
def tiny_decoder_onnx(tmp_path_factory):
    tiny = language_model.load_tiny_gpt()
    folder = tmp_path_factory.mktemp("decoder")
    import onnx

    graph = backends.decoder_to_onnx(tiny.net)
    onnx.save(graph, str(folder / "fp32.onnx"))
    return tiny, graph, folder


def test_decoder_graph_matches_pytorch_with_and_without_the_cache(tiny_decoder_onnx):
    tiny, _, folder = tiny_decoder_onnx
    ids = tiny.encode("A Kubernetes node runs pods and")
    dec = backends.OnnxDecoder(folder / "fp32.onnx", tiny.config, threads=1)
    with torch.inference_mode():
        want = tiny.net(torch.tensor([ids]))[0]
    assert backends.max_abs_diff(dec.logits(ids), want) < 1e-3
    # greedy decoding through the KV cache picks the tokens PyTorch picks
    tokens, steps = dec.generate(ids, 6)
    assert len(tokens) == 6 and len(steps) == 5 and all(s > 0 for s in steps)
    with torch.inference_mode():
        seq = list(ids)
        for _ in range(6):
            seq.append(int(tiny.net(torch.tensor([seq]))[0, -1].argmax()))
    assert tokens == seq[len(ids):]


def test_matmul_nbits_copies_and_their_bytes(tiny_decoder_onnx):
    tiny, graph, folder = tiny_decoder_onnx
    fp32 = backends.matmul_weight_bytes(graph)
    assert fp32 == 4 * tiny.streamed_params               # every projection and the head
    for bits, low, high in ((8, 0.25, 0.3), (4, 0.125, 1 / 6)):
        path = folder / f"int{bits}.onnx"
        size = backends.quantize_onnx_nbits(graph, path, bits=bits, symmetric=bits == 8)
        assert size == path.stat().st_size
        assert low < backends.matmul_weight_bytes(path) / fp32 < high
        logits = backends.OnnxDecoder(path, tiny.config).logits(tiny.encode("A node"))
        assert np.isfinite(logits).all()
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        backends.quantize_onnx_nbits(graph, folder / "x.onnx", bits=3)
    with pytest.raises(FileNotFoundError):
        backends.OnnxDecoder(folder / "none.onnx", tiny.config)


def _one_matmul(weight: torch.Tensor):
    """An ONNX model computing ``x @ weight.T`` for ``x`` of shape [1, S, in]."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as onh

    n_out, n_in = weight.shape
    graph = oh.make_graph([oh.make_node("MatMul", ["x", "w_t"], ["y"], name="mm")], "one",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", n_in])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, "S", n_out])],
                          [onh.from_array(weight.t().contiguous().numpy(), "w_t")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 23)])
    model.ir_version = 10
    return model


def test_int4_float_minimum_is_the_course_int4_format_exactly(tmp_path):
    import onnx
    import onnxruntime as ort

    from labkit.inference.quant import dequantize_int4, pack_int4, quantize_int4_groupwise

    torch.manual_seed(0)
    raw = torch.randn(40, 96) + 0.3
    raw[0, :32] = 0.2 + 0.3 * torch.rand(32)          # a group of one sign: z clamps to 0
    # a weight already on an int4 grid with float minimums, as SmolLM2's Q4_1 projections are
    q, scale, minimum = quantize_int4_groupwise(raw, 32)
    weight = dequantize_int4(pack_int4(q), scale, minimum, 32)
    x = torch.randn(1, 3, 96)
    want = (x @ weight.t()).numpy()

    def error(path):
        got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
        return float(np.abs(got - want).max() / np.abs(want).max())

    errors = {}
    for level in (0, 4):
        path = tmp_path / f"float_min_{level}.onnx"
        size = backends.quantize_onnx_nbits(_one_matmul(weight), path, float_minimum=True,
                                            accuracy_level=level)
        errors[level] = error(path)
        # bytes: 4-bit weights, fp32 scale, 4-bit zero point, fp32 remainder per block of 32
        assert backends.matmul_weight_bytes(path) == 40 * (96 // 2 + 3 * 4 + 2 + 3 * 4)
        assert size == path.stat().st_size
    model = onnx.load(str(path))
    (fast,) = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    zero = next(t for t in model.graph.initializer if t.name == fast.input[3])
    assert zero.data_type == onnx.TensorProto.UINT8    # the integer zero point of the fast path
    assert errors[0] < 1e-6              # fp32 arithmetic: the grid is rebuilt exactly
    assert errors[4] < 0.02              # int8 activations add their own rounding only
    # ONNX Runtime's own int4 (an integer zero point) rounds these weights a second time
    rtn = tmp_path / "ort_int4.onnx"
    backends.quantize_onnx_nbits(_one_matmul(weight), rtn, accuracy_level=0)
    assert error(rtn) > 1e-3


def test_int4_zero_and_remainder_express_the_float_minimum():
    scale = torch.tensor([0.1, 0.1, 0.02])
    minimum = torch.tensor([-0.73, 0.2, -0.5])           # both signs, one sign, below 15 steps
    zero, rest = backends.int4_zero_and_remainder(scale, minimum)
    assert zero.tolist() == [7.0, 0.0, 15.0]
    assert rest[0].item() == pytest.approx(-0.03, abs=1e-6) and abs(rest[0].item()) <= 0.05
    assert rest[1].item() == pytest.approx(0.2, abs=1e-6)  # clamped: r carries the whole offset
    assert rest[2].item() == pytest.approx(-0.2, abs=1e-6)
    q = torch.arange(16.0)[:, None]
    assert torch.allclose(scale * (q - zero) + rest, q * scale + minimum)


def test_int4_float_minimum_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="4-bit asymmetric"):
        backends.quantize_onnx_nbits(_one_matmul(torch.randn(8, 64)), tmp_path / "a.onnx",
                                     bits=8, float_minimum=True)
    with pytest.raises(ValueError, match="power of 2 of at least 16"):
        backends.quantize_onnx_nbits(_one_matmul(torch.randn(8, 48)), tmp_path / "c.onnx",
                                     block_size=24, float_minimum=True)
    with pytest.raises(ValueError, match="not a multiple of block_size=32"):
        backends.quantize_onnx_nbits(_one_matmul(torch.randn(8, 48)), tmp_path / "b.onnx",
                                     float_minimum=True)
    assert not (tmp_path / "b.onnx").exists()
    with pytest.raises(ValueError, match="opset >= 23"):
        backends.decoder_to_onnx(None, opset=21)
