"""Pure-PyTorch references of the delta scans: the canonical spec (spec/scan.md), float64-testable.

Both take canonical shapes (see ``_scan_inputs``) and work in complex arithmetic: a head's pair p
is the complex row s_p = S[2p] + i·S[2p+1] ∈ C^D, its transition z = exp(log_decay + i·phase):

    s_t = z_t (s_{t−1} − β_t (s_{t−1}·k_t) k_t) + β_t v^c_t k_t,    y^c_t = s_t·q_t

They are eager-only (the sequence split reads ``cu_seqlens`` on the host) and differentiable by
autograd, which is what the kernels' gradients are tested against.
"""

from typing import Optional

import torch

from ._checks import state_dtype


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if state_dtype(dtype) == torch.float64 else torch.complex64


def state_to_complex(state: torch.Tensor) -> torch.Tensor:
    """(..., 2P, D) real rows -> (..., P, D) complex, s_p = S[2p] + i·S[2p+1]."""
    pairs = state.unflatten(-2, (state.shape[-2] // 2, 2))
    return torch.complex(pairs[..., 0, :], pairs[..., 1, :])


def complex_to_state(s: torch.Tensor) -> torch.Tensor:
    """(..., P, D) complex -> (..., 2P, D) real rows."""
    return torch.stack((s.real, s.imag), dim=-2).flatten(-3, -2)


def sequence_spans(batch: int, length: int, cu_seqlens: Optional[torch.Tensor]):
    """[(b, start, end)] per sequence n: the batch rows, or the packed spans of cu_seqlens."""
    if cu_seqlens is None:
        return [(b, 0, length) for b in range(batch)]
    offsets = cu_seqlens.tolist()
    return [(0, offsets[n], offsets[n + 1]) for n in range(len(offsets) - 1)]


def _complex_inputs(q, k, v, beta, log_decay, phase):
    ct = complex_dtype(q.dtype)
    rt = state_dtype(q.dtype)
    g = torch.complex(log_decay.to(rt), phase.to(rt))  # (B, T, H, P)
    vc = torch.complex(v[..., 0].to(rt), v[..., 1].to(rt))  # (B, T, H, P)
    return q.to(rt), k.to(rt), vc, beta.to(rt), g, ct


def _to_output(per_batch, q, P):
    """Per batch row, the list of T complex (H, P) outputs in order -> (B, T, H, P, 2) in q's dtype."""
    B, T, H, _ = q.shape
    if T == 0:
        return q.new_zeros(B, 0, H, P, 2)
    out = torch.stack([torch.stack(rows) for rows in per_batch])
    return torch.stack((out.real, out.imag), dim=-1).to(q.dtype)


def _initial(initial_state, n, H, P, D, ct, device):
    if initial_state is None:
        return torch.zeros(H, P, D, dtype=ct, device=device)
    return state_to_complex(initial_state[n]).to(ct)


def recurrent_delta_scan_reference(q, k, v, beta, log_decay, phase, initial_state=None,
                                   cu_seqlens=None):
    """Literal step-by-step recurrence. Returns o (B, T, H, P, 2) in q's dtype, final (N, H, 2P, D)."""
    B, T, H, D = q.shape
    P = v.shape[3]
    qf, kf, vc, bf, g, ct = _complex_inputs(q, k, v, beta, log_decay, phase)
    z = torch.exp(g)
    per_batch = [[] for _ in range(B)]
    finals = []
    for n, (b, start, end) in enumerate(sequence_spans(B, T, cu_seqlens)):
        s = _initial(initial_state, n, H, P, D, ct, q.device)
        rows = per_batch[b]
        for t in range(start, end):
            kt, bt = kf[b, t], bf[b, t]  # (H, D), (H,)
            sk = torch.einsum("hpd,hd->hp", s, kt.to(ct))
            erased = s - bt[:, None, None] * sk[..., None] * kt[:, None, :]
            s = z[b, t][..., None] * erased + (bt[:, None] * vc[b, t])[..., None] * kt[:, None, :]
            rows.append(torch.einsum("hpd,hd->hp", s, qf[b, t].to(ct)))
        finals.append(complex_to_state(s))
    return _to_output(per_batch, q, P), torch.stack(finals)


def chunk_delta_scan_reference(q, k, v, beta, log_decay, phase, initial_state=None,
                               cu_seqlens=None, chunk_size=64):
    """The exact chunk algorithm of spec/scan.md in PyTorch ops. Per chunk (n tokens, state s0):

        G = cumsum(g), Γ = e^G, E_tj = e^{G_t − G_j} (t ≥ j, masked before exp),
        T_real = (I + strict_lower(diag(β) K Kᵀ))⁻¹,  u = (T_real ⊙ E)(β ⊙ v^c − β ⊙ Γ ⊙ (K s0ᵀ)),
        y_t = Γ_t (s0·q_t) + Σ_{j≤t} E_tj (q_t·k_j) u_j,  s_end = Γ_{n−1} s0 + Σ_j E_{n−1,j} u_j k_j

    K Kᵀ, Q Kᵀ and T_real are shared by the P pairs. Returns o (B, T, H, P, 2) in q's dtype,
    final (N, H, 2P, D) and state_energy (N, H): the mean over the sequence's chunk ends of
    ‖S‖²_F (for an empty sequence, ‖S‖²_F of its initial state).
    """
    B, T, H, D = q.shape
    P = v.shape[3]
    qf, kf, vc, bf, g, ct = _complex_inputs(q, k, v, beta, log_decay, phase)
    rt = qf.dtype
    per_batch = [[] for _ in range(B)]
    finals, energies = [], []
    for n, (b, start, end) in enumerate(sequence_spans(B, T, cu_seqlens)):
        s = _initial(initial_state, n, H, P, D, ct, q.device)  # (H, P, D)
        chunk_energies = []
        for c0 in range(start, end, chunk_size):
            c1 = min(c0 + chunk_size, end)
            m = c1 - c0
            K = kf[b, c0:c1].transpose(0, 1)  # (H, m, D)
            Q = qf[b, c0:c1].transpose(0, 1)
            beta_c = bf[b, c0:c1].transpose(0, 1)  # (H, m)
            G = torch.cumsum(g[b, c0:c1].permute(1, 2, 0), dim=-1)  # (H, P, m)
            tri = torch.tril(torch.ones(m, m, dtype=torch.bool, device=q.device))
            diff = torch.where(tri, G[..., :, None] - G[..., None, :], torch.zeros((), dtype=ct,
                                                                                  device=q.device))
            E = torch.where(tri, torch.exp(diff), torch.zeros((), dtype=ct, device=q.device))
            gamma = torch.exp(G)  # (H, P, m)
            KK = K @ K.transpose(1, 2)
            QK = Q @ K.transpose(1, 2)
            eye = torch.eye(m, dtype=rt, device=q.device)
            T_real = torch.linalg.solve_triangular(
                eye + torch.tril(beta_c[..., :, None] * KK, -1), eye.expand(H, m, m), upper=False,
                unitriangular=True)  # (H, m, m)
            ks = torch.einsum("hmd,hpd->hpm", K.to(ct), s)  # (H, P, m)
            rhs = beta_c[:, None, :] * (vc[b, c0:c1].permute(1, 2, 0) - gamma * ks)
            u = torch.einsum("hpij,hpj->hpi", T_real[:, None].to(ct) * E, rhs)  # (H, P, m)
            y = gamma * torch.einsum("hmd,hpd->hpm", Q.to(ct), s) + torch.einsum(
                "hpij,hpj->hpi", QK[:, None].to(ct) * E, u)
            per_batch[b].extend(y.permute(2, 0, 1).unbind(0))
            s = gamma[..., -1:] * s + torch.einsum("hpj,hjd->hpd", E[..., -1, :] * u, K.to(ct))
            chunk_energies.append(s.abs().square().sum((1, 2)))
        if not chunk_energies:
            chunk_energies.append(s.abs().square().sum((1, 2)))
        energies.append(torch.stack(chunk_energies).mean(0))
        finals.append(complex_to_state(s))
    return _to_output(per_batch, q, P), torch.stack(finals), torch.stack(energies).detach()


def approx_delta_scan_reference(q, k, v, beta, log_decay, phase, initial_state=None,
                                chunk_size=64):
    """The ``scan="approx"`` ablation (spec/model.md § Ablation switches), token by token. Per
    chunk of C tokens the state is the sum of the incoming state s0, which only decays, and a
    local state that starts at zero and follows the delta rule:

        d_t = z_t d_{t−1} (d = s0 before the chunk),  l_t = z_t (l_{t−1} − β_t (l_{t−1}·k_t) k_t)
        + β_t v^c_t k_t (l = 0 before the chunk),  y^c_t = (d_t + l_t)·q_t,  s_end = d + l

    (the chunk algorithm with u = u_loc: no −Γ⊙(K s0ᵀ) term). Unpadded batches only. Returns o
    (B, T, H, P, 2) in q's dtype, final (B, H, 2P, D) and state_energy (B, H): the mean over the
    chunk ends of ‖S‖²_F.
    """
    B, T, H, D = q.shape
    P = v.shape[3]
    qf, kf, vc, bf, g, ct = _complex_inputs(q, k, v, beta, log_decay, phase)
    z = torch.exp(g)
    per_batch = [[] for _ in range(B)]
    finals, energies = [], []
    for b in range(B):
        s = _initial(initial_state, b, H, P, D, ct, q.device)  # (H, P, D)
        chunk_energies = []
        for c0 in range(0, T, chunk_size):
            decayed, local = s, torch.zeros_like(s)
            for t in range(c0, min(c0 + chunk_size, T)):
                kt, bt, zt = kf[b, t].to(ct), bf[b, t], z[b, t][..., None]  # (H, D), (H,), (H, P, 1)
                decayed = zt * decayed
                lk = torch.einsum("hpd,hd->hp", local, kt)
                local = zt * (local - bt[:, None, None] * lk[..., None] * kt[:, None, :]) + (
                    bt[:, None] * vc[b, t])[..., None] * kt[:, None, :]
                per_batch[b].append(torch.einsum("hpd,hd->hp", decayed + local, qf[b, t].to(ct)))
            s = decayed + local
            chunk_energies.append(s.abs().square().sum((1, 2)))
        energies.append(torch.stack(chunk_energies).mean(0))
        finals.append(complex_to_state(s))
    return _to_output(per_batch, q, P), torch.stack(finals), torch.stack(energies).detach()
