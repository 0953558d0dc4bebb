"""Deprecated: moved to :mod:`labkit.inference.backends` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.backends",
           "labkit.inference.backends")

from labkit.inference.backends import copy_model  # noqa: E402,F401
from labkit.inference.backends import decoder_to_onnx  # noqa: E402,F401
from labkit.inference.backends import export_onnx  # noqa: E402,F401
from labkit.inference.backends import matmul_weight_bytes  # noqa: E402,F401
from labkit.inference.backends import max_abs_diff  # noqa: E402,F401
from labkit.inference.backends import onnx_session  # noqa: E402,F401
from labkit.inference.backends import OnnxDecoder  # noqa: E402,F401
from labkit.inference.backends import OnnxExport  # noqa: E402,F401
from labkit.inference.backends import OnnxSession  # noqa: E402,F401
from labkit.inference.backends import quantize_onnx_int8  # noqa: E402,F401
from labkit.inference.backends import quantize_onnx_nbits  # noqa: E402,F401
