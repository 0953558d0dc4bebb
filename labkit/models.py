"""Deprecated: moved to :mod:`labkit.inference.decode_bench`, :mod:`labkit.inference.generation`,
:mod:`labkit.inference.language_model`, :mod:`labkit.inference.loading`,
:mod:`labkit.inference.smollm2`, :mod:`labkit.inference.tokenizer`,
:mod:`labkit.machine.dtypes`, :mod:`labkit.machine.facts`, :mod:`labkit.machine.probes` (issue
18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.models",
           "labkit.inference.decode_bench, labkit.inference.generation, "
           "labkit.inference.language_model, labkit.inference.loading, "
           "labkit.inference.smollm2, labkit.inference.tokenizer, labkit.machine.dtypes, "
           "labkit.machine.facts, labkit.machine.probes")

from labkit.inference.decode_bench import bench_decode_cli  # noqa: E402,F401
from labkit.inference.decode_bench import BENCH_KEYS  # noqa: E402,F401
from labkit.inference.decode_bench import bench_prompt  # noqa: E402,F401
from labkit.inference.decode_bench import decode_benchmark  # noqa: E402,F401
from labkit.inference.decode_bench import time_hf_generate  # noqa: E402,F401
from labkit.inference.generation import Generation  # noqa: E402,F401
from labkit.inference.generation import GenerationTimings  # noqa: E402,F401
from labkit.inference.language_model import cache_dir  # noqa: E402,F401
from labkit.inference.language_model import DATA_DIR  # noqa: E402,F401
from labkit.inference.language_model import DTYPES  # noqa: E402,F401
from labkit.inference.language_model import LanguageModel  # noqa: E402,F401
from labkit.inference.language_model import load_tiny_gpt  # noqa: E402,F401
from labkit.inference.language_model import SMOLLM2_SYSTEM  # noqa: E402,F401
from labkit.inference.language_model import TextStream  # noqa: E402,F401
from labkit.inference.language_model import TINY_FILES  # noqa: E402,F401
from labkit.inference.loading import load_model  # noqa: E402,F401
from labkit.inference.loading import MODEL_NAMES  # noqa: E402,F401
from labkit.inference.smollm2 import load_smollm2  # noqa: E402,F401
from labkit.inference.smollm2 import load_smollm2_hf  # noqa: E402,F401
from labkit.inference.smollm2 import prepare_smollm2  # noqa: E402,F401
from labkit.inference.smollm2 import SMOLLM2_CONTEXT  # noqa: E402,F401
from labkit.inference.smollm2 import smollm2_dir  # noqa: E402,F401
from labkit.inference.smollm2 import SMOLLM2_DIRNAME  # noqa: E402,F401
from labkit.inference.smollm2 import SMOLLM2_GGUF  # noqa: E402,F401
from labkit.inference.smollm2 import smollm2_gguf_path  # noqa: E402,F401
from labkit.inference.smollm2 import SMOLLM2_WHEEL  # noqa: E402,F401
from labkit.inference.tokenizer import Tokenizer  # noqa: E402,F401
from labkit.machine.dtypes import torch_dtype  # noqa: E402,F401
from labkit.machine.facts import torch_threads as num_threads  # noqa: E402,F401
from labkit.machine.probes import gemv_read_GBps as measure_gemv_bandwidth  # noqa: E402,F401
from labkit.inference.generation import pick_token as _pick  # noqa: E402,F401
from labkit.inference.tokenizer import (  # noqa: E402,F401
    IncrementalDetokenizer as _IncrementalDetokenizer)
