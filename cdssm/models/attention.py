"""Causal multi-head self-attention with rotary positions, packed documents and a KV cache.

Every forward builds one ``AttentionPlan`` (rotary tables and mask, shared by all layers) and
each layer attends in one of four ways:

- (B, T), no cache: SDPA with ``is_causal=True``.
- packed (1, T) + cu_seqlens, no cache: on CUDA, FlexAttention with a document-causal
  ``BlockMask``; on other devices, SDPA with the dense boolean document-causal mask (T, T).
- (B, T) + a cache of B sequences (S slots): SDPA over [cache ++ new], mask (B, 1, T, S + T).
- packed (1, T) + cu_seqlens + a cache of N sequences: SDPA over [all N caches ++ new],
  mask (1, 1, T, N·S + T): a token sees its own sequence's valid slots and its document's
  earlier tokens.

FlexAttention has no backward on CPU in this torch (it raises NotImplementedError, eager and
compiled), hence the dense-mask SDPA there: O(T²) memory, fine for CPU-sized batches. On CUDA,
eager FlexAttention materialises the scores too; under ``torch.compile`` it becomes a fused
kernel that skips the blocks the mask removes.

The KV cache is functional: a layer returns the extended cache, nothing is mutated.
"""

from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from .documents import document_ids, document_positions
from .rotary import apply_rotary, rotary_tables


class KVCache(NamedTuple):
    """Keys and values of every layer for N sequences (the Transformer's decode state).

    k, v: (n_layers, N, H, S, D), keys after rotary; valid: (N, S) bool, which slots hold a token
    of that sequence. A packed prefill of N documents of T tokens in all appends T slots to every
    sequence, of which only its own document's are valid (no host sync to learn the longest
    one). A sequence's next position is its number of valid slots.
    """

    k: torch.Tensor
    v: torch.Tensor
    valid: torch.Tensor

    def lengths(self) -> torch.Tensor:
        """Tokens seen by each sequence: (N,) int64."""
        return self.valid.sum(-1)


class AttentionPlan(NamedTuple):
    """How every layer attends in one forward (see the module docstring).

    cos, sin: rotary tables (R, 1, T, D/2), R = B or 1. mask: None (plain causal), a
    ``BlockMask`` (FlexAttention), or a bool tensor broadcastable to (B, H, T, keys), True where
    a query may attend. slots: (N, T) bool with a cache over packed documents: token t belongs
    to sequence n; else None. valid: the extended cache's ``valid`` (N, S + T), or None
    without a cache.
    """

    cos: torch.Tensor
    sin: torch.Tensor
    mask: Optional[Union[torch.Tensor, BlockMask]]
    slots: Optional[torch.Tensor]
    valid: Optional[torch.Tensor]


def document_block_mask(doc: torch.Tensor) -> BlockMask:
    """FlexAttention mask for doc (T,): query i sees key j iff doc[i] == doc[j] and j ≤ i."""
    def mask_mod(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (kv_idx <= q_idx)

    T = doc.shape[0]
    return create_block_mask(mask_mod, None, None, T, T, device=doc.device)


def _causal(T: int, device: torch.device, doc: Optional[torch.Tensor]) -> torch.Tensor:
    """(T, T) bool: key j ≤ query i, and in the same document when ``doc`` is given."""
    mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    return mask if doc is None else mask & (doc[:, None] == doc[None, :])


def plan_attention(T: int, device: torch.device, head_dim: int, rope_base: float,
                   rope_dtype: torch.dtype, cu_seqlens: Optional[torch.Tensor] = None,
                   state: Optional[KVCache] = None) -> AttentionPlan:
    """Rotary positions and masks for T new tokens (per batch row, or packed by ``cu_seqlens``).

    Positions restart at 0 in every document and continue from the cache: p = (tokens already
    in the sequence's cache) + (position inside the document). Inputs are already validated.
    """
    doc = None if cu_seqlens is None else document_ids(cu_seqlens, T)
    pos = torch.arange(T, device=device) if doc is None else document_positions(cu_seqlens, doc)

    if state is None:
        if doc is None:
            mask = None
        elif device.type == "cuda":
            mask = document_block_mask(doc)
        else:
            mask = _causal(T, device, doc)
        cos, sin = rotary_tables(pos[None], head_dim, rope_base, rope_dtype)
        return AttentionPlan(cos, sin, mask, None, None)

    N, S = state.valid.shape
    lengths = state.lengths()
    causal = _causal(T, device, doc)
    if doc is None:
        positions = lengths[:, None] + pos
        slots = None
        past = state.valid[:, None, :].expand(N, T, S)
        mask = torch.cat([past, causal.expand(N, T, T)], dim=-1)[:, None]
        new_valid = torch.ones(N, T, dtype=torch.bool, device=device)
    else:
        positions = (lengths[doc] + pos)[None]
        slots = doc[None, :] == torch.arange(N, device=device)[:, None]
        past = slots.T[:, :, None] & state.valid[None]
        mask = torch.cat([past.reshape(T, N * S), causal], dim=-1)[None, None]
        new_valid = slots
    cos, sin = rotary_tables(positions, head_dim, rope_base, rope_dtype)
    return AttentionPlan(cos, sin, mask, slots, torch.cat([state.valid, new_valid], dim=-1))


def _attend(q, k, v, mask) -> torch.Tensor:
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if isinstance(mask, BlockMask):
        return flex_attention(q, k, v, block_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class CausalSelfAttention(nn.Module):
    """y = W_o · softmax(q kᵀ/√D + mask) v, with rotary q, k; H heads of D = head_dim.

    qkv: Linear(d, 3d), out: Linear(d, d), no biases.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim, bias=False)
        self.out = nn.Linear(n_heads * head_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor, plan: AttentionPlan, past_k: Optional[torch.Tensor] = None,
                past_v: Optional[torch.Tensor] = None):
        """x (B, T, d); past_k, past_v: this layer's cache (N, H, S, D) or None.

        Returns (y (B, T, d), k_cache, v_cache): the extended cache (N, H, S + T, D) in the
        cache's dtype, or None, None without a cache.
        """
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, plan.cos, plan.sin), apply_rotary(k, plan.cos, plan.sin)
        k_cache = v_cache = None
        if past_k is None:
            y = _attend(q, k, v, plan.mask)
        else:
            k, v = k.to(past_k.dtype), v.to(past_v.dtype)
            if plan.slots is None:
                k_cache, v_cache = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
                keys, values = k_cache, v_cache
            else:
                keys, values = _flatten_sequences(past_k, k), _flatten_sequences(past_v, v)
                k_cache = torch.cat([past_k, _scatter_documents(k, plan.slots)], dim=2)
                v_cache = torch.cat([past_v, _scatter_documents(v, plan.slots)], dim=2)
            y = _attend(q, keys.to(q.dtype), values.to(q.dtype), plan.mask)
        return self.out(y.transpose(1, 2).reshape(B, T, -1)), k_cache, v_cache


def _flatten_sequences(past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """All N caches (N, H, S, D) as one key row, then the packed new keys (1, H, T, D):
    (1, H, N·S + T, D) — the key order of the packed-with-cache mask."""
    N, H, S, D = past.shape
    return torch.cat([past.transpose(0, 1).reshape(1, H, N * S, D), new], dim=2)


def _scatter_documents(new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Packed (1, H, T, D) -> (N, H, T, D): row n keeps its document's tokens, zeros elsewhere."""
    return torch.where(slots[:, None, :, None], new, 0.0)
