"""Packed documents: ``cu_seqlens`` checks, document ids and in-document positions.

A packed batch is ``input_ids`` (1, T) holding N documents back to back; ``cu_seqlens`` (N + 1,)
int32 (or int64) gives their offsets: 0 = cu[0] ≤ cu[1] ≤ … ≤ cu[N] = T, document n spanning
tokens [cu[n], cu[n+1]). Everything here runs on the device without a host sync, so it traces
under ``torch.compile(fullgraph=True)``.
"""

import torch


def check_cu_seqlens(cu_seqlens: torch.Tensor, input_ids: torch.Tensor) -> None:
    """Validates ``cu_seqlens`` for ``input_ids`` (1, T).

    Type, shape, dtype, device and batch size raise ValueError here. The contents (0 first,
    non-decreasing, T last) are checked with ``torch._assert_async``: a RuntimeError raised by
    the device (at once on CPU, at the next sync on CUDA), never a host sync.
    """
    if not isinstance(cu_seqlens, torch.Tensor):
        raise ValueError(f"cu_seqlens: expected a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"cu_seqlens: expected a 1-D tensor of N + 1 >= 2 offsets, "
                         f"got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens: expected dtype int32 (or int64), got {cu_seqlens.dtype}")
    if cu_seqlens.device != input_ids.device:
        raise ValueError(f"cu_seqlens: expected a tensor on {input_ids.device} (input_ids' "
                         f"device), got {cu_seqlens.device}")
    if input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: expected batch size 1 when cu_seqlens packs the documents, "
                         f"got {input_ids.shape[0]}")
    T = input_ids.shape[1]
    torch._assert_async((cu_seqlens[0] == 0) & (cu_seqlens[-1] == T)
                        & (cu_seqlens[1:] >= cu_seqlens[:-1]).all(),
                        "cu_seqlens: expected 0 first, non-decreasing offsets, T last")


def document_ids(cu_seqlens: torch.Tensor, T: int) -> torch.Tensor:
    """doc[t] = n for cu[n] ≤ t < cu[n+1]: (T,) int64 (empty documents own no token)."""
    positions = torch.arange(T, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].long(), positions, right=True)


def document_positions(cu_seqlens: torch.Tensor, doc: torch.Tensor) -> torch.Tensor:
    """pos[t] = t − cu[doc[t]], the position of token t inside its document: (T,) int64."""
    positions = torch.arange(doc.shape[0], device=doc.device)
    return positions - cu_seqlens.long()[doc]
