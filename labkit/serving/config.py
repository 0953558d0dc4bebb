"""The server's settings: :class:`ServerConfig` and the names it accepts.

Holds only plain data and its validation; imports nothing from the rest of
:mod:`labkit.serving` (every other module may import it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ServerConfig", "MODELS", "BATCHING", "ENGINES"]

#: model names the server accepts (``--model``)
MODELS = ("tiny-gpt", "smollm2")

#: batching modes the server accepts (``--batching``)
BATCHING = ("dynamic", "continuous")

#: where the engine runs (``--engine``): its own process (vLLM V1's design, the default) or a
#: thread of the HTTP process (the single-process design, kept to measure the difference)
ENGINES = ("process", "thread")


@dataclass(frozen=True)
class ServerConfig:
    """Settings of the server (each is a ``--flag`` of ``python -m labkit serve``).

    Attributes:
        model: ``"tiny-gpt"`` (default; the course's 0.9 M-parameter model) or ``"smollm2"``.
        served_model_name: the name clients send as ``model`` and the ``model_name`` label of
            the metrics (vLLM's ``--served-model-name``); default: ``model``.
        max_batch_size: most sequences decoded together; 1 turns batching off (Triton's
            ``max_batch_size``; with continuous batching vLLM's ``max_num_seqs``).
        max_queue_delay_ms: dynamic batching only: longest a request waits for others before
            its batch starts, counted from the oldest waiting request (Triton's
            ``max_queue_delay_microseconds``, in ms).
        max_queue_size: sequences allowed to wait (accepted, not yet running); the request
            that would exceed it gets 429 (one request may always wait when none does).
        max_tokens_default: ``max_tokens`` when the request gives none.
        max_tokens_limit: largest ``max_tokens`` accepted.
        max_prompt_chars: longest prompt accepted, in characters.
        max_body_bytes: largest request body accepted (413 above it).
        max_n: largest ``n`` (choices per prompt) accepted.
        request_timeout_s: a request not finished after this many seconds gets 504.
        threads: PyTorch threads of the engine.
        shutdown_timeout_s: how long a graceful shutdown waits for requests in flight.
        batching: ``"dynamic"`` (whole batches, Triton-style) or ``"continuous"`` (a sequence
            joins and leaves the batch at every decode step, vLLM-style).
        engine: ``"process"`` (the engine in its own process, the default) or ``"thread"``
            (in a thread of the HTTP process, sharing its GIL).
        enable_prefix_caching: reuse the keys and values of prompt blocks seen before
            (:mod:`labkit.serving.prefix_cache`; on by default, as in vLLM V1; vLLM's
            ``--enable-prefix-caching`` / ``--no-enable-prefix-caching``).
        block_size: tokens per prefix-cache block (vLLM's ``--block-size``).
        prefix_cache_blocks: most blocks the prefix cache holds (least recently used blocks
            no running sequence holds are evicted first); the stand-in for a GPU's KV memory.
            A block holds ``2 x layers x kv_heads x block_size x head_dim`` numbers: 32 KiB
            for tiny-gpt, 720 KiB for SmolLM2 in fp32 (256 blocks: 8 MiB, 180 MiB).
    """

    model: str = "tiny-gpt"
    served_model_name: str | None = None
    max_batch_size: int = 16
    max_queue_delay_ms: float = 5.0
    max_queue_size: int = 64
    max_tokens_default: int = 16
    max_tokens_limit: int = 128
    max_prompt_chars: int = 4096
    max_body_bytes: int = 64 * 1024
    max_n: int = 8
    request_timeout_s: float = 30.0
    threads: int = 1
    shutdown_timeout_s: float = 30.0
    batching: str = "dynamic"
    engine: str = "process"
    enable_prefix_caching: bool = True
    block_size: int = 16
    prefix_cache_blocks: int = 256

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {self.batching!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.served_model_name is not None and (
                not isinstance(self.served_model_name, str) or not self.served_model_name):
            raise ValueError("served_model_name must be a non-empty string")
        for name in ("max_batch_size", "max_queue_size", "max_tokens_default",
                     "max_tokens_limit", "max_prompt_chars", "max_body_bytes", "max_n",
                     "threads", "block_size", "prefix_cache_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("max_queue_delay_ms", "request_timeout_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.enable_prefix_caching, bool):
            raise ValueError(f"enable_prefix_caching must be True or False, got "
                             f"{self.enable_prefix_caching!r}")
        if self.max_tokens_default > self.max_tokens_limit:
            raise ValueError("max_tokens_default must not exceed max_tokens_limit")

    @property
    def name(self) -> str:
        """The model name clients use and the metrics carry."""
        return self.served_model_name or self.model
