"""Deprecated: moved to :mod:`labkit.inference.quant`, :mod:`labkit.inference.quant_bench`,
:mod:`labkit.inference.quant_quality`, :mod:`labkit.machine.facts` (issue 18); kept for one
release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.quant",
           "labkit.inference.quant, labkit.inference.quant_bench, "
           "labkit.inference.quant_quality, labkit.machine.facts")

from labkit.inference.quant import convert_state_dict  # noqa: E402,F401
from labkit.inference.quant import dequantize_int4  # noqa: E402,F401
from labkit.inference.quant import dequantize_int8  # noqa: E402,F401
from labkit.inference.quant import DESCRIPTIONS  # noqa: E402,F401
from labkit.inference.quant import format_bytes_of  # noqa: E402,F401
from labkit.inference.quant import Int4WeightOnlyLinear  # noqa: E402,F401
from labkit.inference.quant import Int8DynamicLinear  # noqa: E402,F401
from labkit.inference.quant import Int8WeightOnlyLinear  # noqa: E402,F401
from labkit.inference.quant import layer_plan  # noqa: E402,F401
from labkit.inference.quant import pack_int4  # noqa: E402,F401
from labkit.inference.quant import PRECISIONS  # noqa: E402,F401
from labkit.inference.quant import quantize_int4_groupwise  # noqa: E402,F401
from labkit.inference.quant import quantize_int8_per_channel  # noqa: E402,F401
from labkit.inference.quant import quantize_model  # noqa: E402,F401
from labkit.inference.quant import QuantizedLanguageModel  # noqa: E402,F401
from labkit.inference.quant import unpack_int4  # noqa: E402,F401
from labkit.inference.quant_bench import bench_quant_cli  # noqa: E402,F401
from labkit.inference.quant_bench import measure_onnx_precisions  # noqa: E402,F401
from labkit.inference.quant_bench import measure_precisions  # noqa: E402,F401
from labkit.inference.quant_bench import ONNX_PRECISIONS  # noqa: E402,F401
from labkit.inference.quant_bench import RECOMMENDED_INT8  # noqa: E402,F401
from labkit.inference.quant_quality import activation_outliers  # noqa: E402,F401
from labkit.inference.quant_quality import heldout_logits  # noqa: E402,F401
from labkit.inference.quant_quality import heldout_text  # noqa: E402,F401
from labkit.inference.quant_quality import model_bytes  # noqa: E402,F401
from labkit.inference.quant_quality import perplexity_from_logits  # noqa: E402,F401
from labkit.inference.quant_quality import quality  # noqa: E402,F401
from labkit.inference.quant_quality import stored_state  # noqa: E402,F401
from labkit.inference.quant_quality import top1_agreement  # noqa: E402,F401
from labkit.machine.facts import last_level_cache_bytes as llc_bytes  # noqa: E402,F401
