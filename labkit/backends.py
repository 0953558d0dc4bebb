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
           "max_abs_diff"]


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
                         "(for example with labkit.scratch.scratch_dir())")
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
    ``int8-dynamic`` in :mod:`labkit.quant`). Embeddings and other operators stay fp32.
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
        input_names, output_names: the graph's inputs and outputs.
    """

    def __init__(self, path: str | Path, threads: int = 1, device: str | None = None) -> None:
        import onnxruntime as ort

        from labkit.hardware import pick_device

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
    :func:`labkit.hardware.pick_device` takes it (default: CUDA when present)."""
    return OnnxSession(path, threads=threads, device=device)


def max_abs_diff(a, b) -> float:
    """Largest absolute difference between two outputs (tensors or arrays of one shape)."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"max_abs_diff: shapes differ, {a.shape} and {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
