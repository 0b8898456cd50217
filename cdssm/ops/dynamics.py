"""CD-SSM dynamics: adaptive timestep, Cayley transition and the scan's decay inputs.

Plain elementwise PyTorch (Inductor fuses it; no custom op). Everything is computed in fp32, or
fp64 when any input is fp64 (spec/model.md: all dynamics math in fp32). Per (head, pair):
α ≥ 0 damping, ω frequency, dt step, τ = dt/2, r ∈ (0, 1) recurrence gate, c = ln Lc.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

LOG_ABS_Z_SQ_MIN = -120.0  # floor of log|z|²: no 0·(−∞) anywhere downstream
LOG_DECAY_MIN = -60.0  # floor of log_decay = log|z_eff|
NUM_MIN = 1e-30  # floor of |1 − τμ|² inside the log
VP_VAR_MIN = 1e-6  # floor of 1 − |z_eff|² inside vp's sqrt


def dynamics_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp64 if any input is fp64, else fp32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class ScanDecay(NamedTuple):
    """Per-(head, pair) scan inputs, all (..., H, P) in the dynamics dtype."""

    log_decay: torch.Tensor  # log|z_eff| ∈ [−60, 0]
    phase: torch.Tensor  # arg z ∈ (−π, π]
    value_scale: torch.Tensor  # vp ∈ [1e−3, 1]


def adaptive_timestep(alpha, omega, log_dt_scale, dt_selection, *, dt_eps, dt_margin,
                      rotation_threshold, rotation_width):
    """Adaptive step (spec/model.md step 5), broadcasting over its inputs:

        κ = softplus(log_dt_scale);  dt_raw = κ/(α + |ω| + ε_dt);  dt_max = (2 − δ)/(α + ε_dt)
        w = σ((ω_th − |ω|)/s_w)
        dt = min(w·min(dt_raw, dt_max) + (1 − w)·dt_raw + softplus(dt_selection), dt_max)

    The final cap keeps τα = dt·α/2 < 1, so z stays on the positive side for non-rotating heads.

    Args:
        alpha, omega: (..., H, P) α ≥ 0 and ω.
        log_dt_scale: (H, 1) per-head parameter (κ_h = softplus of it).
        dt_selection: (..., H, 1) the token's selection_dt(x_c) (before softplus).
        dt_eps, dt_margin, rotation_threshold, rotation_width: ε_dt, δ, ω_th, s_w of the config.

    Returns:
        dt (..., H, P) in the dynamics dtype, 0 < dt ≤ dt_max.
    """
    dtype = dynamics_dtype(alpha, omega, log_dt_scale, dt_selection)
    alpha, omega = alpha.to(dtype), omega.to(dtype)
    kappa = F.softplus(log_dt_scale.to(dtype))
    abs_omega = omega.abs()
    dt_raw = kappa / (alpha + abs_omega + dt_eps)
    dt_max = (2.0 - dt_margin) / (alpha + dt_eps)
    w = torch.sigmoid((rotation_threshold - abs_omega) / rotation_width)
    dt = (w * torch.minimum(dt_raw, dt_max) + (1.0 - w) * dt_raw
          + F.softplus(dt_selection.to(dtype)))
    return torch.minimum(dt, dt_max)


def fixed_timestep(log_dt_scale, dt_selection):
    """The ``adaptive_dt=False`` ablation (spec/model.md § Ablation switches), broadcasting:

        dt = κ_h + softplus(dt_selection),  κ_h = softplus(log_dt_scale)

    (no dependence on α or ω, no cap). log_dt_scale (H, 1), dt_selection (..., H, 1) →
    dt (..., H, 1) in the dynamics dtype.
    """
    dtype = dynamics_dtype(log_dt_scale, dt_selection)
    return F.softplus(log_dt_scale.to(dtype)) + F.softplus(dt_selection.to(dtype))


def cayley_transition(alpha, omega, dt):
    """Cayley (bilinear) transition z = (1 − τμ)/(1 + τμ), μ = α + iω, τ = dt/2 (spec/scan.md):

        den = (1 + τα)² + (τω)²,  num = (1 − τα)² + (τω)²
        log|z|² = log1p(−4τα/den)                 if −4τα/den > −½  (accurate for slow heads)
                = log(max(num, 1e−30)) − log(den)   otherwise,      then clamped ≥ −120
        arg z   = atan2(−2τω, 1 − τ²(α² + ω²))

    At z = 0 (τα = 1, ω = 0) both atan2 arguments vanish: (0, 1) is substituted, so arg z = 0
    there with zero gradient. Values and gradients are finite for every α ≥ 0, ω, dt > 0.

    Args:
        alpha, omega, dt: broadcastable tensors, α ≥ 0, dt > 0.

    Returns:
        ``(log_abs_z_sq, arg_z)``, log|z|² ∈ [−120, 0] and arg z, in the dynamics dtype.
    """
    dtype = dynamics_dtype(alpha, omega, dt)
    half_dt = 0.5 * dt.to(dtype)
    ta = half_dt * alpha.to(dtype)  # τα
    tw = half_dt * omega.to(dtype)  # τω
    den = (1.0 + ta).square() + tw.square()
    num = (1.0 - ta).square() + tw.square()
    x = -4.0 * ta / den  # |z|² − 1 ∈ [−1, 0]
    slow = x > -0.5
    # Both where-branches are differentiated: each gets an argument that is safe off its branch.
    log_abs_z_sq = torch.where(
        slow,
        torch.log1p(torch.where(slow, x, torch.zeros_like(x))),
        torch.log(num.clamp_min(NUM_MIN)) - torch.log(den),
    ).clamp_min(LOG_ABS_Z_SQ_MIN)
    # 1 − τ²(α² + ω²) as (1 − τα)(1 + τα) − (τω)²: exact cancellation near τα = 1.
    re = (1.0 - ta) * (1.0 + ta) - tw.square()
    im = -2.0 * tw
    at_zero = (re == 0) & (im == 0)
    arg_z = torch.atan2(torch.where(at_zero, torch.zeros_like(im), im),
                        torch.where(at_zero, torch.ones_like(re), re))
    return log_abs_z_sq, arg_z


def scan_inputs(alpha, omega, dt, r, gating_constant) -> ScanDecay:
    """Dynamics → scan inputs (spec/model.md step 7, spec/scan.md): with (log|z|², arg z) from
    ``cayley_transition``,

        log_decay = max(c·r·½·log|z|², −60)        (|z_eff| = |z|^{c·r}, same phase)
        phase     = arg z
        vp        = min(1, √max(1 − exp(2·log_decay), 1e−6))

    (1 − exp(2·log_decay) is evaluated as −expm1(2·log_decay): exact for slow heads.)

    Args:
        alpha, omega, dt: (..., H, P); r: (..., H, 1) or (..., H, P) recurrence gate in (0, 1);
        gating_constant: c = ln Lc (a Python float).
    """
    log_abs_z_sq, arg_z = cayley_transition(alpha, omega, dt)
    r = r.to(log_abs_z_sq.dtype)
    log_decay = (gating_constant * 0.5 * r * log_abs_z_sq).clamp_min(LOG_DECAY_MIN)
    value_scale = torch.sqrt((-torch.expm1(2.0 * log_decay)).clamp_min(VP_VAR_MIN)).clamp_max(1.0)
    return ScanDecay(log_decay, arg_z, value_scale)
