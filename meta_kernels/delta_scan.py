"""Fake kernels of the delta scans: output shapes and dtypes from input shapes alone.

The chunk scan's q and k may be token rows of a wider projection (csrc/ops.cpp); its gradients
come back contiguous.
"""

import torch


def _sizes(q, v, cu_seqlens):
    B, T, H, D = q.shape
    P = v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    return B, T, H, D, P, N


def _state_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _check_common(q, k, v, beta, log_decay, phase):
    torch._check(q.dim() == 4 and k.shape == q.shape, lambda: "q, k must be (B, T, H, D)")
    torch._check(v.dim() == 5 and v.shape[4] == 2, lambda: "v must be (B, T, H, P, 2)")
    torch._check(beta.dim() == 3 and log_decay.dim() == 4 and phase.dim() == 4,
                 lambda: "beta (B, T, H), log_decay/phase (B, T, H, P)")


def chunk_delta_scan_fwd(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens, chunk_size,
                         l2_norm_eps=None):
    _check_common(q, k, v, beta, log_decay, phase)
    B, T, H, D, P, N = _sizes(q, v, cu_seqlens)
    sdt = _state_dtype(q)
    n_chunks = (T + chunk_size - 1) // chunk_size
    if cu_seqlens is None:
        boundary = q.new_empty(B, n_chunks + 1, H, 2 * P, D, dtype=sdt)
    else:
        boundary = q.new_empty(n_chunks + N, H, 2 * P, D, dtype=sdt)
    return (q.new_empty(B, T, H, P, 2), q.new_empty(N, H, 2 * P, D, dtype=sdt), boundary,
            q.new_empty(N, H, dtype=sdt))


def _scan_grads(q, k, v, beta, log_decay, phase, cu_seqlens):
    B, T, H, D, P, N = _sizes(q, v, cu_seqlens)
    # grad_q, grad_k contiguous, whatever the token stride of q, k
    return (q.new_empty(q.shape), k.new_empty(k.shape), torch.empty_like(v), torch.empty_like(beta),
            torch.empty_like(log_decay), torch.empty_like(phase),
            q.new_empty(N, H, 2 * P, D, dtype=_state_dtype(q)))


def chunk_delta_scan_bwd(grad_o, grad_final_state, q, k, v, beta, log_decay, phase,
                         boundary_states, cu_seqlens, chunk_size, l2_norm_eps=None):
    _check_common(q, k, v, beta, log_decay, phase)
    return _scan_grads(q, k, v, beta, log_decay, phase, cu_seqlens)


def recurrent_delta_scan_fwd(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens):
    _check_common(q, k, v, beta, log_decay, phase)
    B, T, H, D, P, N = _sizes(q, v, cu_seqlens)
    return q.new_empty(B, T, H, P, 2), q.new_empty(N, H, 2 * P, D, dtype=_state_dtype(q))


def recurrent_delta_scan_bwd(grad_o, grad_final_state, q, k, v, beta, log_decay, phase,
                             initial_state, cu_seqlens):
    _check_common(q, k, v, beta, log_decay, phase)
    return _scan_grads(q, k, v, beta, log_decay, phase, cu_seqlens)
