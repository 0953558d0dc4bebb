"""Batching: the engine's scheduler, dynamic or continuous, over one slot KV cache.

:class:`Scheduler` owns the sequences the engine has accepted and runs them through the model
one **iteration** at a time (:meth:`Scheduler.step`):

1. release the slots of sequences that were aborted (client gone, timed out);
2. **admit** waiting sequences into free slots (oldest first): each prompt is prefilled into
   its slot (:meth:`~labkit.inference.decoder.Decoder.prefill_slot`), which gives its first token;
3. run **one decode step** for every occupied slot, each at its own position
   (:meth:`~labkit.inference.decoder.Decoder.decode_slots`), and hand every sequence its next token.

The two batching modes differ only in *when* step 2 may admit:

- ``"continuous"`` (Orca, vLLM): whenever a slot is free, so a sequence waits for *a* slot,
  never for the longest answer of a batch; ``max_queue_delay_ms`` is not used.
- ``"dynamic"`` (Triton's dynamic batcher): only when no sequence runs, and only once the
  batch is full (``max_batch_size``) or the oldest waiting sequence has waited
  ``max_queue_delay_ms``; the batch then runs until its last row ends. A row that ends early
  frees its slot, but nobody joins until the whole batch is done; aborted rows leave at the
  next step, and a batch whose rows are all aborted ends at once.

Every row samples with its own temperature, ``top_p`` and seeded generator, so requests with
different settings share a step and a greedy or seeded request gets the tokens it would get
alone. Text is detokenized here, incrementally, and ``stop`` strings are applied (text that
could be the start of a stop string is held back until it is not).

Imports torch, :mod:`labkit.inference` and :mod:`labkit.machine` (lazily) and
:mod:`labkit.serving.protocol`; it knows nothing of HTTP or IPC.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from labkit.serving.protocol import RequestError

__all__ = ["Scheduler", "Sequence", "sample"]


@dataclass(eq=False)
class Sequence:
    """One sequence the engine generates (one choice of one request)."""

    rid: str
    prompt_ids: list
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple = ()
    arrival: float = field(default_factory=time.monotonic)   # time.monotonic(), front end's
    out_ids: list = field(default_factory=list)
    text: str = ""
    emitted: int = 0                       # characters of ``text`` already handed out
    slot: int | None = None
    generator: object = None
    detok: object = None
    aborted: bool = False
    final_only: bool = False               # not streamed: one event at the end (vLLM's FINAL_ONLY)
    held: str = ""                         # final_only: the text not yet handed out
    first_token_at: float | None = None    # time.monotonic() of its first token
    blocks: list = field(default_factory=list)   # prefix-cache blocks it pins


def sample(logits, temperature: float, top_p: float, generator) -> int:
    """The next token of one row of ``logits`` (``[1, vocab]``): argmax when
    ``temperature`` is 0, else a sample from ``softmax(logits / temperature)`` restricted to
    the smallest set of tokens whose probability reaches ``top_p`` (nucleus sampling)."""
    import torch

    from labkit.inference.generation import pick_token

    if temperature == 0:
        return int(torch.argmax(logits, dim=-1)[0])
    if top_p >= 1.0:
        return int(pick_token(logits, temperature, None, generator)[0])
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_p, order = torch.sort(probs, dim=-1, descending=True)
    drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p     # keeps at least one token
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    choice = torch.multinomial(sorted_p, 1, generator=generator)
    return int(order.gather(-1, choice)[0, 0])


class Scheduler:
    """The batch of one engine (see the module docstring).

    Args:
        model: a loaded :class:`~labkit.inference.language_model.LanguageModel`.
        config: the :class:`~labkit.serving.config.ServerConfig` (``batching``,
            ``max_batch_size``, ``max_queue_delay_ms``).

    Not thread-safe: one engine loop calls :meth:`add`, :meth:`abort` and :meth:`step`.
    """

    #: positions per slot allocated at first; the cache grows when a sequence needs more
    INITIAL_CAPACITY = 256

    def __init__(self, model, config) -> None:
        self.model, self.config = model, config
        self.slots = config.max_batch_size
        self.continuous = config.batching == "continuous"
        self.waiting: list[Sequence] = []
        self.running: dict[int, Sequence] = {}
        self.by_rid: dict[str, Sequence] = {}
        self.cache = None
        self.steps = 0                      # decode steps run
        self.batches = 0                    # dynamic batching: batches started
        self.slot_uses = [0] * self.slots   # sequences admitted per slot
        self.eos = model.tokenizer.eos_id
        self.prefix = None
        if getattr(config, "enable_prefix_caching", False):
            from labkit.serving.prefix_cache import PrefixCache

            self.prefix = PrefixCache(config.block_size, config.prefix_cache_blocks)

    # -- requests ----------------------------------------------------------------------------
    def add(self, seq: Sequence) -> int:
        """Accept ``seq`` (its ``prompt_ids`` already encoded); returns its prompt tokens or
        raises :class:`~labkit.serving.protocol.RequestError` 422 when prompt + ``max_tokens``
        exceed the context."""
        from labkit.inference.tokenizer import IncrementalDetokenizer

        n, ctx = len(seq.prompt_ids), self.model.context_length
        if n < 1:
            raise RequestError(422, "the prompt has no tokens", param="prompt")
        if n + seq.max_tokens > ctx:
            raise RequestError(422, f"the prompt has {n} tokens; with max_tokens "
                                    f"{seq.max_tokens} that exceeds the context of {ctx} "
                                    f"tokens", param="max_tokens")
        seq.detok = IncrementalDetokenizer(self.model.tokenizer)
        self.waiting.append(seq)
        self.by_rid[seq.rid] = seq
        return n

    def abort(self, rid: str) -> None:
        """Drop a sequence (waiting or running); it produces no more events."""
        seq = self.by_rid.pop(rid, None)
        if seq is not None:
            seq.aborted = True
            if seq.slot is None and seq in self.waiting:
                self.waiting.remove(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def seconds_until_work(self, now: float | None = None) -> float | None:
        """0 when :meth:`step` has work now; the seconds until it will (dynamic batching
        waiting for its batch to fill); None when idle."""
        if self.running:
            return 0.0
        if not self.waiting:
            return None
        if self.continuous or len(self.waiting) >= self.slots:
            return 0.0
        now = time.monotonic() if now is None else now
        deadline = self.waiting[0].arrival + self.config.max_queue_delay_ms / 1e3
        return max(0.0, deadline - now)

    def stats(self) -> dict:
        """Gauges for the metrics: running and waiting sequences, KV-cache usage (positions
        held by running sequences over all the slots could hold at full context)."""
        held = sum(self.cache.lengths) if self.cache is not None else 0
        return {"running": len(self.running), "waiting": len(self.waiting),
                "kv_usage": held / (self.slots * self.model.context_length)}

    # -- one iteration -----------------------------------------------------------------------
    def step(self) -> tuple[list, dict]:
        """One iteration (release, admit, decode). Returns ``(events, observed)``: events
        ``("tok", rid, text, finish_reason or None, n_tokens, first_token_at)`` and ``("err",
        rid, status, message)``; ``observed`` holds ``batch_sizes`` and ``queue_times`` for the
        metrics. A sequence with ``final_only`` (a request that is not streamed) gets one
        ``tok`` event when it ends, with all its text and tokens, as vLLM's ``FINAL_ONLY``
        output kind does: the front end then handles one event per answer, not one per token.

        A failure inside the model fails every running sequence (500) and starts from a clean
        cache; the engine keeps serving.
        """
        import torch

        from labkit.machine.facts import torch_threads

        events: list = []
        observed = {"batch_sizes": [], "queue_times": [], "prefix_queries": 0,
                    "prefix_hits": 0}
        try:
            with torch.inference_mode(), torch_threads(self.config.threads):
                if self.cache is None:
                    self.cache = self.model.net.new_slot_cache(
                        self.slots, min(self.model.context_length, self.INITIAL_CAPACITY))
                for slot in [s for s, q in self.running.items() if q.aborted]:
                    self._release(slot)
                self._admit(events, observed)
                if self.running:
                    self._decode(events, observed)
        except Exception as err:  # noqa: BLE001 - the rows of a failed step get the error
            for seq in list(self.running.values()) + [
                    q for q in self.waiting if q.slot is not None]:
                events.append(("err", seq.rid, 500, f"generation failed: {err}"))
                self.by_rid.pop(seq.rid, None)
                self._unpin(seq)
            self.waiting = [q for q in self.waiting if q.slot is None]
            self.running.clear()
            self.cache = None
        return events, observed

    def _may_admit(self) -> bool:
        if not self.waiting:
            return False
        if self.continuous:
            return len(self.running) < self.slots
        return not self.running and self.seconds_until_work() == 0

    def _admit(self, events: list, observed: dict) -> None:
        import torch

        if not self._may_admit():
            return
        free = [s for s in range(self.slots) if s not in self.running]
        admitted, logits = [], []
        now = time.monotonic()
        while free and self.waiting:
            seq = self.waiting[0]
            needed = len(seq.prompt_ids) + seq.max_tokens
            if needed > self.cache.capacity:
                self.cache.grow(min(self.model.context_length,
                                    max(needed, 2 * self.cache.capacity)))
            # registered in its slot before the prefill: a failure from here on reaches it
            seq.slot = free.pop(0)
            self.waiting.pop(0)
            self.running[seq.slot] = seq
            self.slot_uses[seq.slot] += 1
            observed["queue_times"].append(max(0.0, now - seq.arrival))
            logits.append(self._prefill(seq, observed))
            if seq.temperature > 0:
                seq.generator = torch.Generator().manual_seed(
                    seq.seed if seq.seed is not None
                    else int.from_bytes(os.urandom(8), "little") >> 1)
            admitted.append(seq)
        if admitted and not self.continuous:
            self.batches += 1
            observed["batch_sizes"].append(len(admitted))
        self._hand_out(admitted, torch.stack(logits), events)

    def _prefill(self, seq: Sequence, observed: dict):
        """Prefill ``seq`` into its slot: logits ``[vocab]`` of its first token. With prefix
        caching, the cached blocks of its prompt are copied into the slot and only the rest
        is computed; its new full blocks are then cached (:mod:`~.prefix_cache`)."""
        import torch

        net, cache, slot = self.model.net, self.cache, seq.slot
        if self.prefix is None:
            return net.prefill_slot(seq.prompt_ids, cache, slot)
        hit, seq.blocks = self.prefix.lookup(seq.prompt_ids)
        observed["prefix_queries"] += len(seq.prompt_ids)
        observed["prefix_hits"] += hit
        if hit == 0:
            logits = net.prefill_slot(seq.prompt_ids, cache, slot)
        else:
            self.prefix.load(seq.blocks, cache, slot)
            view = cache.view(slot)
            rest = torch.as_tensor(seq.prompt_ids[hit:], dtype=torch.long,
                                   device=cache.keys[0].device).view(1, -1)
            logits = net(rest, view, last_only=True)[0, -1]
            cache.lengths[slot] = view.length
        seq.blocks += self.prefix.store(seq.prompt_ids, cache, slot,
                                        hit // self.prefix.block_size)
        return logits

    def reset_prefix_cache(self) -> bool:
        """Drop the cached blocks no running sequence holds (vLLM's ``/reset_prefix_cache``);
        True when the cache is now empty (also when prefix caching is off)."""
        return self.prefix.reset() if self.prefix is not None else True

    def _unpin(self, seq: Sequence) -> None:
        if self.prefix is not None and seq.blocks:
            self.prefix.release(seq.blocks)
        seq.blocks = []

    def _decode(self, events: list, observed: dict) -> None:
        import torch

        slots = sorted(s for s, q in self.running.items() if q.out_ids)
        if not slots:
            return
        seqs = [self.running[s] for s in slots]
        tokens = torch.tensor([q.out_ids[-1] for q in seqs], dtype=torch.long)
        logits = self.model.net.decode_slots(tokens, self.cache, slots)
        self.steps += 1
        if self.continuous:
            observed["batch_sizes"].append(len(seqs))
        self._hand_out(seqs, logits, events)

    def _hand_out(self, seqs: list, logits, events: list) -> None:
        """Pick each row's next token, turn it into text, and finish the rows that end."""
        now = time.monotonic()
        for i, seq in enumerate(seqs):
            token = sample(logits[i:i + 1], seq.temperature, seq.top_p, seq.generator)
            seq.out_ids.append(token)
            if seq.first_token_at is None:
                seq.first_token_at = now
            piece, reason = self._text(seq, token)
            if reason is None and len(seq.out_ids) >= seq.max_tokens:
                reason = "length"
                piece += self._flush(seq)
            if not seq.final_only:
                events.append(("tok", seq.rid, piece, reason, 1, seq.first_token_at))
            elif reason is None:
                seq.held += piece
            else:
                events.append(("tok", seq.rid, seq.held + piece, reason, len(seq.out_ids),
                               seq.first_token_at))
            if reason is not None:
                self.by_rid.pop(seq.rid, None)
                self._release(seq.slot)

    def _text(self, seq: Sequence, token: int) -> tuple[str, str | None]:
        """The text that may be handed out after ``token``, and ``"stop"`` when the sequence
        ends here (end-of-sequence token, or a stop string: cut before it)."""
        if token == self.eos:
            return self._flush(seq), "stop"
        seq.text += seq.detok.push(token)
        if not seq.stop:
            return self._flush(seq), None
        longest = max(len(s) for s in seq.stop)
        start = max(0, seq.emitted - longest + 1)
        hits = [i for i in (seq.text.find(s, start) for s in seq.stop) if i >= 0]
        if hits:
            cut = min(hits)
            piece = seq.text[seq.emitted:cut] if cut > seq.emitted else ""
            seq.text, seq.emitted = seq.text[:cut], cut
            return piece, "stop"
        safe = max(seq.emitted, len(seq.text) - longest + 1)
        piece, seq.emitted = seq.text[seq.emitted:safe], safe
        return piece, None

    @staticmethod
    def _flush(seq: Sequence) -> str:
        piece, seq.emitted = seq.text[seq.emitted:], len(seq.text)
        return piece

    def _release(self, slot: int) -> None:
        seq = self.running.pop(slot, None)
        if seq is not None:
            seq.slot = None
            self._unpin(seq)
        self.cache.release(slot)
