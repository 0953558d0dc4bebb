"""One model, two runtimes: PyTorch eager and ONNX Runtime.

A *backend swap* takes the graph of a PyTorch model out of Python and runs it in another
engine. The course uses ONNX: :func:`export_onnx` writes the model to one ``.onnx`` file with
PyTorch's own exporter (``torch.onnx.export(..., dynamo=True)``: ``torch.export`` captures the
graph, onnxscript translates it), timing the one-time export; :func:`onnx_session` opens that
file in ONNX Runtime on the best execution provider available (CUDA when a GPU build of
ONNX Runtime and a GPU are present, else CPU), with a fixed number of threads so that it can
be compared fairly with PyTorch; :func:`max_abs_diff` says how far two backends' outputs are
apart; :func:`quantize_onnx_int8` makes an int8 copy of an exported file with ONNX Runtime's
own post-training tool (weights int8, activations quantized on the fly).

For decoding, :func:`decoder_to_onnx` writes the course's :class:`labkit.inference.decoder.Decoder`
as an ONNX graph *by hand* (``onnx.helper``, standard operators of opset 23 in the
order of ``decode_step``), with
the KV cache as graph inputs and outputs (``past_key.i`` in, ``present_key.i`` out), so that
ONNX Runtime runs one token per call; :func:`quantize_onnx_nbits` turns its matrix products
into ONNX Runtime's block-quantized ``MatMulNBits`` kernels (4 or 8 bits) with the
runtime's own tool, or in the course's int4 format with a float minimum
(:func:`int4_float_minimum_matmul`), and :class:`OnnxDecoder` decodes greedily and scores text with it.

The exporter is noisy in torch 2.13 (progress lines, a ``FutureWarning`` from inside torch, a
warning per torchvision operator it cannot find); :func:`export_onnx` keeps that out of the
notebooks and raises a clear error when the export itself fails.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OnnxExport", "export_onnx", "quantize_onnx_int8", "OnnxSession", "onnx_session",
           "max_abs_diff", "decoder_to_onnx", "quantize_onnx_nbits", "int4_zero_and_remainder",
           "int4_float_minimum_matmul", "matmul_weight_bytes", "OnnxDecoder"]


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file (graph and weights in one file).
        seconds: wall time of the export (graph capture, translation, saving).
        bytes: size of the file.
        opset: the ONNX operator-set version of the graph.
        n_nodes: operators in the graph.
    """

    path: Path
    seconds: float
    bytes: int
    opset: int
    n_nodes: int


@contextlib.contextmanager
def _quiet_exporter():
    """Silence torch.onnx's progress lines, its internal FutureWarnings and its log warnings."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model, example_inputs: tuple, path: str | Path, *, input_names: list[str],
                output_names: list[str], dynamic_shapes: dict | None = None) -> OnnxExport:
    """Export ``model`` (an ``nn.Module`` in eval mode) to one ONNX file at ``path``.

    Args:
        model: the PyTorch module; it is called as ``model(*example_inputs)``.
        example_inputs: a tuple of example tensors (their shapes and dtypes fix the graph,
            except the dimensions named in ``dynamic_shapes``).
        path: where to write the file (its folder must exist).
        input_names, output_names: names of the graph's inputs and outputs (what
            :meth:`OnnxSession.run` is called with).
        dynamic_shapes: for each input name, ``{dim: torch.export.Dim(...)}`` for the
            dimensions that may vary (batch, sequence length), as ``torch.export`` takes it.

    Returns an :class:`OnnxExport`. Raises ``RuntimeError`` saying what to do when the export
    fails (an operator ONNX cannot express, data-dependent control flow, a missing package).
    """
    import torch

    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"export_onnx: folder {path.parent} does not exist; create it first "
                         "(for example with labkit.machine.scratch.scratch_dir())")
    if not isinstance(example_inputs, tuple):
        raise TypeError("export_onnx: example_inputs must be a tuple of tensors, e.g. (tokens,)")
    if len(input_names) != len(example_inputs):
        raise ValueError(f"export_onnx: {len(input_names)} input names for "
                         f"{len(example_inputs)} example inputs")
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with _quiet_exporter():
            torch.onnx.export(model, example_inputs, str(path), dynamo=True, verbose=False,
                              external_data=False, input_names=list(input_names),
                              output_names=list(output_names), dynamic_shapes=dynamic_shapes)
    except ImportError as err:
        raise RuntimeError(f"export_onnx needs onnx and onnxscript ({err}); run `make setup`, "
                           "which installs the pinned versions") from err
    except Exception as err:  # noqa: BLE001 - the exporter raises many kinds; say what to do
        raise RuntimeError(f"export_onnx: torch.onnx.export failed for {type(model).__name__}: "
                           f"{type(err).__name__}: {str(err).splitlines()[0]}. Check that the "
                           "forward pass has no Python-side data-dependent branches and that "
                           "the dynamic_shapes match the inputs.") from err
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    import onnx

    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxExport(path=path, seconds=seconds, bytes=path.stat().st_size, opset=int(opset),
                      n_nodes=len(graph.graph.node))


def quantize_onnx_int8(source: str | Path, target: str | Path) -> int:
    """Write an int8 copy of the ONNX file ``source`` to ``target``; return its size in bytes.

    Uses ONNX Runtime's ``quantize_dynamic``: the weights of matrix products become int8 with
    a scale each, and the activations are quantized on the fly at run time (the same idea as
    ``int8-dynamic`` in :mod:`labkit.inference.quant`). Embeddings and other operators stay fp32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(source), Path(target)
    if not source.is_file():
        raise FileNotFoundError(f"no ONNX file at {source}; write one with export_onnx()")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)     # it advises a pre-processing step for image models
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return target.stat().st_size


class OnnxSession:
    """An ONNX Runtime session on one file; call :meth:`run` with NumPy arrays or tensors.

    Attributes:
        provider: the execution provider that runs the graph (``"CPUExecutionProvider"``, or
            ``"CUDAExecutionProvider"`` with a GPU build of ONNX Runtime and a GPU).
        threads: intra-op threads ONNX Runtime may use.
        input_names: the graph's inputs.
        output_names: the graph's outputs.
    """

    def __init__(self, path: str | Path, threads: int = 1, device: str | None = None) -> None:
        import onnxruntime as ort

        from labkit.machine.facts import pick_device

        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at {path}; write one with export_onnx()")
        available = ort.get_available_providers()
        wanted = pick_device(device)
        providers = ["CPUExecutionProvider"]
        if wanted == "cuda" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3          # errors only: no provider chatter in notebooks
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        self.provider = self._session.get_providers()[0]
        self.threads = threads
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, **inputs: Any) -> np.ndarray:
        """The first output of the graph for ``inputs`` (by input name), as a NumPy array."""
        missing = set(self.input_names) - set(inputs)
        extra = set(inputs) - set(self.input_names)
        if missing or extra:
            raise ValueError(f"OnnxSession.run: the graph takes {self.input_names}; missing "
                             f"{sorted(missing)}, unknown {sorted(extra)}")
        feed = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
                for k, v in inputs.items()}
        return self._session.run(self.output_names[:1], feed)[0]

    def __repr__(self) -> str:
        return (f"OnnxSession(inputs={self.input_names}, outputs={self.output_names}, "
                f"provider={self.provider}, threads={self.threads})")


def onnx_session(path: str | Path, threads: int = 1, device: str | None = None) -> OnnxSession:
    """Open ``path`` in ONNX Runtime (see :class:`OnnxSession`); ``device`` as
    :func:`labkit.machine.facts.pick_device` takes it (default: CUDA when present)."""
    return OnnxSession(path, threads=threads, device=device)


def max_abs_diff(a, b) -> float:
    """Largest absolute difference between two outputs (tensors or arrays of one shape)."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"max_abs_diff: shapes differ, {a.shape} and {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))



# ============================================================================================
# The decoder with a KV cache, by hand, for ONNX Runtime; and its block-quantized copies
# ============================================================================================
def decoder_to_onnx(net, opset: int = 23):
    """The decoder ``net`` (a :class:`labkit.inference.decoder.Decoder`, fp32) as an ONNX ``ModelProto``
    that takes and returns the KV cache, so one call is one decode step.

    Inputs: ``input_ids`` int64 ``[1, S]``, ``position_ids`` int64 ``[S]`` (the positions of
    those tokens), ``attention_bias`` float ``[S, P+S]`` (added to the attention scores:
    0 where a query may look, ``-inf`` elsewhere), and per block ``past_key.i`` /
    ``past_value.i`` float ``[1, n_kv_heads, P, head_dim]``. Outputs: ``logits``
    ``[1, S, vocab]`` and ``present_key.i`` / ``present_value.i`` (past and new, ``P+S``
    positions). ``S = 1`` is a decode step; ``P = 0`` with a causal bias is a prefill.

    Every operator is standard ONNX, written in the order of ``Decoder.decode_step``; opset 23
    (ONNX 1.18) made the three pieces of a Llama block standard operators, so a block is 16
    nodes: ``RMSNormalization``, ``RotaryEmbedding`` (the "halves" layout, ``interleaved=0``)
    and ``Attention`` (grouped-query heads, the cache as ``past_key``/``present_key``), plus
    ``MatMul``, ``Split``, ``Add`` and the SwiGLU's ``Sigmoid``/``Mul``. Fewer, larger nodes
    matter at decode time, where each node's fixed cost in the runtime is paid per token.
    Query head ``j`` reads key/value head ``j // (n_heads / n_kv_heads)``, as ONNX Runtime's
    kernel and the reference of onnx 1.23 (the course's pin) compute it; the operator's
    function body in earlier onnx releases tiled the heads the other way (onnx/onnx pull
    request 7274, checked 2026-12-05).
    Each weight matrix ``W`` is stored as ``W^T`` and used by a ``MatMul`` whose second input
    is that constant, the pattern ONNX Runtime's quantization tools look for. A tied head gets
    its own transposed copy of the embedding (the Gather reads rows of ``[vocab, d]``, the head
    multiplies by ``[d, vocab]``).
    """
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as onh

    if opset < 23:
        raise ValueError(f"decoder_to_onnx needs opset >= 23 (RMSNormalization, RotaryEmbedding "
                         f"and Attention), got {opset}")
    c = net.config
    nh, nkv, hd, ff = c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff
    nodes, inits = [], []

    def init(name, array):
        inits.append(onh.from_array(np.ascontiguousarray(array), name))
        return name

    def op(kind, ins, outs=None, **attrs):
        name = f"{kind}_{len(nodes)}"
        outs = outs or [name]
        nodes.append(oh.make_node(kind, ins, outs, name=name, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def weight_t(linear):                      # W^T, [in, out], for MatMul(x, W^T)
        return linear.weight.detach().float().t().contiguous().numpy()

    def rms_norm(x, w):
        return op("RMSNormalization", [x, w], axis=-1, epsilon=c.norm_eps)

    def rope(x, heads):                        # [1, S, heads * hd], Llama's "halves" layout
        return op("RotaryEmbedding", [x, "rope_cos", "rope_sin", "positions"], num_heads=heads)

    init("embed", net.embed.weight.detach().float().numpy())
    # RotaryEmbedding takes [max_positions, hd/2]; the decoder's tables repeat each half
    init("rope_cos", net.rope_cos[:, : hd // 2].float().numpy())
    init("rope_sin", net.rope_sin[:, : hd // 2].float().numpy())
    init("axis0", np.array([0], dtype=np.int64))
    init("qkv_split", np.array([nh * hd, nkv * hd, nkv * hd], dtype=np.int64))
    init("ff_split", np.array([ff, ff], dtype=np.int64))

    inputs = [oh.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"]),
              oh.make_tensor_value_info("position_ids", TensorProto.INT64, ["S"]),
              oh.make_tensor_value_info("attention_bias", TensorProto.FLOAT, ["S", "T"])]
    outputs = [oh.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "S", c.vocab_size])]
    x = op("Gather", ["embed", "input_ids"], axis=0)                     # [1, S, d]
    op("Unsqueeze", ["position_ids", "axis0"], outs=["positions"])       # [1, S]
    for i, block in enumerate(net.layers):
        for kind in ("key", "value"):
            inputs.append(oh.make_tensor_value_info(f"past_{kind}.{i}", TensorProto.FLOAT,
                                                    [1, nkv, "P", hd]))
            outputs.append(oh.make_tensor_value_info(f"present_{kind}.{i}", TensorProto.FLOAT,
                                                     [1, nkv, "T", hd]))
        h = rms_norm(x, init(f"layers.{i}.attn_norm", block.attn_norm.detach().float().numpy()))
        qkv = op("MatMul", [h, init(f"layers.{i}.wqkv", weight_t(block.wqkv))])
        q, k, v = op("Split", [qkv, "qkv_split"], outs=[f"q.{i}", f"k.{i}", f"v.{i}"], axis=-1)
        # grouped-query attention over the cache: query head j reads key/value head j // group
        attn, _, _ = op("Attention", [rope(q, nh), rope(k, nkv), v, "attention_bias",
                                      f"past_key.{i}", f"past_value.{i}"],
                        outs=[f"attn.{i}", f"present_key.{i}", f"present_value.{i}"],
                        q_num_heads=nh, kv_num_heads=nkv)
        x = op("Add", [x, op("MatMul", [attn, init(f"layers.{i}.wo", weight_t(block.wo))])])
        h = rms_norm(x, init(f"layers.{i}.mlp_norm", block.mlp_norm.detach().float().numpy()))
        gate_up = op("MatMul", [h, init(f"layers.{i}.w_gate_up", weight_t(block.w_gate_up))])
        gate, up = op("Split", [gate_up, "ff_split"], outs=[f"gate.{i}", f"up.{i}"], axis=-1)
        act = op("Mul", [op("Mul", [gate, op("Sigmoid", [gate])]), up])
        x = op("Add", [x, op("MatMul", [act, init(f"layers.{i}.w_down", weight_t(block.w_down))])])
    x = rms_norm(x, init("norm", net.norm.detach().float().numpy()))
    op("MatMul", [x, init("lm_head", weight_t(net.lm_head))], outs=["logits"])
    model = oh.make_model(oh.make_graph(nodes, "labkit-decoder", inputs, outputs, inits),
                          opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def quantize_onnx_nbits(source, target: str | Path, *, bits: int = 4, block_size: int = 32,
                        symmetric: bool = False, accuracy_level: int | None = 4,
                        float_minimum: bool = False) -> int:
    """Write a copy of the ONNX model ``source`` (a path or ``ModelProto``) to ``target`` whose
    constant-weight ``MatMul`` nodes are ONNX Runtime's ``MatMulNBits``; return its bytes.

    Uses the runtime's own tool, ``onnxruntime.quantization.matmul_nbits_quantizer.
    MatMulNBitsQuantizer`` (round-to-nearest): each weight column is cut into blocks of
    ``block_size`` inputs, each block stored as ``bits``-bit integers with one fp32 scale
    (and, unless ``symmetric``, one ``bits``-bit zero point). ``accuracy_level=4`` lets the
    CPU kernel quantize the activations to int8 per block and multiply in integers (VNNI/AMX
    where the CPU has them); ``0``/None keeps fp32 arithmetic on dequantized weights.

    ``float_minimum=True`` (4 bits, asymmetric) writes the course's own int4 format instead
    (:func:`labkit.inference.quant.quantize_int4_groupwise`: ``w = q * scale + minimum`` per
    block, the minimum a float, the layout of GGUF's Q4_1) through the same fast kernel, whose
    zero point must be an integer: see :func:`int4_float_minimum_matmul`.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if bits not in (4, 8):
        raise ValueError(f"quantize_onnx_nbits: bits must be 4 or 8, got {bits!r}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"quantize_onnx_nbits: block_size must be a power of 2 of at least 16 "
                         f"(MatMulNBits' rule), got {block_size!r}")
    if float_minimum and (bits != 4 or symmetric):
        raise ValueError("quantize_onnx_nbits: float_minimum is a 4-bit asymmetric format; "
                         "pass bits=4, symmetric=False")
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"no ONNX file at {source}; write one first")
        source = onnx.load(str(source))
    else:
        source = copy_model(source)             # the quantizer edits the model it is given
    if float_minimum:
        _replace_matmuls(source, lambda node, weight_t: int4_float_minimum_matmul(
            node, weight_t, block_size=block_size, accuracy_level=accuracy_level or 0))
        onnx.checker.check_model(source)
        onnx.save(source, str(target))
        return Path(target).stat().st_size
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantizer = MatMulNBitsQuantizer(source, bits=bits, block_size=block_size,
                                         is_symmetric=symmetric, accuracy_level=accuracy_level)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    finally:
        root.setLevel(level)
    return Path(target).stat().st_size


def int4_zero_and_remainder(scale, minimum):
    """The integer zero point and the remainder that express ``w = q * scale + minimum`` as
    ``w = scale * (q - z) + r`` (tensors of one shape, one value per block).

    ``z`` is the integer nearest to ``-minimum / scale``, clamped to the 4-bit range 0..15, and
    ``r = minimum + scale * z`` is what ``z`` misses: at most half a step when the block holds
    weights of both signs; when it does not, ``z`` clamps and ``r`` carries the whole offset.
    Either way the identity is exact.
    """
    zero = (-minimum / scale).round().clamp(0, 15)
    return zero, minimum + scale * zero


def int4_float_minimum_matmul(node, weight_t: np.ndarray, *, block_size: int = 32,
                              accuracy_level: int = 4) -> tuple[list, list]:
    """``MatMul(x, W^T)`` in the int4 format ``w = q * scale + minimum`` (per block of
    ``block_size`` inputs, ``minimum`` a float) as ONNX Runtime nodes: ``(nodes, initializers)``.
    ``x`` has rank 3 (``[batch, sequence, K]``), as in :func:`decoder_to_onnx`.

    ``MatMulNBits``' fast CPU path reads an *integer* zero point ``z`` (``w = scale * (q - z)``).
    A float zero point makes the CPU kernel skip its prepacked path and dequantize the whole
    matrix per call (``has_unquantized_zero_point_`` in onnxruntime's
    ``contrib_ops/cpu/quantization/matmul_nbits.cc``): 35 to 47 times slower at
    ``accuracy_level=4`` in a one-matrix test (K 1536, N 4096) on a 2-core Xeon with
    onnxruntime 1.32. So write ``z`` and the remainder ``r`` of :func:`int4_zero_and_remainder`,
    one float per block; then exactly ::

        w = scale * (q - z) + r
        y = MatMulNBits(x) + (block sums of x) @ R     # R: [K / block_size, N], fp32

    The second product reads an eighth of a byte per weight and costs four more nodes
    (Reshape, ReduceSum, MatMul, Add). llama.cpp's Q4_1 kernels use the same algebra inside
    their loop: each int8 block of activations (Q8_1) carries its sum for the minimum's term.
    """
    import torch
    from onnx import helper as oh
    from onnx import numpy_helper as onh

    from labkit.inference.quant import pack_int4, quantize_int4_groupwise

    k, n = weight_t.shape
    if k % block_size:
        raise ValueError(f"int4 with a float minimum: the input width {k} of {node.name!r} is "
                         f"not a multiple of block_size={block_size} (the block sums need "
                         f"whole blocks); use a block size that divides it, or keep this "
                         f"MatMul in fp32")
    blocks = k // block_size
    q, scale, minimum = quantize_int4_groupwise(torch.from_numpy(weight_t).t(), block_size)
    zero, remainder = int4_zero_and_remainder(scale, minimum)
    if blocks % 2:                                      # zero points: two per byte, per row
        zero = torch.nn.functional.pad(zero, (0, 1))
    x, y = node.input[0], node.output[0]                # names made from y: unique per node
    inits = [onh.from_array(pack_int4(q).view(n, blocks, block_size // 2).numpy(), y + ".q4"),
             onh.from_array(scale.reshape(-1).numpy(), y + ".scale"),
             onh.from_array(pack_int4(zero).reshape(-1).numpy(), y + ".zero"),   # uint8
             onh.from_array(np.ascontiguousarray(remainder.t().numpy()), y + ".r"),
             onh.from_array(np.array([0, 0, blocks, block_size], dtype=np.int64), y + ".blocks"),
             onh.from_array(np.array([-1], dtype=np.int64), y + ".last")]
    nodes = [oh.make_node("MatMulNBits", [x, y + ".q4", y + ".scale", y + ".zero"],
                          [y + ".int4"], name=y + ".int4", domain="com.microsoft", K=k, N=n,
                          bits=4, block_size=block_size, accuracy_level=accuracy_level),
             oh.make_node("Reshape", [x, y + ".blocks"], [y + ".by_block"], name=y + ".by_block"),
             oh.make_node("ReduceSum", [y + ".by_block", y + ".last"], [y + ".block_sums"],
                          name=y + ".block_sums", keepdims=0),
             oh.make_node("MatMul", [y + ".block_sums", y + ".r"], [y + ".remainder"],
                          name=y + ".remainder"),
             oh.make_node("Add", [y + ".int4", y + ".remainder"], [y], name=y + ".sum")]
    return nodes, inits


def _replace_matmuls(model, make) -> None:
    """Replace, in place, every ``MatMul`` of ``model`` whose second input is a constant 2-D
    weight ``W^T`` by the nodes and initializers ``make(node, W^T)`` returns."""
    from onnx import helper as oh
    from onnx import numpy_helper as onh

    weights = {t.name: t for t in model.graph.initializer}
    nodes, replaced = [], set()
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        new_nodes, new_inits = make(node, onh.to_array(weight).astype(np.float32))
        nodes.extend(new_nodes)
        model.graph.initializer.extend(new_inits)
        replaced.add(weight.name)
    kept = [t for t in model.graph.initializer if t.name not in replaced]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(oh.make_opsetid("com.microsoft", 1))


def copy_model(model):
    """A deep copy of an ONNX ``ModelProto`` (the quantizer edits the one it is given)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def matmul_weight_bytes(model) -> int:
    """Bytes of the constant inputs of every ``MatMul``/``MatMulNBits`` node of ``model`` (a
    path or ``ModelProto``): the weights (with their scales and zero points) that one decode
    step reads. The embedding (a Gather reads one row) and the norms are not counted, as in
    :attr:`labkit.inference.language_model.LanguageModel.weight_bytes_per_token`."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=True)
    sizes = {t.name: len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes
             for t in model.graph.initializer}
    used = {name for n in model.graph.node if n.op_type in ("MatMul", "MatMulNBits")
            for name in n.input[1:] if name in sizes}
    return int(sum(sizes[name] for name in used))


class OnnxDecoder:
    """Greedy decoding and scoring with a graph from :func:`decoder_to_onnx` (or a quantized
    copy) in ONNX Runtime on the CPU, with ``threads`` intra-op threads.

    :meth:`generate` returns the new token ids and the time of each decode step (the prompt's
    prefill excluded); :meth:`logits` scores a whole sequence in one call (for perplexity).
    """

    def __init__(self, path: str | Path, config, threads: int = 1) -> None:
        import onnxruntime as ort

        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"no ONNX file at {path}; write one with decoder_to_onnx()")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])
        self.config, self.threads = config, threads
        self._outputs = [o.name for o in self._session.get_outputs()]

    def _empty_cache(self) -> dict:
        c = self.config
        empty = np.zeros((1, c.n_kv_heads, 0, c.head_dim), dtype=np.float32)
        return {f"past_{kind}.{i}": empty for i in range(c.n_layers) for kind in ("key", "value")}

    @staticmethod
    def _causal_bias(n: int, past: int = 0) -> np.ndarray:
        bias = np.zeros((n, past + n), dtype=np.float32)
        bias[:, past:] = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
        return bias

    def logits(self, ids) -> np.ndarray:
        """Logits ``[len(ids), vocab]`` of a whole sequence (causal, from position 0)."""
        ids = [int(t) for t in ids]
        feed = {"input_ids": np.array([ids], dtype=np.int64),
                "position_ids": np.arange(len(ids), dtype=np.int64),
                "attention_bias": self._causal_bias(len(ids)), **self._empty_cache()}
        return self._session.run(["logits"], feed)[0][0]

    def generate(self, ids, new_tokens: int) -> tuple[list[int], list[float]]:
        """Greedy: prefill ``ids``, then ``new_tokens - 1`` decode steps. Returns the
        ``new_tokens`` token ids and the seconds of each decode step."""
        ids = [int(t) for t in ids]
        feed = {"input_ids": np.array([ids], dtype=np.int64),
                "position_ids": np.arange(len(ids), dtype=np.int64),
                "attention_bias": self._causal_bias(len(ids)), **self._empty_cache()}
        out = self._session.run(self._outputs, feed)
        tokens, steps, pos = [], [], len(ids)
        for _ in range(new_tokens):
            tokens.append(int(out[0][0, -1].argmax()))
            if len(tokens) == new_tokens:
                break
            feed = {"input_ids": np.array([[tokens[-1]]], dtype=np.int64),
                    "position_ids": np.array([pos], dtype=np.int64),
                    "attention_bias": np.zeros((1, pos + 1), dtype=np.float32)}
            feed.update((name.replace("present", "past"), arr)
                        for name, arr in zip(self._outputs[1:], out[1:], strict=True))
            start = time.perf_counter()
            out = self._session.run(self._outputs, feed)
            steps.append(time.perf_counter() - start)
            pos += 1
        return tokens, steps
