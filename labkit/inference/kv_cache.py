"""The KV caches of the course's decoder: :class:`KVCache` (one batch advancing together,
preallocated for the whole generation) and :class:`SlotCache` (continuous batching: one
sequence per slot, each at its own length)."""

from __future__ import annotations

import torch

from labkit.inference.config import DecoderConfig


def _check_cache_size(kind: str, rows_name: str, rows: int, capacity: int,
                      config: DecoderConfig) -> None:
    """Raise ValueError unless ``rows`` >= 1 and 1 <= ``capacity`` <= the context."""
    if rows < 1:
        raise ValueError(f"{kind}: {rows_name} must be >= 1, got {rows}")
    if not 1 <= capacity <= config.max_seq_len:
        raise ValueError(f"{kind}: capacity must be between 1 and the context "
                         f"({config.max_seq_len} tokens), got {capacity}")


class KVCache:
    """Preallocated keys and values of every layer: ``[batch, n_kv_heads, capacity, head_dim]``.

    ``length`` is how many positions are filled. A decode step writes position ``length`` in
    place (no new memory) and then advances it. ``valid`` marks which positions hold real
    tokens (left padding of a batch of prompts of different lengths is ``False``); it is
    ``None`` when every position is real, which lets attention skip the mask entirely.
    """

    def __init__(self, config: DecoderConfig, batch_size: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str | None = None) -> None:
        _check_cache_size("KVCache", "batch_size", batch_size, capacity, config)
        shape = (batch_size, config.n_kv_heads, capacity, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device)
                     for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device)
                       for _ in range(config.n_layers)]
        self.capacity = capacity
        self.batch_size = batch_size
        self.length = 0
        self.valid: torch.Tensor | None = None    # [batch, capacity] bool, or None
        self._mask: torch.Tensor | None = None    # [batch, 1, 1, capacity] view of valid
        #: the model's per-layer weights for Decoder.decode_step (set by Decoder.new_cache)
        self.plan: list[tuple[torch.Tensor, ...]] | None = None

    def set_padding(self, valid: torch.Tensor | None) -> None:
        """Mark real tokens: ``valid`` is ``[batch, capacity]`` bool, or None if all are real."""
        if valid is None:
            self.valid, self._mask = None, None
            return
        if tuple(valid.shape) != (self.batch_size, self.capacity) or valid.dtype != torch.bool:
            raise ValueError(f"KVCache.set_padding: expected a bool tensor of shape "
                             f"({self.batch_size}, {self.capacity}), got {tuple(valid.shape)} "
                             f"{valid.dtype}")
        self.valid = valid
        self._mask = valid.view(self.batch_size, 1, 1, self.capacity)

    @property
    def mask(self) -> torch.Tensor | None:
        """The attention mask of the padding, ``valid`` as ``[batch, 1, 1, capacity]`` (a view,
        ready to broadcast over heads and queries), or None when every position is real."""
        return self._mask

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache (keys and values of every layer)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    @classmethod
    def over(cls, keys: list[torch.Tensor], values: list[torch.Tensor], length: int = 0
             ) -> KVCache:
        """A cache that writes into existing tensors (one ``[batch, n_kv_heads, capacity,
        head_dim]`` per layer, typically views of a :class:`SlotCache` slot) instead of
        allocating its own; ``length`` positions are already filled."""
        if not keys or len(keys) != len(values):
            raise ValueError("KVCache.over: give one key and one value tensor per layer")
        cache = cls.__new__(cls)
        cache.keys, cache.values = list(keys), list(values)
        cache.batch_size, cache.capacity = keys[0].shape[0], keys[0].shape[2]
        if not 0 <= length <= cache.capacity:
            raise ValueError(f"KVCache.over: length {length} is outside 0..{cache.capacity}")
        cache.length, cache.valid, cache._mask, cache.plan = length, None, None, None
        return cache


class SlotCache:
    """The KV cache of continuous batching: ``max_slots`` sequences, each at its own length.

    Every layer has keys and values ``[max_slots, n_kv_heads, capacity, head_dim]``. A *slot*
    is one row: it holds one sequence (one request) from its prefill to its last token, and
    ``lengths[slot]`` counts its filled positions (0 when the slot is free). Unlike
    :class:`KVCache`, whose rows all advance together, each slot advances on its own, so a
    request can join a running batch (:meth:`Decoder.prefill_slot() <labkit.inference.decoder.Decoder.prefill_slot>`) or leave it
    (:meth:`release`) between any two decode steps (:meth:`Decoder.decode_slots() <labkit.inference.decoder.Decoder.decode_slots>`). Which
    slot belongs to which request is the caller's business (the server's scheduler).
    """

    def __init__(self, config: DecoderConfig, max_slots: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str | None = None) -> None:
        _check_cache_size("SlotCache", "max_slots", max_slots, capacity, config)
        self.config, self.max_slots = config, max_slots
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._dtype, self._device = dtype, device
        self.lengths = [0] * max_slots
        #: the model's per-layer weights for Decoder.decode_slots (set by Decoder.new_slot_cache)
        self.plan: list[tuple[torch.Tensor, ...]] | None = None
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        """Make room for ``capacity`` positions per slot (up to the context), keeping what the
        slots hold; a smaller ``capacity`` than now does nothing. The server calls it when a
        request needs more positions than the cache was first given."""
        if capacity > self.config.max_seq_len:
            raise ValueError(f"SlotCache.grow: {capacity} positions exceed the context of "
                             f"{self.config.max_seq_len} tokens")
        if capacity <= self.capacity:
            return
        c = self.config
        shape = (self.max_slots, c.n_kv_heads, capacity, c.head_dim)
        old, self.capacity = self.capacity, capacity
        for tensors in (self.keys, self.values):
            for i in range(c.n_layers):
                new = torch.zeros(shape, dtype=self._dtype, device=self._device)
                if i < len(tensors):
                    new[:, :, :old] = tensors[i]
                    tensors[i] = new
                else:
                    tensors.append(new)

    def view(self, slot: int) -> KVCache:
        """Slot ``slot`` as a batch-1 :class:`KVCache` over the same memory (views, no copy),
        at the slot's current length: what :meth:`Decoder.forward() <labkit.inference.decoder.Decoder.forward>` needs to fill it."""
        self._check(slot)
        return KVCache.over([k[slot:slot + 1] for k in self.keys],
                            [v[slot:slot + 1] for v in self.values], self.lengths[slot])

    def release(self, slot: int) -> None:
        """Free ``slot`` for the next sequence (its old keys and values are simply
        overwritten: positions past a slot's length are never read)."""
        self._check(slot)
        self.lengths[slot] = 0

    def _check(self, slot: int) -> None:
        if not isinstance(slot, int) or not 0 <= slot < self.max_slots:
            raise ValueError(f"SlotCache: slot must be an integer from 0 to "
                             f"{self.max_slots - 1}, got {slot!r}")

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache (keys and values of every layer and slot)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)
