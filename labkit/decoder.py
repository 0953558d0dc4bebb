"""Deprecated: moved to :mod:`labkit.inference.config`, :mod:`labkit.inference.decoder`,
:mod:`labkit.inference.kv_cache` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.decoder",
           "labkit.inference.config, labkit.inference.decoder, labkit.inference.kv_cache")

from labkit.inference.config import DecoderConfig  # noqa: E402,F401
from labkit.inference.decoder import Block  # noqa: E402,F401
from labkit.inference.decoder import Decoder  # noqa: E402,F401
from labkit.inference.decoder import hf_llama_to_decoder_state  # noqa: E402,F401
from labkit.inference.decoder import init_weights  # noqa: E402,F401
from labkit.inference.decoder import rope_tables  # noqa: E402,F401
from labkit.inference.kv_cache import KVCache  # noqa: E402,F401
from labkit.inference.kv_cache import SlotCache  # noqa: E402,F401
