"""Automatic prefix caching: the keys and values of a prompt's leading blocks, reused by later
prompts that start the same way (vLLM's design).

vLLM ("Automatic Prefix Caching", design docs,
https://docs.vllm.ai/en/latest/design/prefix_caching/, checked 2026-12-05) cuts every
prompt into **blocks** of ``block_size`` tokens and gives each *full* block a key: the hash of
its parent block's key and its own token ids. The key of block ``i`` therefore names the whole
prefix ``0 .. (i+1)*block_size``, and two prompts share the keys of exactly the blocks their
common prefix covers. The cache maps key → that block's keys and values (every layer). A new
prompt looks its blocks up in order and stops at the first miss; the hits are copied into its
slot of the batch's KV cache and only the remaining tokens are prefilled. As in vLLM, at least
the last prompt token is always computed (its logits give the first output token), so a fully
cached prompt recomputes its last block.

The cache is bounded (``capacity`` blocks, like a GPU's KV memory). Blocks a running sequence
holds (it read them or wrote them) are pinned; a block no sequence holds may be evicted, the
least recently used first. When every block is pinned a new block is simply not cached.

What differs from vLLM: vLLM's blocks *are* the sequences' KV memory (paged attention), so a hit
costs nothing; here a slot is one contiguous row
(:class:`~labkit.inference.kv_cache.SlotCache`), so a hit costs a copy of the block into the
slot, far cheaper than recomputing it.

Counters ``queries`` and ``hits`` count **tokens** (prompt tokens looked up, and tokens found),
the units of vLLM's ``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits``.

Imports torch lazily (only :meth:`PrefixCache.load` / :meth:`PrefixCache.store` use it).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["PrefixCache", "block_hashes", "BLOCK_SIZE", "CAPACITY_BLOCKS"]

#: tokens per block (vLLM's default ``--block-size`` on GPUs is 16)
BLOCK_SIZE = 16

#: blocks the cache may hold by default (ServerConfig.prefix_cache_blocks)
CAPACITY_BLOCKS = 256

#: the parent key of a prompt's first block
_ROOT = b"labkit-prefix-cache-v1"


def block_hashes(token_ids, block_size: int = BLOCK_SIZE, limit: int | None = None
                 ) -> list[bytes]:
    """The keys of the full blocks of ``token_ids``: ``key[i] = sha256(key[i-1] || ids of
    block i)`` (vLLM's chained block hash; SHA-256 is also vLLM's default
    ``--prefix-caching-hash-algo``). A trailing partial block has no key. ``limit``: at most
    that many blocks."""
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    n = len(token_ids) // block_size
    if limit is not None:
        n = min(n, limit)
    keys, parent = [], _ROOT
    for i in range(n):
        chunk = token_ids[i * block_size:(i + 1) * block_size]
        h = hashlib.sha256(parent)
        h.update(b"".join(int(t).to_bytes(4, "little", signed=False) for t in chunk))
        parent = h.digest()
        keys.append(parent)
    return keys


@dataclass(eq=False)
class _Block:
    kv: object            # tensor [2, n_layers, n_kv_heads, block_size, head_dim]
    refs: int = 0         # running sequences that hold it


class PrefixCache:
    """A bounded, LRU cache of KV blocks keyed by :func:`block_hashes` (see the module
    docstring).

    Args:
        block_size: tokens per block.
        capacity: most blocks held (each holds ``2 x layers x kv_heads x block_size x
            head_dim`` numbers).

    Use: ``n, keys = cache.lookup(prompt_ids)`` (counts the query), :meth:`load` the ``n``
    tokens into a slot, prefill the rest, :meth:`store` the new full blocks from the slot, and
    :meth:`release` the keys the sequence holds when it ends.
    """

    def __init__(self, block_size: int = BLOCK_SIZE, capacity: int = CAPACITY_BLOCKS) -> None:
        for name, value in (("block_size", block_size), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PrefixCache: {name} must be an integer >= 1, got {value!r}")
        self.block_size, self.capacity = block_size, capacity
        self.blocks: OrderedDict[bytes, _Block] = OrderedDict()   # least recently used first
        self.queries = self.hits = 0                              # tokens
        self.evictions = 0                                        # blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __contains__(self, key: bytes) -> bool:
        return key in self.blocks

    # -- lookup ------------------------------------------------------------------------------
    def lookup(self, token_ids) -> tuple[int, list[bytes]]:
        """The longest cached prefix of ``token_ids``: ``(tokens, keys)``, ``tokens`` a
        multiple of ``block_size`` below ``len(token_ids)`` (the last token is always
        computed). Counts ``len(token_ids)`` queried and ``tokens`` hit; the hit blocks
        become the most recently used and are pinned (:meth:`release` them)."""
        n = len(token_ids)
        keys = block_hashes(token_ids, self.block_size, limit=(n - 1) // self.block_size)
        found = []
        for key in keys:
            block = self.blocks.get(key)
            if block is None:
                break
            found.append(key)
        for key in found:
            self.blocks.move_to_end(key)
            self.blocks[key].refs += 1
        self.queries += n
        self.hits += len(found) * self.block_size
        return len(found) * self.block_size, found

    def load(self, keys: list[bytes], cache, slot: int) -> None:
        """Copy the blocks ``keys`` (a prefix, in order) into positions ``0 ..`` of ``slot`` of
        the :class:`~labkit.inference.kv_cache.SlotCache` ``cache`` and set its length."""
        import torch

        if not keys:
            return
        kv = torch.cat([self.blocks[k].kv for k in keys], dim=3)   # [2, L, kv, n, hd]
        n = kv.shape[3]
        for layer, (kc, vc) in enumerate(zip(cache.keys, cache.values, strict=True)):
            kc[slot, :, :n].copy_(kv[0, layer])
            vc[slot, :, :n].copy_(kv[1, layer])
        cache.lengths[slot] = n

    # -- insertion ---------------------------------------------------------------------------
    def store(self, token_ids, cache, slot: int, start_block: int = 0) -> list[bytes]:
        """Cache the full blocks of ``token_ids`` from ``start_block`` on, read from ``slot``
        of ``cache`` (which holds their keys and values). Returns the keys now pinned for the
        sequence (new blocks, and blocks another sequence stored meanwhile). A block that finds
        the cache full of pinned blocks is not cached."""
        import torch

        keys = block_hashes(token_ids, self.block_size)
        held, B = [], self.block_size
        for i in range(start_block, len(keys)):
            key = keys[i]
            block = self.blocks.get(key)
            if block is None:
                if not self._make_room():
                    break
                kv = torch.stack([
                    torch.stack([k[slot, :, i * B:(i + 1) * B] for k in cache.keys]),
                    torch.stack([v[slot, :, i * B:(i + 1) * B] for v in cache.values])])
                block = self.blocks[key] = _Block(kv.clone())
            else:
                self.blocks.move_to_end(key)
            block.refs += 1
            held.append(key)
        return held

    def _make_room(self) -> bool:
        """Evict the least recently used unpinned block if the cache is full; False when it is
        full of pinned blocks."""
        if len(self.blocks) < self.capacity:
            return True
        for key, block in self.blocks.items():
            if block.refs == 0:
                del self.blocks[key]
                self.evictions += 1
                return True
        return False

    def release(self, keys: list[bytes]) -> None:
        """Unpin blocks a finished sequence held (they stay cached until evicted)."""
        for key in keys:
            block = self.blocks.get(key)
            if block is not None and block.refs > 0:
                block.refs -= 1

    def reset(self) -> bool:
        """Drop every unpinned block (vLLM's ``/reset_prefix_cache``); True when the cache is
        now empty, False when running sequences still pin some blocks."""
        for key in [k for k, b in self.blocks.items() if b.refs == 0]:
            del self.blocks[key]
        return not self.blocks

    @property
    def hit_rate(self) -> float:
        """Hit tokens over queried tokens (0 before any query)."""
        return self.hits / self.queries if self.queries else 0.0

    def stats(self) -> dict:
        return {"blocks": len(self.blocks), "capacity": self.capacity,
                "block_size": self.block_size, "queries": self.queries, "hits": self.hits,
                "evictions": self.evictions}
