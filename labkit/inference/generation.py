"""What a generation returns (:class:`Generation`, :class:`GenerationTimings`) and how the
next token is chosen (:func:`pick_token`): shared by the decode loop of
:class:`labkit.inference.language_model.LanguageModel` and the serving batchers."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

@dataclass(frozen=True)
class GenerationTimings:
    """Wall-clock timings of one :meth:`LanguageModel.generate() <labkit.inference.language_model.LanguageModel.generate>` call.

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
        """Time per output token after the first (the mean decode-step time), in seconds
        (``nan`` when only one token was generated)."""
        return statistics.fmean(self.step_s) if self.step_s else math.nan

    @property
    def decode_tok_s(self) -> float:
        """Decode throughput, tokens produced by the decode steps per second, all prompts of
        the batch together: ``batch_size * len(step_s) / sum(step_s)``."""
        return self.batch_size * len(self.step_s) / sum(self.step_s) if self.step_s else math.nan

    @property
    def tokens_per_s(self) -> float:
        """End-to-end throughput, all new tokens of the batch / total time (prefill included)."""
        return self.batch_size * self.new_tokens / self.total_s

    @property
    def prefill_tok_s(self) -> float:
        """Prompt tokens processed per second during the prefill (``ttft_s`` counts it)."""
        return self.batch_size * self.prompt_tokens / self.ttft_s

    @property
    def positions(self) -> tuple[int, ...]:
        """The sequence position of each decode step in ``step_s`` (for plots)."""
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
    """What :meth:`LanguageModel.generate() <labkit.inference.language_model.LanguageModel.generate>` returns.

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


# the model wrapper and its decode loop


def pick_token(logits: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """Next token of each row of ``logits`` (``[B, vocab]``): the argmax when ``temperature``
    is 0, else a sample from the softmax of ``logits / temperature`` over the ``top_k`` best."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    scores = logits.float() / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).view(-1)
