"""Random inputs for the delta-scan tests, and an independent float64 oracle (NumPy loop)."""

import math

import numpy as np
import torch


def make_inputs(B, T, H, D, P, *, dtype=torch.float64, decay="random", initial_state=False,
                n_states=None, seed=0, requires_grad=False):
    """Canonical-shape scan inputs. ``decay`` picks the adversarial regime of |z| and arg z."""
    g = torch.Generator().manual_seed(seed)
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    q = torch.nn.functional.normalize(torch.randn(B, T, H, D, generator=g, dtype=torch.float64), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, P, 2, generator=g, dtype=torch.float64)
    beta = torch.rand(B, T, H, generator=g, dtype=torch.float64)
    phase = (torch.rand(B, T, H, P, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    u = torch.rand(B, T, H, P, generator=g, dtype=torch.float64)
    log_decay = {
        "random": -u,
        "near_one": -1e-6 * u,  # |z| ≈ 1: slow heads, long memory
        "small": torch.full_like(u, math.log(0.01)),  # |z| = 0.01
        "zero": torch.full_like(u, -60.0),  # τα = 1: z = 0, clamped log_decay
    }[decay]
    if decay == "near_one":
        phase = torch.where(u > 0.5, torch.full_like(phase, math.pi), torch.full_like(phase, -math.pi))
    s0 = None
    if initial_state:
        s0 = torch.randn(n_states or B, H, 2 * P, D, generator=g, dtype=torch.float64).to(sdt)
    out = [q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype), log_decay.to(sdt), phase.to(sdt), s0]
    if requires_grad:
        out = [None if t is None else t.requires_grad_() for t in out]
    return out


def make_cotangents(B, T, H, D, P, N, *, dtype, state_dtype, seed=1):
    """Random upstream gradients of a scan's outputs, drawn in float64 from one generator:
    grad_o (B, T, H, P, 2) in ``dtype`` and grad_final (N, H, 2P, D) in ``state_dtype``."""
    gen = torch.Generator().manual_seed(seed)
    grad_o = torch.randn(B, T, H, P, 2, generator=gen, dtype=torch.float64).to(dtype)
    grad_final = torch.randn(N, H, 2 * P, D, generator=gen, dtype=torch.float64).to(state_dtype)
    return grad_o, grad_final


def raw_rows(x, seed):
    """x's unit rows rescaled by log-uniform per-row factors in [0.2, 5): a projection's raw
    rows, for the chunk scan's ``l2_norm_eps``."""
    g = torch.Generator().manual_seed(seed)
    scale = 0.2 * 25.0 ** torch.rand(*x.shape[:-1], 1, generator=g, dtype=torch.float64)
    return (x.double() * scale.to(x.device)).to(x.dtype)


def token_rows(x, seed):
    """x (B, T, H, D), same values and device, as the middle third of random (B, T, 3·H·D)
    projection rows (the layout of the model's k slice of the in_proj output)."""
    B, T, H, D = x.shape
    g = torch.Generator().manual_seed(seed)
    wide = torch.randn(B, T, 3 * H * D, generator=g, dtype=torch.float64)
    wide = wide.to(device=x.device, dtype=x.dtype)
    wide[..., H * D:2 * H * D] = x.flatten(2)
    return wide[..., H * D:2 * H * D].view(B, T, H, D)


def cu_seqlens_from_lengths(lengths):
    """int32 offsets [0, l0, l0 + l1, ...] of packed sequences of these lengths, or None."""
    if lengths is None:
        return None
    return torch.tensor([0] + torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist(), dtype=torch.int32)


def relative_error(out, ref):
    """‖out − ref‖ / ‖ref‖ in float64 on the CPU (‖out − ref‖ where ref = 0; inf when out holds
    a NaN or inf)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    err, denom = (out - ref).norm().item(), ref.norm().item()
    return err / denom if denom > 0 else err


def assert_close_by_name(names, outs, refs, tol):
    """Each output against its reference: equal shapes and relative_error ≤ tol; a failure names
    the output and its error."""
    for name, out, ref in zip(names, outs, refs, strict=True):
        assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
        err = relative_error(out, ref)
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.0e}"


def oracle(q, k, v, beta, log_decay, phase, initial_state=None, cu_seqlens=None, chunk_size=None):
    """The recurrence of spec/scan.md in real 2×D form, float64, one token at a time:
    S_t = A_t (S_{t−1} − β (S_{t−1} k) kᵀ) + β v kᵀ with A = |z| [[cos φ, −sin φ], [sin φ, cos φ]].

    Returns o (B, T, H, P, 2), final (N, H, 2P, D) and, with ``chunk_size``, the energy (N, H):
    the mean over chunk ends of ‖S‖²_F.
    """
    q, k, v, beta, ld, ph = (t.detach().double().numpy() for t in (q, k, v, beta, log_decay, phase))
    B, T, H, D = q.shape
    P = v.shape[3]
    spans = ([(b, 0, T) for b in range(B)] if cu_seqlens is None else
             [(0, int(a), int(c)) for a, c in zip(cu_seqlens[:-1], cu_seqlens[1:])])
    o = np.zeros((B, T, H, P, 2))
    N = len(spans)
    final = np.zeros((N, H, 2 * P, D))
    energy = np.zeros((N, H))
    for n, (b, start, end) in enumerate(spans):
        for h in range(H):
            S = (np.zeros((P, 2, D)) if initial_state is None else
                 initial_state[n, h].detach().double().numpy().reshape(P, 2, D).copy())
            ends = []
            for t in range(start, end):
                kt, qt, bt = k[b, t, h], q[b, t, h], beta[b, t, h]
                for p in range(P):
                    r, phi = math.exp(ld[b, t, h, p]), ph[b, t, h, p]
                    A = r * np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
                    erased = S[p] - bt * np.outer(S[p] @ kt, kt)
                    S[p] = A @ erased + bt * np.outer(v[b, t, h, p], kt)
                    o[b, t, h, p] = S[p] @ qt
                if chunk_size and ((t - start + 1) % chunk_size == 0 or t == end - 1):
                    ends.append((S ** 2).sum())
            energy[n, h] = np.mean(ends) if ends else (S ** 2).sum()
            final[n, h] = S.reshape(2 * P, D)
    return torch.from_numpy(o), torch.from_numpy(final), torch.from_numpy(energy)
