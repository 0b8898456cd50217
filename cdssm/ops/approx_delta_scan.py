"""``approx_chunk_delta_scan``: the ``scan="approx"`` ablation (spec/model.md § Ablation switches).

The carry of the original implementation: within a chunk exact, but the state entering a chunk
only decays — the chunk algorithm of spec/scan.md with u = u_loc (no −Γ⊙(K s0ᵀ) term), for the
chunk's outputs and its end state. Per head and pair, chunk c of C tokens with incoming s_c:

    G = cumsum(g), Γ_t = e^{G_t}, E_tj = e^{G_t − G_j} (t ≥ j),
    u = (T_real ⊙ E)(β ⊙ v^c),  T_real = (I + strict_lower(diag(β) K Kᵀ))⁻¹
    y_t = Γ_t (s_c·q_t) + Σ_{j≤t} E_tj (q_t·k_j) u_j,   s_{c+1} = a_c s_c + ℓ_c,
    a_c = Γ_{C−1},  ℓ_c = Σ_j E_{C−1,j} u_j k_j

The chunk-to-chunk recurrence is diagonal and linear, so every chunk's incoming state comes at
once: with Λ_c = Σ_{c'<c} log a_{c'} (float64), s_c = e^{Λ_c} s_0 + Σ_{c'<c} e^{Λ_c − Λ_{c'+1}} ℓ_{c'}.
Plain PyTorch (complex arithmetic in fp32, fp64 for fp64 inputs; differentiable by autograd,
compiles with ``fullgraph=True``): an ablation, not a tuned kernel. Unpadded batches only.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import state_dtype
from ._scan_inputs import check_chunk_size, finish_output, prepare_scan_inputs
from .reference import complex_dtype, complex_to_state, state_to_complex


def _chunked(t: torch.Tensor, n: int, C: int) -> torch.Tensor:
    """(B, T, ...) → (B, n, C, ...), zero-padded at the end to n·C tokens."""
    pad = n * C - t.shape[1]
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)).unflatten(1, (n, C))


def _masked_exp(x: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """exp(x) where ``mask``, else 0, in ``dtype`` (x is masked before exp: no inf, no NaN grad)."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return torch.where(mask, torch.exp(torch.where(mask, x, zero).to(dtype)),
                       torch.zeros((), dtype=dtype, device=x.device))


def approx_chunk_delta_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor,
    phase: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    chunk_size: int = 64,
    output_final_state: bool = False,
    output_state_energy: bool = False,
):
    """The approximate chunked delta scan (see the module docstring).

    Args:
        q, k: (B, T, H, D) unit-norm queries and keys; v (B, T, H, P, 2); beta (B, T, H);
            log_decay, phase (B, T, H, P); initial_state (B, H, 2P, D) or None — the arguments
            of ``chunk_delta_scan`` without ``cu_seqlens``.
        chunk_size: C, tokens per chunk (the approximation depends on it; the model uses 64).
        output_final_state, output_state_energy: as in ``chunk_delta_scan``.

    Returns:
        ``(o, final_state)`` — o (B, T, H, P, 2) in q's dtype, final_state (B, H, 2P, D) fp32
        (fp64 for fp64) or None — plus ``state_energy`` (B, H), the detached mean over the chunk
        ends of ‖S‖²_F, when ``output_state_energy``.
    """
    check_chunk_size(chunk_size)
    x = prepare_scan_inputs(q, k, v, beta, log_decay, phase, initial_state, None)
    B, T, H, D = x.q.shape
    if T == 0:
        raise ValueError("q: expected at least one token (T >= 1), got T = 0")
    C = chunk_size
    n = -(-T // C)
    rt, ct = state_dtype(q.dtype), complex_dtype(q.dtype)
    wide = torch.complex128  # the chunk-level cumulative log decay Λ

    # Chunked layouts: K, Q (B, H, n, C, D); beta (B, H, n, C); g, v^c (B, H, P, n, C).
    K = _chunked(x.k.to(rt), n, C).permute(0, 3, 1, 2, 4)
    Q = _chunked(x.q.to(rt), n, C).permute(0, 3, 1, 2, 4)
    beta_c = _chunked(x.beta.to(rt), n, C).permute(0, 3, 1, 2)
    # Padding: g = 0 (z = 1) and β = 0, so the padded tokens leave the state as it is.
    g = _chunked(torch.complex(x.log_decay, x.phase), n, C).permute(0, 3, 4, 1, 2)
    vc = _chunked(torch.complex(x.v[..., 0].to(rt), x.v[..., 1].to(rt)), n, C).permute(0, 3, 4, 1, 2)

    G = torch.cumsum(g, dim=-1)  # (B, H, P, n, C)
    tri = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    E = _masked_exp(G[..., :, None] - G[..., None, :], tri, ct)  # (B, H, P, n, C, C)
    eye = torch.eye(C, dtype=rt, device=q.device)
    KK = K @ K.transpose(-1, -2)  # (B, H, n, C, C)
    T_real = torch.linalg.solve_triangular(
        eye + torch.tril(beta_c[..., :, None] * KK, -1), eye.expand_as(KK), upper=False,
        unitriangular=True)
    u = ((T_real.unsqueeze(2) * E) @ (beta_c.unsqueeze(2) * vc).unsqueeze(-1)).squeeze(-1)
    QK = (Q @ K.transpose(-1, -2)).unsqueeze(2)  # (B, H, 1, n, C, C)
    y_local = ((QK * E) @ u.unsqueeze(-1)).squeeze(-1)  # (B, H, P, n, C)
    local_end = torch.einsum("bhpnj,bhnjd->bhpnd", E[..., -1, :] * u, K.to(ct))  # ℓ (B, H, P, n, D)

    # Incoming states s_0 … s_n (s_n: the final state), (B, H, P, n + 1, D).
    Lam = F.pad(torch.cumsum(G[..., -1].to(wide), dim=-1), (1, 0))  # Λ (B, H, P, n + 1)
    strict = torch.ones(n + 1, n, dtype=torch.bool, device=q.device).tril(-1)  # c' < c
    W = _masked_exp(Lam[..., :, None] - Lam[..., None, 1:], strict, ct)  # (B, H, P, n + 1, n)
    s_in = W @ local_end
    if x.initial_state is not None:
        s_in = s_in + torch.exp(Lam.to(ct)).unsqueeze(-1) * state_to_complex(
            x.initial_state.to(rt)).unsqueeze(3)

    y = torch.exp(G) * torch.einsum("bhpnd,bhncd->bhpnc", s_in[..., :n, :], Q.to(ct)) + y_local
    y = y.permute(0, 3, 4, 1, 2).flatten(1, 2)[:, :T]  # (B, T, H, P)
    o = finish_output(torch.stack((y.real, y.imag), dim=-1).to(q.dtype), x.flat_output)
    final_state = complex_to_state(s_in[..., n, :]) if output_final_state else None
    if output_state_energy:
        energy = s_in[..., 1:, :].abs().square().sum((2, 4)).mean(-1).detach()  # (B, H)
        return o, final_state, energy
    return o, final_state
