"""The course's language model: a :class:`~labkit.inference.decoder.Decoder` with its
tokenizer, and its generation API (:meth:`LanguageModel.generate`, :meth:`LanguageModel.stream`).

The decode loop is hand-written rather than Transformers' ``generate()``: a static KV cache
allocated once per call, a decode step that streams each weight matrix once, and nothing
else per token. :func:`load_tiny_gpt` loads the course's own tiny model; SmolLM2 is in
:mod:`labkit.inference.smollm2`, and :func:`labkit.inference.loading.load_model` picks by name.
"""

from __future__ import annotations

import contextlib
import math
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from labkit.inference.decoder import Decoder, DecoderConfig
from labkit.inference.generation import Generation, GenerationTimings, pick_token
from labkit.inference.tokenizer import IncrementalDetokenizer, Tokenizer
from labkit.machine.dtypes import model_dtypes, torch_dtype
from labkit.machine.facts import torch_threads

#: The torch dtype of each precision a language model runs in (``"fp32"``, ``"bf16"``, ``"fp16"``).
DTYPES: dict[str, torch.dtype] = model_dtypes()

#: Where the package's data files live (tiny model checkpoint, its tokenizer, the corpus).
DATA_DIR = Path(__file__).resolve().parents[1] / "data"

TINY_FILES = {"weights": "tiny_gpt.safetensors", "config": "tiny_gpt.json",
              "tokenizer": "tiny_gpt_tokenizer.json"}

#: System prompt of SmolLM2's chat template (what :meth:`LanguageModel.chat_prompt` writes).
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def cache_dir() -> Path:
    """Folder for big derived files (the dequantized SmolLM2): ``$LABKIT_CACHE`` if set, else
    ``.cache/labkit/`` at the repository root (git-ignored). Not created here."""
    env = os.environ.get("LABKIT_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / ".cache" / "labkit"


class LanguageModel:
    """A :class:`~labkit.inference.decoder.Decoder` with its tokenizer and the course's generation API.

    Attributes:
        name: ``"smollm2"`` or ``"tiny-gpt"``.
        net: the network (an ``nn.Module`` in eval mode).
        tokenizer: the :class:`~labkit.inference.tokenizer.Tokenizer`.
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
        """The network's :class:`~labkit.inference.config.DecoderConfig`."""
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
        :meth:`~labkit.inference.decoder.Decoder.streamed_params_per_token`)."""
        return self.net.streamed_params_per_token()

    @property
    def weight_bytes_per_token(self) -> float:
        """Bytes of weights read per decode step, ``streamed_params`` x bytes per parameter
        (via :func:`labkit.planning.memory.weight_bytes`). At batch size 1 that is per token."""
        from labkit.planning.memory import weight_bytes

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
            A :class:`~labkit.inference.generation.Generation` with the texts, the ids and the :class:`~labkit.inference.generation.GenerationTimings`.

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
        its ``timings`` attribute holds the :class:`~labkit.inference.generation.GenerationTimings`::

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
        returns the :class:`~labkit.inference.generation.GenerationTimings`. ``None`` marks a row that already ended."""
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
            stack.enter_context(torch_threads(threads))
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
                nxt = pick_token(logits, temperature, top_k, generator)
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
        detok = IncrementalDetokenizer(model.tokenizer)
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


def finish_net(net: Decoder, dtype: str, device: str | torch.device | None) -> Decoder:
    """``net`` in ``dtype`` on ``device``, in eval mode without gradients, and (on CPU) in the
    decode layout: the last step of every loader."""
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
    return LanguageModel("tiny-gpt", finish_net(net, dtype, device), tok, dtype,
                         source="trained for the course by scripts/train_tiny_model.py "
                                f"on {meta.get('corpus', 'the course corpus')}")
