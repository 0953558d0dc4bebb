"""A decoder-only transformer written out in plain PyTorch, with a static KV cache.

This is the network behind both of the course's language models (see :mod:`labkit.inference.language_model`):

- SmolLM2-135M-Instruct, whose Hugging Face (Llama) weights are loaded into it, and
- the course's own tiny model, the same architecture at about 1/100 of the size.

The architecture is Llama's: token embedding, ``n_layers`` blocks of
RMSNorm -> grouped-query attention with rotary position embeddings (RoPE) -> residual,
RMSNorm -> SwiGLU MLP -> residual, a final RMSNorm and a language-model head (tied to the
embedding when ``tie_embeddings``).

Two details exist only to make CPU decoding fast, and do not change the maths:

- **Fused projections.** Q, K and V are one matrix (``wqkv``) and the MLP's gate and up
  projections are one matrix (``w_gate_up``). At batch size 1 every projection is a
  matrix-vector product that streams its weights from memory once; four bigger products per
  layer stream faster than seven small ones and cost fewer Python calls.
- **A static KV cache.** :class:`~labkit.inference.kv_cache.KVCache` preallocates the keys and values of every layer
  for the whole generation. Each decode step writes one slot in place and attends over the
  filled prefix, so the step allocates no cache memory and its tensor shapes are predictable.

The forward pass of one decode step is :meth:`Decoder.forward` with ``T == 1`` and a cache;
a prompt (prefill) is the same call with ``T`` tokens. Without a cache the whole sequence is
recomputed, which is what "KV cache off" means in the course's measurements.

For **continuous batching** (a server that lets requests join and leave the running batch at
every step, see ``labkit.serving.batching``) the batch is a set of *slots*, each holding one sequence
at its own position: :class:`~labkit.inference.kv_cache.SlotCache` holds their keys and values,
:meth:`Decoder.prefill_slot` puts a new prompt into a free slot, and
:meth:`Decoder.decode_slots` runs one decode step for any set of slots at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit.inference.config import DecoderConfig
from labkit.inference.kv_cache import KVCache, SlotCache


class Block(nn.Module):
    """One transformer block: RMSNorm, attention with RoPE and GQA, RMSNorm, SwiGLU MLP."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        c = config
        self.n_heads, self.n_kv, self.hd = c.n_heads, c.n_kv_heads, c.head_dim
        self.d_ff, self.eps = c.d_ff, c.norm_eps
        self.attn_norm = nn.Parameter(torch.ones(c.d_model))
        self.wqkv = nn.Linear(c.d_model, (c.n_heads + 2 * c.n_kv_heads) * c.head_dim, bias=False)
        self.wo = nn.Linear(c.d_model, c.d_model, bias=False)
        self.mlp_norm = nn.Parameter(torch.ones(c.d_model))
        self.w_gate_up = nn.Linear(c.d_model, 2 * c.d_ff, bias=False)
        self.w_down = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int,
                cache: KVCache | None, pos: int, attn_mask: torch.Tensor | None,
                is_causal: bool) -> torch.Tensor:
        B, T, D = x.shape
        nh, nkv, hd = self.n_heads, self.n_kv, self.hd
        h = rms_norm(x, self.attn_norm, self.eps)
        qkv = _linear(h, self.wqkv).view(B, T, nh + 2 * nkv, hd).transpose(1, 2)
        qk = apply_rope(qkv[:, : nh + nkv], cos, sin)                  # [B, nh+nkv, T, hd]
        q, k, v = qk[:, :nh], qk[:, nh:], qkv[:, nh + nkv:]
        if cache is not None:
            end = pos + T
            kc, vc = cache.keys[layer], cache.values[layer]
            kc[:, :, pos:end].copy_(k)
            vc[:, :, pos:end].copy_(v)
            k, v = kc[:, :, :end], vc[:, :, :end]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           enable_gqa=nkv != nh)
        a = a.transpose(1, 2).reshape(B, T, D)
        x = x + _linear(a, self.wo)
        h = rms_norm(x, self.mlp_norm, self.eps)
        gu = _linear(h, self.w_gate_up)
        g = F.silu(gu[..., : self.d_ff])
        g = g.mul_(gu[..., self.d_ff:])
        return x + _linear(g, self.w_down)


class Decoder(nn.Module):
    """The decoder-only transformer; see the module docstring.

    ``forward(tokens, cache=None)`` returns logits ``[B, T, vocab]`` (or ``[B, 1, vocab]`` for
    the last position only with ``last_only=True``). With a :class:`~labkit.inference.kv_cache.KVCache` it appends the
    ``T`` new positions to the cache and attends over everything cached so far.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.Parameter(torch.ones(config.d_model))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # Explicit device: the tables stay real even when the model is built on "meta" to be
        # filled by load_state_dict(assign=True).
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta,
                               device="cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    # -- sizes -------------------------------------------------------------------------------
    def num_params(self) -> int:
        """Parameters, counting a tied embedding/head matrix once."""
        return sum(p.numel() for p in self.parameters())

    def streamed_params_per_token(self) -> int:
        """Parameters read from memory for each decoded token: every matrix multiplied by the
        token's vector (all projections and the language-model head). The embedding only
        contributes one row per token and the norms are tiny, so neither is counted."""
        per_layer = sum(m.in_features * m.out_features
                        for m in (self.layers[0].wqkv, self.layers[0].wo,
                                  self.layers[0].w_gate_up, self.layers[0].w_down))
        return per_layer * len(self.layers) + self.lm_head.in_features * self.lm_head.out_features

    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        """A zeroed :class:`~labkit.inference.kv_cache.KVCache` for ``batch_size`` sequences of up to ``capacity`` tokens,
        in this model's dtype and device."""
        p = self.embed.weight
        cache = KVCache(self.config, batch_size, capacity, p.dtype, p.device)
        cache.plan = self.decode_plan()
        return cache

    def new_slot_cache(self, max_slots: int, capacity: int) -> SlotCache:
        """An empty :class:`~labkit.inference.kv_cache.SlotCache` of ``max_slots`` sequences of up to ``capacity`` tokens
        each (it can :meth:`~labkit.inference.kv_cache.SlotCache.grow`), in this model's dtype and device."""
        p = self.embed.weight
        cache = SlotCache(self.config, max_slots, capacity, p.dtype, p.device)
        cache.plan = self.decode_plan()
        return cache

    # -- forward -----------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None, *,
                valid: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits for ``tokens`` (``[B, T]`` int64).

        Args:
            tokens: token ids, ``[B, T]``.
            cache: a :class:`~labkit.inference.kv_cache.KVCache` to append to (decode), or None to process ``tokens`` as a
                whole sequence from position 0 (training, or decoding without a cache).
            valid: without a cache, ``[B, T]`` bool marking real (not padding) tokens; with a
                cache, padding is taken from ``cache.valid``.
            last_only: return the logits of the last position only (what generation needs;
                saves the big ``lm_head`` product on every prompt token).
        """
        if tokens.dim() != 2:
            raise ValueError(f"Decoder.forward: tokens must be [batch, time], got shape "
                             f"{tuple(tokens.shape)}")
        B, T = tokens.shape
        pos = cache.length if cache is not None else 0
        end = pos + T
        limit = cache.capacity if cache is not None else self.config.max_seq_len
        if end > limit:
            raise ValueError(f"Decoder.forward: {end} positions exceed the "
                             f"{'cache capacity' if cache is not None else 'context'} of "
                             f"{limit} tokens")
        cos, sin = self.rope_cos[pos:end], self.rope_sin[pos:end]
        attn_mask, is_causal = self._attention_mask(B, T, pos, cache, valid)
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, i, cache, pos, attn_mask, is_causal)
        if last_only:
            x = x[:, -1:]
        x = rms_norm(x, self.norm, self.config.norm_eps)
        if cache is not None:
            cache.length = end
        return _linear(x, self.lm_head)

    @torch.inference_mode()
    def decode_step(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decode step: logits ``[B, vocab]`` of the next token after ``tokens`` (``[B, 1]``).

        The same maths as ``forward(tokens, cache)`` for ``T == 1``, written for speed: every
        weight is used through a plain matrix product on a 2-D ``[B, d]`` activation, the
        residual additions are fused into those products (``addmm``), K and V are written into
        their preallocated cache slot in place, and no nn.Module call overhead is paid. At
        batch size 1 nearly all of the time is the products streaming the weights from memory.
        """
        B = tokens.shape[0]
        pos = cache.length
        if pos + 1 > cache.capacity:
            raise ValueError(f"Decoder.decode_step: the cache holds {cache.capacity} tokens and "
                             "is full; allocate a bigger cache with new_cache()")
        end = pos + 1
        plan = cache.plan if cache.plan is not None else self.decode_plan()
        cos, sin = self.rope_cos[pos], self.rope_sin[pos]
        mask = cache.mask[..., :end] if cache.mask is not None else None

        def write(kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
            kc[:, :, pos:end].copy_(k)                                 # in place, slot `pos`
            vc[:, :, pos:end].copy_(v)

        def read(kc: torch.Tensor, vc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return kc[:, :, :end], vc[:, :, :end]

        x = F.embedding(tokens.view(B), self.embed.weight)            # [B, d]
        logits = self._decode_layers(x, plan, cache.keys, cache.values, write, read, mask, cos, sin)
        cache.length = end
        return logits

    # -- continuous batching: sequences at their own positions ---------------------------------
    @torch.inference_mode()
    def prefill_slot(self, tokens: Sequence[int] | torch.Tensor, cache: SlotCache,
                     slot: int) -> torch.Tensor:
        """Put a new sequence (a prompt's ids) into the free ``slot`` of ``cache``: logits
        ``[vocab]`` of its next token.

        This is the ordinary prefill, ``forward(prompt, cache, last_only=True)`` at batch size
        1, on a cache whose tensors are views of the slot, so the other slots are untouched
        and may be in the middle of their own generations.
        """
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.embed.weight.device)
        ids = ids.view(1, -1)
        if ids.shape[1] < 1:
            raise ValueError("Decoder.prefill_slot: the prompt is empty; give at least one token")
        if cache.lengths[slot] != 0:
            raise ValueError(f"Decoder.prefill_slot: slot {slot} holds a sequence; release() it "
                             f"first or use a free slot")
        if ids.shape[1] > cache.capacity:
            raise ValueError(f"Decoder.prefill_slot: {ids.shape[1]} prompt tokens exceed the "
                             f"cache capacity of {cache.capacity}; grow() the cache first")
        view = cache.view(slot)
        logits = self.forward(ids, view, last_only=True)
        cache.lengths[slot] = view.length
        return logits[0, -1]

    @torch.inference_mode()
    def decode_slots(self, tokens: torch.Tensor, cache: SlotCache,
                     slots: Sequence[int]) -> torch.Tensor:
        """One decode step for the sequences in ``slots``, each at its own position: logits
        ``[len(slots), vocab]`` of the token after ``tokens`` (``[B]`` or ``[B, 1]``, the last
        token of each sequence, in the order of ``slots``).

        The maths of :meth:`decode_step`, with a per-row position ``p = cache.lengths[slot]``
        instead of one position for the whole batch: each row's query and key are rotated
        by the RoPE angles of its own position (``rope_cos[p]`` gathered per row), its key and
        value are written at ``[slot, :, p]`` (advanced indexing, one write for all rows),
        and it attends to the keys ``0..p`` of its own slot (a mask ``key_pos <= p`` per row;
        no mask when all rows are at the same position). Only the given slots are computed;
        the others are not read. When ``slots`` is ``0..B-1`` (the usual case when a
        scheduler fills the lowest free slot first) the keys and values are read in place,
        otherwise they are gathered. Advances the lengths of ``slots`` by one.

        A row's logits equal those of the same sequence decoded alone up to float rounding:
        a matrix product of ``B`` rows sums in another order than one of a single row, so the
        last bit or two can differ (about 1e-7 relative in fp32; the same holds for any
        batched decoding, :meth:`decode_step` included). Greedy tokens are therefore the same
        except where two candidates are tied to within that rounding.
        """
        B = len(slots)
        if B < 1 or tokens.numel() != B:
            raise ValueError(f"Decoder.decode_slots: give one token per slot, got "
                             f"{tokens.numel()} tokens for {B} slots")
        if len(set(slots)) != B:
            raise ValueError(f"Decoder.decode_slots: slots must be distinct, got {list(slots)}")
        hd = self.config.head_dim
        positions = [cache.lengths[s] for s in slots]
        if min(positions) < 1:
            raise ValueError("Decoder.decode_slots: a slot is empty; prefill_slot() it first")
        end = max(positions) + 1
        if end > cache.capacity:
            raise ValueError(f"Decoder.decode_slots: the cache holds {cache.capacity} tokens "
                             f"per slot and a slot is full; grow() the cache")
        device = cache.keys[0].device
        plan = cache.plan if cache.plan is not None else self.decode_plan()
        pos = torch.tensor(positions, device=device)
        slot_idx = torch.tensor(list(slots), device=device)
        rows = slice(0, B) if list(slots) == list(range(B)) else slot_idx
        cos = self.rope_cos[pos].view(B, 1, 1, hd)                    # each row's own angles
        sin = self.rope_sin[pos].view(B, 1, 1, hd)
        mask = None
        if min(positions) != end - 1:                                  # rows at different places
            mask = (torch.arange(end, device=device).view(1, end) <= pos.view(B, 1))
            mask = mask.view(B, 1, 1, end)

        def write(kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
            kc[slot_idx, :, pos] = k[:, :, 0]                          # [B, nkv, hd] at (slot, p)
            vc[slot_idx, :, pos] = v[:, :, 0]

        def read(kc: torch.Tensor, vc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return kc[rows, :, :end], vc[rows, :, :end]

        x = F.embedding(tokens.reshape(B), self.embed.weight)          # [B, d]
        logits = self._decode_layers(x, plan, cache.keys, cache.values, write, read, mask, cos, sin)
        for s in slots:
            cache.lengths[s] += 1
        return logits

    def _decode_layers(self, x: torch.Tensor, plan, keys, values, write, read,
                       mask: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor
                       ) -> torch.Tensor:
        """The layers of one decode step on ``x`` (``[B, d]``), then the head: logits
        ``[B, vocab]``. ``write(kc, vc, k, v)`` stores the new keys and values of a layer and
        ``read(kc, vc)`` returns the ones to attend over: the only part in which
        :meth:`decode_step` and :meth:`decode_slots` differ."""
        c = self.config
        heads = (c.n_heads, c.n_kv_heads, c.head_dim)
        for (attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down), kc, vc in zip(
                plan, keys, values, strict=True):
            x = attention_residual(x, attn_norm, wqkv, wo, kc, vc, write, read, mask, cos, sin,
                                    heads, c.norm_eps)
            x = mlp_residual(x, mlp_norm, w_gate_up, w_down, c.d_ff, c.norm_eps)
        x = rms_norm(x, self.norm, c.norm_eps)
        return _linear(x, self.lm_head)

    def decode_plan(self) -> list[tuple[torch.Tensor, ...]]:
        """Per layer, the tensors :meth:`decode_step` multiplies by, as plain tensors:
        ``(attn_norm, wqkv^T, wo^T, mlp_norm, w_gate_up^T, w_down^T)`` (the ``^T`` are views,
        no copies). Looking them up once per generation instead of through ``nn.Module``
        attributes at every step saves about 1 ms per SmolLM2 token (4 %)."""
        return [(layer.attn_norm, _plan_weight(layer.wqkv), _plan_weight(layer.wo),
                 layer.mlp_norm, _plan_weight(layer.w_gate_up), _plan_weight(layer.w_down))
                for layer in self.layers]

    @torch.no_grad()
    def to_decode_layout(self) -> Decoder:
        """Store each wide weight matrix column-major, which makes batch-1 decoding faster.

        A decode step multiplies a single vector by every weight matrix ``W`` (``[out, in]``).
        The BLAS kernel streams ``W`` fastest when its contiguous rows are long: for ``out >=
        in`` that means storing ``W`` transposed (``W.t().contiguous().t()``: same values,
        same shape, other memory order). Measured on the course machine (1 thread, weights in
        DRAM): SmolLM2's MLP gate/up matrix ``[3072, 576]`` streams at about 22 GB/s this way
        against 11 GB/s row-major, and the ``[49152, 576]`` head at 24 against 11. Matrices with
        ``out < in`` (the MLP's down projection) are faster row-major and stay as they are.
        Returns the model itself. Training is unaffected, but do it after training.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                out_features, in_features = w.shape
                if out_features >= in_features and w.stride() != (1, out_features):
                    w.data = w.data.t().contiguous().t()
        return self

    @staticmethod
    def _attention_mask(B: int, T: int, pos: int, cache: KVCache | None,
                        valid: torch.Tensor | None) -> tuple[torch.Tensor | None, bool]:
        """The attention mask for ``T`` new queries at positions ``pos..pos+T-1``.

        Returns ``(mask, is_causal)``. The fast paths need no mask tensor at all: one decode
        step without padding (a query sees every cached key), or a whole unpadded sequence
        from position 0 (``is_causal``). Otherwise a bool mask ``[B, 1, T, pos+T]`` lets each
        query see earlier real tokens, and itself (so padding queries never see nothing).
        """
        end = pos + T
        if cache is not None:
            valid = cache.valid[:, :end] if cache.valid is not None else None
        if valid is None:
            if T == 1:
                return None, False
            if pos == 0:
                return None, True
        device = cache.keys[0].device if cache is not None else None
        q_pos = torch.arange(pos, end, device=device).view(T, 1)
        k_pos = torch.arange(end, device=device).view(1, end)
        mask = (k_pos <= q_pos).view(1, 1, T, end)
        if valid is not None:
            mask = mask & (valid.view(B, 1, 1, end) | (k_pos == q_pos).view(1, 1, T, end))
        return mask, False



# --------------------------------------------------------------------------------------------
# The hook for other weight formats (used by labkit.inference.quant)
# --------------------------------------------------------------------------------------------
# Every product of an activation with a weight matrix goes through the three helpers below.
# A projection (``wqkv``, ``wo``, ``w_gate_up``, ``w_down``, ``lm_head``) is normally an
# ``nn.Linear`` and the maths is exactly ``F.linear`` / ``torch.mm`` / ``torch.addmm`` as
# before. Any other module put in its place (for example ``labkit.inference.quant``'s int8 and int4
# layers) is *called* instead: it must map ``[..., in_features]`` to ``[..., out_features]``
# and have ``in_features`` and ``out_features`` attributes. Swap modules with
# ``setattr(block, "w_down", layer)``; ``Decoder.decode_plan`` then hands the module itself to
# ``decode_step``, so the fast decode loop uses it too.

def _plan_weight(module: nn.Module):
    """What :meth:`Decoder.decode_plan` stores for a projection: ``W^T`` (a view) for an
    ``nn.Linear``, the module itself for any other layer."""
    return module.weight.t() if type(module) is nn.Linear else module


def _linear(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``x @ W^T`` for an ``nn.Linear`` (no bias, as in this model), else ``module(x)``."""
    if type(module) is nn.Linear:
        return F.linear(x, module.weight)
    return module(x)


def _mm(x: torch.Tensor, w) -> torch.Tensor:
    """``x @ w`` for a plan entry: a ``W^T`` tensor, or a module (called)."""
    return torch.mm(x, w) if isinstance(w, torch.Tensor) else w(x)


def _addmm(residual: torch.Tensor, x: torch.Tensor, w) -> torch.Tensor:
    """``residual + x @ w`` for a plan entry (fused into ``addmm`` for a tensor)."""
    return torch.addmm(residual, x, w) if isinstance(w, torch.Tensor) else residual + w(x)


def attention_residual(x: torch.Tensor, attn_norm: torch.Tensor, wqkv, wo, kc: torch.Tensor,
                        vc: torch.Tensor, write, read, mask: torch.Tensor | None,
                        cos: torch.Tensor, sin: torch.Tensor, heads: tuple[int, int, int],
                        eps: float) -> torch.Tensor:
    """``x + attention(rms_norm(x))`` for one decode step of one layer (``x`` is ``[B, d]``):
    project to Q, K, V, rotate Q and K, ``write`` K and V into the cache, attend over what
    ``read`` returns, project back and add the residual.

    Args:
        x: the residual stream of the new token of each row, ``[B, d]``.
        attn_norm: the layer's RMSNorm weight; ``wqkv``, ``wo``: its projections as
            :meth:`Decoder.decode_plan` gives them.
        kc: the layer's key cache; ``vc`` its value cache.
        write: ``write(kc, vc, k, v)`` stores the new keys and values (in place).
        read: ``read(kc, vc)`` returns the keys and values to attend over.
        mask: boolean attention mask (True = attend), or None.
        cos: the RoPE cosines of the new positions; ``sin`` the sines.
        heads: ``(n_heads, n_kv_heads, head_dim)``.
        eps: the RMSNorm epsilon.

    :meth:`Decoder.decode_step` and :meth:`Decoder.decode_slots` both call it; they differ only
    in ``write`` and ``read``.
    """
    B = x.shape[0]
    nh, nkv, hd = heads
    h = rms_norm(x, attn_norm, eps)
    qkv = _mm(h, wqkv).view(B, nh + 2 * nkv, 1, hd)
    qk = apply_rope(qkv[:, : nh + nkv], cos, sin)
    write(kc, vc, qk[:, nh:], qkv[:, nh + nkv:])
    k, v = read(kc, vc)
    a = F.scaled_dot_product_attention(qk[:, :nh], k, v, attn_mask=mask, enable_gqa=nkv != nh)
    return _addmm(x, a.view(B, nh * hd), wo)


def mlp_residual(x: torch.Tensor, mlp_norm: torch.Tensor, w_gate_up, w_down, ff: int,
                  eps: float) -> torch.Tensor:
    """The second half of a block in the decode paths: ``x + W_down(silu(gate) * up)`` of the
    RMSNorm of ``x`` (``[B, d]``), with the plan entries of the two MLP projections."""
    h = rms_norm(x, mlp_norm, eps)
    gu = _mm(h, w_gate_up)
    return _addmm(x, F.silu(gu[:, :ff]).mul_(gu[:, ff:]), w_down)


def rope_tables(head_dim: int, max_seq_len: int, theta: float,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables ``[max_seq_len, head_dim]`` of RoPE, in Llama's "halves" layout
    (dimension ``i`` and ``i + head_dim/2`` rotate together), computed in float64."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim
    inv_freq = 1.0 / (theta ** exponents)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (``[B, H, T, hd]``) by position: ``x*cos + rotate_half(x)*sin``."""
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1.0)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as Llama computes it: in float32, then back to the input's dtype, then scaled."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    h = F.rms_norm(x.float(), (x.shape[-1],), None, eps)
    return weight * h.to(x.dtype)


def init_weights(model: Decoder, seed: int = 0) -> Decoder:
    """Initialise ``model`` for training from scratch: normal(0, 0.02) matrices, the output
    projections of each block scaled by ``1/sqrt(2 * n_layers)`` (GPT-2's rule), norms at 1."""
    gen = torch.Generator().manual_seed(seed)
    scale = 1.0 / math.sqrt(2 * model.config.n_layers)
    with torch.no_grad():
        model.embed.weight.normal_(0.0, 0.02, generator=gen)
        if not model.config.tie_embeddings:
            model.lm_head.weight.normal_(0.0, 0.02, generator=gen)
        for layer in model.layers:
            for lin in (layer.wqkv, layer.w_gate_up):
                lin.weight.normal_(0.0, 0.02, generator=gen)
            for lin in (layer.wo, layer.w_down):
                lin.weight.normal_(0.0, 0.02 * scale, generator=gen)
            layer.attn_norm.fill_(1.0)
            layer.mlp_norm.fill_(1.0)
        model.norm.fill_(1.0)
    return model


def hf_llama_to_decoder_state(hf_state: dict[str, torch.Tensor], config: DecoderConfig
                              ) -> dict[str, torch.Tensor]:
    """Rename and fuse a Hugging Face Llama state dict into :class:`Decoder`'s layout.

    Q, K and V are concatenated into ``wqkv`` and gate/up into ``w_gate_up`` (row-wise, so
    the product of the fused matrix is the products of the parts, one after the other).
    Every returned tensor owns its memory (copies, never views of ``hf_state``), so a state
    read from a memory-mapped file does not keep reading from that file.
    """
    def get(name: str) -> torch.Tensor:
        for key in (name, "model." + name):
            if key in hf_state:
                return hf_state[key].clone()
        raise ValueError(f"hf_llama_to_decoder_state: weight {name!r} missing from the "
                         f"Hugging Face state dict")

    out = {"embed.weight": get("embed_tokens.weight"), "norm": get("norm.weight")}
    for i in range(config.n_layers):
        p = f"layers.{i}."
        out[p + "attn_norm"] = get(p + "input_layernorm.weight")
        out[p + "mlp_norm"] = get(p + "post_attention_layernorm.weight")
        out[p + "wqkv.weight"] = torch.cat([get(p + f"self_attn.{n}_proj.weight")
                                            for n in ("q", "k", "v")], dim=0)
        out[p + "wo.weight"] = get(p + "self_attn.o_proj.weight")
        out[p + "w_gate_up.weight"] = torch.cat([get(p + "mlp.gate_proj.weight"),
                                                 get(p + "mlp.up_proj.weight")], dim=0)
        out[p + "w_down.weight"] = get(p + "mlp.down_proj.weight")
    if config.tie_embeddings:
        out["lm_head.weight"] = out["embed.weight"]
    elif "lm_head.weight" in hf_state:
        out["lm_head.weight"] = hf_state["lm_head.weight"]
    else:
        raise ValueError("hf_llama_to_decoder_state: untied model without lm_head.weight")
    return out
