"""Validation and canonical shapes for the delta scans (shared by the chunk and recurrent ops).

Canonical shapes (see csrc/ops.cpp): q, k (B, T, H, D); v (B, T, H, P, 2); beta (B, T, H);
log_decay, phase (B, T, H, P); state (N, H, 2P, D). The one-pair layout of the foundation
(v (B, T, H, 2), log_decay/phase (B, T, H)) and the flattened pair layout v (B, T, H, 2P) are
accepted too, and the output then comes back flattened: (B, T, H, 2P).
"""

from typing import NamedTuple, Optional

import torch

from ._checks import ACTIVATION_DTYPES, check_tensor, expect, prepare_cu_seqlens, state_dtype


class ScanInputs(NamedTuple):
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    beta: torch.Tensor
    log_decay: torch.Tensor
    phase: torch.Tensor
    initial_state: Optional[torch.Tensor]
    cu_seqlens: Optional[torch.Tensor]
    flat_output: bool  # v came as (B, T, H, 2P): return o as (B, T, H, 2P)


def _token_stride(x: torch.Tensor) -> int:
    return x.stride(1) if x.shape[1] > 1 else x.stride(0)


def is_token_rows(x: torch.Tensor) -> bool:
    """(B, T, H, D) x is token rows of a wider projection (csrc/delta_scan_cpu.h): unit stride
    over D, D over heads, one stride between the flattened B·T tokens."""
    B, T, H, D = x.shape
    if x.numel() == 0:
        return True
    return ((x.stride(3) == 1 or D <= 1) and (x.stride(2) == D or H <= 1)
            and (B <= 1 or x.stride(0) == T * _token_stride(x)))


def prepare_scan_inputs(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens,
                        token_rows_qk: bool = False) -> ScanInputs:
    """Checks shapes, dtypes and devices; returns contiguous tensors in canonical shapes, except
    that q and k stay token rows of a wider projection (``is_token_rows``, read in place) when
    ``token_rows_qk`` (the chunk scan).

    v and beta are cast to q's dtype; log_decay, phase and the state to the recurrence dtype
    (fp32, or fp64 for fp64 inputs). cu_seqlens contents (0, non-decreasing, T) are checked
    inside the kernels, without a device sync.
    """
    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta), ("log_decay", log_decay),
                    ("phase", phase)):
        check_tensor(t, name, q, "q")
    expect(q.dim() == 4, "q", "shape (B, T, H, D)", tuple(q.shape))
    expect(q.dtype in ACTIVATION_DTYPES, "q", lambda: f"a dtype in {ACTIVATION_DTYPES}", q.dtype)
    B, T, H, D = q.shape
    expect(k.shape == q.shape, "k", lambda: f"shape {tuple(q.shape)} (q's shape)", tuple(k.shape))
    expect(k.dtype == q.dtype, "k", lambda: f"dtype {q.dtype} (q's dtype)", k.dtype)
    for name, t in (("v", v), ("beta", beta), ("log_decay", log_decay), ("phase", phase)):
        expect(t.is_floating_point(), name, "a floating-point tensor", t.dtype)

    if v.dim() == 4:
        expect(tuple(v.shape[:3]) == (B, T, H) and v.shape[3] % 2 == 0 and v.shape[3] > 0,
                "v", lambda: f"shape ({B}, {T}, {H}, 2P) or ({B}, {T}, {H}, P, 2)", tuple(v.shape))
        P = v.shape[3] // 2
        flat_output = True
        v = v.reshape(B, T, H, P, 2)
    else:
        expect(v.dim() == 5 and tuple(v.shape[:3]) == (B, T, H) and v.shape[4] == 2
                and v.shape[3] > 0, "v", lambda: f"shape ({B}, {T}, {H}, P, 2)", tuple(v.shape))
        P = v.shape[3]
        flat_output = False
    expect(tuple(beta.shape) == (B, T, H), "beta", lambda: f"shape ({B}, {T}, {H})", tuple(beta.shape))
    for name, t in (("log_decay", log_decay), ("phase", phase)):
        ok = tuple(t.shape) == (B, T, H, P) or (P == 1 and tuple(t.shape) == (B, T, H))
        expect(ok, name, lambda: f"shape ({B}, {T}, {H}, {P})" + (f" or ({B}, {T}, {H})" if P == 1 else ""),
                tuple(t.shape))

    sdt = state_dtype(q.dtype)
    if cu_seqlens is not None:
        cu_seqlens = prepare_cu_seqlens(cu_seqlens, q, "q")
        N = cu_seqlens.shape[0] - 1
    else:
        N = B
    if initial_state is not None:
        check_tensor(initial_state, "initial_state", q, "q")
        expect(initial_state.is_floating_point(), "initial_state", "a floating-point tensor",
               initial_state.dtype)
        expect(tuple(initial_state.shape) == (N, H, 2 * P, D), "initial_state",
                lambda: f"shape ({N}, {H}, {2 * P}, {D}) (N = {'number of sequences' if cu_seqlens is not None else 'batch'})",
                tuple(initial_state.shape))
        initial_state = initial_state.to(sdt).contiguous()

    return ScanInputs(
        q=q if token_rows_qk and is_token_rows(q) else q.contiguous(),
        k=k if token_rows_qk and is_token_rows(k) else k.contiguous(),
        v=v.to(q.dtype).contiguous(),
        beta=beta.to(q.dtype).contiguous(),
        log_decay=log_decay.reshape(B, T, H, P).to(sdt).contiguous(),
        phase=phase.reshape(B, T, H, P).to(sdt).contiguous(),
        initial_state=initial_state,
        cu_seqlens=cu_seqlens,
        flat_output=flat_output,
    )


def check_chunk_size(chunk_size) -> None:
    expect(isinstance(chunk_size, int) and not isinstance(chunk_size, bool)
            and 1 <= chunk_size <= 1024, "chunk_size", "an int in [1, 1024]", chunk_size)


def finish_output(o: torch.Tensor, flat_output: bool) -> torch.Tensor:
    """o (B, T, H, P, 2) -> (B, T, H, 2P) when the caller used the flattened pair layout."""
    return o.flatten(3) if flat_output else o
