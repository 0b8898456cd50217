"""Next-token cross-entropy with document-aware label shifting."""

from typing import Optional

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


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
