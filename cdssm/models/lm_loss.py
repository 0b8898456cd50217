"""Next-token cross-entropy with document-aware label shifting, from logits or, chunk by chunk,
from the final hidden states and the (tied) output embedding."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100

# Tokens per cross-entropy chunk: at V = 50257 one chunk's fp32 logits take 412 MB.
LOSS_CHUNK_TOKENS = 2048
# The output embedding is zero-padded to a multiple of this many rows for the logits matmul:
# an odd V (50257) gives the logits an odd row stride, which sends cuBLAS to a slow unaligned
# kernel (the LM head was half of an uncompiled gpt2-small step on an H100).
VOCAB_ALIGN = 64


def shift_labels(labels: torch.Tensor, cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Targets for every position: target[t] = labels[t + 1], IGNORE_INDEX at the end.

    labels: (B, T) int64, IGNORE_INDEX where no loss is wanted. With ``cu_seqlens`` (packed
    documents, B == 1) the last token of a document never predicts the next document's first
    token: target[s − 1] = IGNORE_INDEX for every document start s > 0. No host sync.
    """
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    if cu_seqlens is not None:
        starts = cu_seqlens[1:-1].long()
        # A start at 0 or at T (empty documents) maps outside the sequence: send it to the
        # last position, which is IGNORE_INDEX already.
        T = labels.shape[1]
        last_of_previous = torch.where((starts > 0) & (starts < T), starts - 1, T - 1)
        target = target.index_fill(1, last_of_previous, IGNORE_INDEX)
    return target


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                   cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cross-entropy (fp32) over positions with a target. logits (B, T, V), labels (B, T)."""
    target = shift_labels(labels, cu_seqlens)
    return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE_INDEX)


def _chunk_ce_sum(hidden: torch.Tensor, padded_weight: torch.Tensor, target: torch.Tensor,
                  V: int) -> torch.Tensor:
    """Σ CE over one chunk: hidden (n, d), padded_weight (V', d) with V' ≥ V rows (rows ≥ V are
    padding, left out of the softmax), target (n,); logits in fp32."""
    logits = F.linear(hidden, padded_weight)[:, :V].float()
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_causal_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                           cu_seqlens: Optional[torch.Tensor] = None,
                           chunk_tokens: int = LOSS_CHUNK_TOKENS,
                           vocab_align: int = VOCAB_ALIGN) -> torch.Tensor:
    """``causal_lm_loss(hidden @ weightᵀ, labels, cu_seqlens)`` without the (B·T, V) logits.

    hidden (B, T, d) (the final-norm output), weight (V, d) (the tied embedding), labels (B, T).
    The B·T positions are cut into chunks of ``chunk_tokens``; chunk c contributes
    Σ_{t ∈ c} CE(h_t Wᵀ, target_t), recomputed in the backward (activation checkpointing), so at
    most one chunk's logits live at a time. Loss = Σ_c (chunk sum) / #targets (fp32; 0 when no
    position has a target). The logits matmul runs on ``weight`` zero-padded to a multiple of
    ``vocab_align`` rows (aligned rows for cuBLAS; 1: no padding); the padding columns are
    sliced off before the softmax, so the loss and gradients are those of the unpadded weight.
    """
    if not isinstance(vocab_align, int) or vocab_align < 1:
        raise ValueError(f"vocab_align: expected an int ≥ 1, got {vocab_align!r}")
    V = weight.shape[0]
    padded_weight = F.pad(weight, (0, 0, 0, -V % vocab_align))
    target = shift_labels(labels, cu_seqlens).flatten()
    flat = hidden.flatten(0, 1)
    total = flat.new_zeros((), dtype=torch.float32)
    # range() over a symbolic length would specialise compiled graphs on it: a batch of at most
    # one chunk takes no loop, so a dynamic sequence length compiles once.
    starts = range(0, flat.shape[0], chunk_tokens) if flat.shape[0] > chunk_tokens else (0,)
    for start in starts:
        rows = slice(start, start + chunk_tokens)
        total = total + checkpoint(_chunk_ce_sum, flat[rows], padded_weight, target[rows],
                                   V, use_reentrant=False)
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)
