"""Dynamics (cdssm.ops.dynamics) against the closed forms of spec/scan.md and spec/model.md."""

import itertools
import math

import pytest
import torch

from cdssm.config import CDSSMConfig
from cdssm.ops import adaptive_timestep, cayley_transition, scan_inputs

C = CDSSMConfig(64, 2, 128, 97)
STEP = dict(dt_eps=C.dt_eps, dt_margin=C.dt_margin, rotation_threshold=C.rotation_threshold,
            rotation_width=C.rotation_width)


def grid(*axes, dtype=torch.float64):
    """Every combination of the axes' values, one flat float64 tensor per axis."""
    return [torch.tensor(v, dtype=dtype) for v in zip(*itertools.product(*axes))]


def closed_form(alpha, omega, dt):
    """float64 oracle: a = (1 − τ²(α²+ω²))/den, b = −2τω/den,
    arg z = atan2(−τω, 1 − τα) − atan2(τω, 1 + τα)."""
    tau = dt / 2
    den = (1 + tau * alpha) ** 2 + (tau * omega) ** 2
    a = (1 - tau ** 2 * (alpha ** 2 + omega ** 2)) / den
    b = -2 * tau * omega / den
    arg = torch.atan2(-tau * omega, 1 - tau * alpha) - torch.atan2(tau * omega, 1 + tau * alpha)
    return a, b, arg


ALPHAS = [0.0, 1e-6, 1e-3, 0.3, 2.0, 50.0]
OMEGAS = [0.0, 1e-4, -0.7, 3.0, -100.0]
DTS = [1e-8, 1e-2, 0.7, 5.0, 1e6]


def test_cayley_matches_closed_forms_float64():
    alpha, omega, dt = grid(ALPHAS, OMEGAS, DTS)
    log_abs_z_sq, arg_z = cayley_transition(alpha, omega, dt)
    a, b, arg = closed_form(alpha, omega, dt)
    assert log_abs_z_sq.dtype == arg_z.dtype == torch.float64
    modulus = torch.exp(0.5 * log_abs_z_sq)
    torch.testing.assert_close(modulus * torch.cos(arg_z), a, rtol=0, atol=1e-13)
    torch.testing.assert_close(modulus * torch.sin(arg_z), b, rtol=0, atol=1e-13)
    torch.testing.assert_close(arg_z, arg, rtol=1e-12, atol=1e-15)  # no wrapping for α ≥ 0
    resolved = a.square() + b.square() > 1e-25
    torch.testing.assert_close(log_abs_z_sq[resolved], torch.log(a.square() + b.square())[resolved],
                               rtol=1e-10, atol=1e-15)
    assert (log_abs_z_sq <= 0).all() and (log_abs_z_sq >= -120).all()


# (name, α, ω, dt, r): the points where a naive form gives inf, NaN or NaN gradients
EDGES = [
    ("alpha_zero", 0.0, 0.3, 1.0, 0.7),
    ("alpha_and_omega_zero", 0.0, 0.0, 1.0, 0.7),
    ("omega_zero", 0.4, 0.0, 1.0, 0.7),
    ("z_zero", 0.5, 0.0, 4.0, 0.7),  # τα = 1 exactly
    ("z_zero_fast", 2.0, 0.0, 1.0, 0.7),  # τα = 1 exactly
    ("r_to_zero", 0.3, 0.2, 1.0, 1e-12),
    ("r_zero", 0.3, 0.2, 1.0, 0.0),
    ("dt_huge", 0.3, 0.2, 1e6, 0.7),
    ("dt_huge_alpha_zero", 0.0, 0.2, 1e6, 0.7),
    ("dt_tiny", 0.3, 0.2, 1e-8, 0.7),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,alpha,omega,dt,r", EDGES)
def test_finite_values_and_gradients(name, alpha, omega, dt, r, dtype):
    inputs = [torch.tensor([x], dtype=dtype, requires_grad=True) for x in (alpha, omega, dt, r)]
    out = scan_inputs(*inputs, C.gating_constant)
    log_abs_z_sq, _ = cayley_transition(*inputs[:3])
    for t in (*out, log_abs_z_sq):
        assert t.dtype == dtype and torch.isfinite(t).all()
    assert (out.log_decay <= 0).all() and (out.log_decay >= -60).all()
    assert ((out.value_scale >= 1e-3 * (1 - 1e-6)) & (out.value_scale <= 1)).all()
    grads = torch.autograd.grad(sum(t.sum() for t in out) + log_abs_z_sq.sum(), inputs)
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha,dt", [(0.5, 4.0), (2.0, 1.0), (0.125, 16.0)])
def test_phase_zero_with_zero_gradient_at_z_zero(alpha, dt, dtype):
    inputs = [torch.tensor([x], dtype=dtype, requires_grad=True) for x in (alpha, 0.0, dt)]
    _, arg_z = cayley_transition(*inputs)
    assert arg_z.item() == 0.0
    for g in torch.autograd.grad(arg_z.sum(), inputs):
        assert g.item() == 0.0


@pytest.mark.parametrize("omega_tau", [0.0, 1e-6, 1e-3, 0.1, 1.0, 10.0])
def test_slow_heads_fp32_relative_accuracy(omega_tau):
    """τα = 1e−6: |z|² = 1 − O(1e−6) must keep 5 significant digits of log|z|² in fp32."""
    alpha = torch.tensor([1e-6, 3e-7, 2e-6], dtype=torch.float32)
    dt = 2e-6 / alpha  # τα = 1e−6 (up to fp32 rounding of the inputs, shared by both runs)
    omega = 2 * omega_tau / dt
    r = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float32)
    def outputs(alpha, omega, dt, r):
        return [*cayley_transition(alpha, omega, dt),
                *scan_inputs(alpha, omega, dt, r, C.gating_constant)]

    fp64 = outputs(*(t.double() for t in (alpha, omega, dt, r)))
    for got, want in zip(outputs(alpha, omega, dt, r), fp64):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


def test_scan_inputs_formula_float64():
    alpha, omega, dt, r = grid(ALPHAS, OMEGAS, [1e-3, 0.7, 5.0], [1e-3, 0.5, 0.999])
    out = scan_inputs(alpha, omega, dt, r, C.gating_constant)
    log_abs_z_sq, arg_z = cayley_transition(alpha, omega, dt)
    log_decay = torch.clamp(C.gating_constant * r * 0.5 * log_abs_z_sq, min=-60)
    vp = torch.clamp(torch.sqrt(torch.clamp(1 - torch.exp(2 * log_decay), min=1e-6)), max=1)
    torch.testing.assert_close(out.log_decay, log_decay, rtol=1e-14, atol=0)
    torch.testing.assert_close(out.phase, arg_z, rtol=0, atol=0)
    torch.testing.assert_close(out.value_scale, vp, rtol=1e-9, atol=0)


def timestep_oracle(alpha, omega, log_dt_scale, dt_selection):
    """spec/model.md step 5, literally, in float64."""
    kappa = torch.log1p(torch.exp(log_dt_scale))
    dt_raw = kappa / (alpha + omega.abs() + C.dt_eps)
    dt_max = (2 - C.dt_margin) / (alpha + C.dt_eps)
    w = 1 / (1 + torch.exp(-(C.rotation_threshold - omega.abs()) / C.rotation_width))
    dt = w * torch.minimum(dt_raw, dt_max) + (1 - w) * dt_raw + torch.log1p(torch.exp(dt_selection))
    return torch.minimum(dt, dt_max), dt_max


def test_adaptive_timestep_formula_float64():
    alpha, omega, scale, sel = grid([0.0, 1e-3, 0.5, 20.0], [0.0, 0.05, -0.0884, 0.3, -5.0],
                                    [-3.0, 0.0, 4.0], [-10.0, 0.0, 3.0])
    dt = adaptive_timestep(alpha, omega, scale, sel, **STEP)
    want, _ = timestep_oracle(alpha, omega, scale, sel)
    assert dt.dtype == torch.float64
    torch.testing.assert_close(dt, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_dt_never_exceeds_dt_max(dtype):
    """Random and extreme inputs (dt_selection up to 1e6, κ up to e^30): 0 < dt ≤ dt_max, τα < 1."""
    g = torch.Generator().manual_seed(0)
    n = 4096
    alpha = torch.nn.functional.softplus(5 * torch.randn(n, generator=g))
    alpha[:64] = 0
    omega = 10 * torch.randn(n, generator=g)
    omega[64:128] = 0
    scale = 10 * torch.randn(n, generator=g)
    scale[:32] = 30
    sel = torch.cat([1e6 * torch.ones(n // 4), 1e3 * torch.randn(3 * n // 4, generator=g)])
    dt = adaptive_timestep(*(t.to(dtype) for t in (alpha, omega, scale, sel)), **STEP)
    assert dt.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    a = alpha.to(dtype).to(dt.dtype)
    dt_max = (2 - C.dt_margin) / (a + C.dt_eps)
    assert (dt > 0).all() and (dt <= dt_max).all()
    assert (0.5 * dt * a < 1).all()
    # the cap binds for a non-rotating head whatever the selection adds
    assert math.isclose(dt[0].item(), dt_max[0].item())


@pytest.mark.parametrize("dtype,expected", [(torch.bfloat16, torch.float32),
                                            (torch.float16, torch.float32),
                                            (torch.float32, torch.float32),
                                            (torch.float64, torch.float64)])
def test_dynamics_dtype(dtype, expected):
    x = torch.full((3,), 0.5, dtype=dtype)
    assert all(t.dtype == expected for t in cayley_transition(x, x, x))
    assert all(t.dtype == expected for t in scan_inputs(x, x, x, x, 2.0))
    assert adaptive_timestep(x, x, x, x, **STEP).dtype == expected
