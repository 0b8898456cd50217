"""Validation and canonical shapes for the delta scans (shared by the chunk and recurrent ops).

Canonical shapes (see csrc/ops.cpp): q, k (B, T, H, D); v (B, T, H, P, 2); beta (B, T, H);
log_decay, phase (B, T, H, P); state (N, H, 2P, D). The one-pair layout of the foundation
(v (B, T, H, 2), log_decay/phase (B, T, H)) and the flattened pair layout v (B, T, H, 2P) are
accepted too, and the output then comes back flattened: (B, T, H, 2P).
"""

from typing import NamedTuple, Optional

import torch

ACTIVATION_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


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


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Recurrence precision for activations of ``dtype``: fp64 for fp64, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _expect(cond: bool, name: str, expected, got) -> None:
    """Raises ValueError naming ``name`` unless ``cond``. ``expected`` is a string, or a function
    returning one when it mentions sizes: formatting a symbolic size under torch.compile would
    specialize it (a recompile for every sequence length), so it is formatted only on failure."""
    if not cond:
        raise ValueError(f"{name}: expected {expected() if callable(expected) else expected}, "
                         f"got {got}")


def prepare_scan_inputs(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens) -> ScanInputs:
    """Checks shapes, dtypes and devices; returns contiguous tensors in canonical shapes.

    v and beta are cast to q's dtype; log_decay, phase and the state to the recurrence dtype
    (fp32, or fp64 for fp64 inputs). cu_seqlens contents (0, non-decreasing, T) are checked
    inside the kernels, without a device sync.
    """
    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta), ("log_decay", log_decay),
                    ("phase", phase)):
        _expect(isinstance(t, torch.Tensor), name, "a torch.Tensor", type(t).__name__)
        _expect(t.device == q.device, name, f"a tensor on {q.device} (q's device)", t.device)
    _expect(q.dim() == 4, "q", "shape (B, T, H, D)", tuple(q.shape))
    _expect(q.dtype in ACTIVATION_DTYPES, "q", f"a dtype in {ACTIVATION_DTYPES}", q.dtype)
    B, T, H, D = q.shape
    _expect(k.shape == q.shape, "k", lambda: f"shape {tuple(q.shape)} (q's shape)", tuple(k.shape))
    _expect(k.dtype == q.dtype, "k", f"dtype {q.dtype} (q's dtype)", k.dtype)
    for name, t in (("v", v), ("beta", beta), ("log_decay", log_decay), ("phase", phase)):
        _expect(t.is_floating_point(), name, "a floating-point tensor", t.dtype)

    if v.dim() == 4:
        _expect(tuple(v.shape[:3]) == (B, T, H) and v.shape[3] % 2 == 0 and v.shape[3] > 0,
                "v", lambda: f"shape ({B}, {T}, {H}, 2P) or ({B}, {T}, {H}, P, 2)", tuple(v.shape))
        P = v.shape[3] // 2
        flat_output = True
        v = v.reshape(B, T, H, P, 2)
    else:
        _expect(v.dim() == 5 and tuple(v.shape[:3]) == (B, T, H) and v.shape[4] == 2
                and v.shape[3] > 0, "v", lambda: f"shape ({B}, {T}, {H}, P, 2)", tuple(v.shape))
        P = v.shape[3]
        flat_output = False
    _expect(tuple(beta.shape) == (B, T, H), "beta", lambda: f"shape ({B}, {T}, {H})", tuple(beta.shape))
    for name, t in (("log_decay", log_decay), ("phase", phase)):
        ok = tuple(t.shape) == (B, T, H, P) or (P == 1 and tuple(t.shape) == (B, T, H))
        _expect(ok, name, lambda: f"shape ({B}, {T}, {H}, {P})" + (f" or ({B}, {T}, {H})" if P == 1 else ""),
                tuple(t.shape))

    sdt = state_dtype(q.dtype)
    if cu_seqlens is not None:
        _expect(isinstance(cu_seqlens, torch.Tensor) and cu_seqlens.dim() == 1
                and cu_seqlens.shape[0] >= 2, "cu_seqlens", "a 1-D tensor of N + 1 >= 2 offsets",
                getattr(cu_seqlens, "shape", cu_seqlens))
        _expect(cu_seqlens.dtype in (torch.int32, torch.int64), "cu_seqlens",
                "dtype int32 (or int64)", cu_seqlens.dtype)
        _expect(cu_seqlens.device == q.device, "cu_seqlens", f"a tensor on {q.device}",
                cu_seqlens.device)
        _expect(B == 1, "q", "batch size 1 when cu_seqlens packs the sequences", B)
        cu_seqlens = cu_seqlens.to(torch.int32).contiguous()
        N = cu_seqlens.shape[0] - 1
    else:
        N = B
    if initial_state is not None:
        _expect(isinstance(initial_state, torch.Tensor) and initial_state.is_floating_point(),
                "initial_state", "a floating-point tensor", type(initial_state).__name__)
        _expect(tuple(initial_state.shape) == (N, H, 2 * P, D), "initial_state",
                lambda: f"shape ({N}, {H}, {2 * P}, {D}) (N = {'number of sequences' if cu_seqlens is not None else 'batch'})",
                tuple(initial_state.shape))
        _expect(initial_state.device == q.device, "initial_state", f"a tensor on {q.device}",
                initial_state.device)
        initial_state = initial_state.to(sdt).contiguous()

    return ScanInputs(
        q=q.contiguous(),
        k=k.contiguous(),
        v=v.to(q.dtype).contiguous(),
        beta=beta.to(q.dtype).contiguous(),
        log_decay=log_decay.reshape(B, T, H, P).to(sdt).contiguous(),
        phase=phase.reshape(B, T, H, P).to(sdt).contiguous(),
        initial_state=initial_state,
        cu_seqlens=cu_seqlens,
        flat_output=flat_output,
    )


def check_chunk_size(chunk_size) -> None:
    _expect(isinstance(chunk_size, int) and not isinstance(chunk_size, bool)
            and 1 <= chunk_size <= 1024, "chunk_size", "an int in [1, 1024]", chunk_size)


def finish_output(o: torch.Tensor, flat_output: bool) -> torch.Tensor:
    """o (B, T, H, P, 2) -> (B, T, H, 2P) when the caller used the flattened pair layout."""
    return o.flatten(3) if flat_output else o
