"""chunk_delta_scan and recurrent_delta_scan (CPU kernels) against the float64 oracle and autograd."""

import math

import pytest
import torch

from cdssm.ops import (chunk_delta_scan, chunk_delta_scan_reference, recurrent_delta_scan,
                       recurrent_delta_scan_reference)

from scan_cases import make_inputs, oracle, raw_rows, token_rows

SCANS = {
    "chunk": lambda *a, chunk_size=16, **kw: chunk_delta_scan(*a, chunk_size=chunk_size, **kw),
    "recurrent": lambda *a, chunk_size=None, **kw: recurrent_delta_scan(*a, **kw),
}


# (B, T, H, D, P, chunk_size, decay, initial_state)
FLOAT64_CASES = [
    (2, 50, 2, 16, 1, 16, "random", False),
    (2, 50, 2, 16, 1, 16, "random", True),
    (1, 64, 3, 8, 2, 32, "near_one", True),
    (1, 100, 2, 8, 1, 64, "small", True),
    (1, 40, 2, 8, 2, 16, "zero", True),
    (2, 7, 2, 8, 8, 64, "random", True),  # T < chunk
    (1, 129, 1, 64, 1, 64, "random", True),  # T not a multiple of the chunk, D = 64
    (1, 33, 2, 4, 8, 32, "near_one", False),
]


@pytest.mark.parametrize("B,T,H,D,P,C,decay,init", FLOAT64_CASES)
@pytest.mark.parametrize("scan", list(SCANS))
def test_matches_oracle_float64(scan, B, T, H, D, P, C, decay, init):
    q, k, v, beta, ld, ph, s0 = make_inputs(B, T, H, D, P, decay=decay, initial_state=init)
    o, final = SCANS[scan](q, k, v, beta, ld, ph, s0, chunk_size=C, output_final_state=True)
    o_ref, final_ref, _ = oracle(q, k, v, beta, ld, ph, s0)
    assert o.shape == (B, T, H, P, 2) and final.shape == (B, H, 2 * P, D)
    assert o.dtype == final.dtype == torch.float64
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("C", [16, 32, 64])
@pytest.mark.parametrize("P", [1, 2])
def test_state_energy(C, P):
    q, k, v, beta, ld, ph, s0 = make_inputs(2, 70, 2, 8, P, initial_state=True)
    _, _, energy = chunk_delta_scan(q, k, v, beta, ld, ph, s0, chunk_size=C, output_state_energy=True)
    _, _, energy_ref = oracle(q, k, v, beta, ld, ph, s0, chunk_size=C)
    assert energy.shape == (2, 2) and not energy.requires_grad
    torch.testing.assert_close(energy, energy_ref, rtol=1e-12, atol=0)


# (dtype, atol relative to the output scale)
LOW_PRECISION = [(torch.float32, 2e-5), (torch.bfloat16, 3e-2), (torch.float16, 5e-3)]


@pytest.mark.parametrize("dtype,tol", LOW_PRECISION)
@pytest.mark.parametrize("scan", list(SCANS))
def test_low_precision(scan, dtype, tol):
    args = make_inputs(2, 90, 2, 32, 2, dtype=dtype, decay="near_one", initial_state=True)
    o, final = SCANS[scan](*args, chunk_size=32, output_final_state=True)
    o_ref, final_ref, _ = oracle(*args)
    assert o.dtype == dtype and final.dtype == torch.float32
    scale = o_ref.abs().max().item()
    torch.testing.assert_close(o.double(), o_ref, rtol=0, atol=tol * scale)
    torch.testing.assert_close(final.double(), final_ref, rtol=0, atol=tol * final_ref.abs().max().item())


@pytest.mark.parametrize("P", [1, 2, 8])
@pytest.mark.parametrize("scan", list(SCANS))
def test_state_chaining(scan, P):
    q, k, v, beta, ld, ph, s0 = make_inputs(2, 75, 2, 8, P, initial_state=True)
    o, final = SCANS[scan](q, k, v, beta, ld, ph, s0, output_final_state=True)
    T1 = 29
    o1, mid = SCANS[scan](*(t[:, :T1] for t in (q, k, v, beta, ld, ph)), s0, output_final_state=True)
    o2, end = SCANS[scan](*(t[:, T1:] for t in (q, k, v, beta, ld, ph)), mid, output_final_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], 1), o, rtol=0, atol=1e-12)
    torch.testing.assert_close(end, final, rtol=0, atol=1e-12)


@pytest.mark.parametrize("P", [1, 2, 8])
@pytest.mark.parametrize("init", [False, True])
@pytest.mark.parametrize("scan", list(SCANS))
def test_varlen_equals_separate(scan, init, P):
    lengths = [5, 0, 40, 17, 1]
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    cu = torch.tensor(offsets, dtype=torch.int32)
    T = offsets[-1]
    q, k, v, beta, ld, ph, s0 = make_inputs(1, T, 2, 8, P, initial_state=init, n_states=len(lengths))
    o, final = SCANS[scan](q, k, v, beta, ld, ph, s0, cu_seqlens=cu, output_final_state=True)
    for n, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        o_n, final_n = SCANS[scan](*(t[:, a:b] for t in (q, k, v, beta, ld, ph)),
                                   None if s0 is None else s0[n:n + 1], output_final_state=True)
        torch.testing.assert_close(o[:, a:b], o_n, rtol=0, atol=1e-12)
        torch.testing.assert_close(final[n:n + 1], final_n, rtol=0, atol=1e-12)
    o_ref, final_ref, _ = oracle(q, k, v, beta, ld, ph, s0, cu_seqlens=offsets)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


def test_chunk_reference_matches_oracle():
    args = make_inputs(1, 45, 2, 8, 2, initial_state=True)
    o, final, energy = chunk_delta_scan_reference(*args, chunk_size=16)
    o_ref, final_ref, energy_ref = oracle(*args, chunk_size=16)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(energy, energy_ref, rtol=1e-10, atol=0)


def _weighted_loss(o, final, w_o, w_f):
    return (o * w_o).sum() + (final * w_f).sum()


# (B, T, H, D, P, C, decay, cu_seqlens)
GRAD_CASES = [
    (2, 23, 2, 8, 1, 8, "random", None),
    (1, 40, 1, 8, 2, 16, "near_one", None),
    (1, 30, 2, 4, 8, 8, "small", None),
    (1, 26, 1, 8, 2, 8, "random", [0, 9, 9, 26]),
]


@pytest.mark.parametrize("B,T,H,D,P,C,decay,cu", GRAD_CASES)
@pytest.mark.parametrize("scan", list(SCANS))
def test_gradients_match_autograd_reference(scan, B, T, H, D, P, C, decay, cu):
    """Every input gradient of the kernel equals autograd through the sequential reference."""
    cu = None if cu is None else torch.tensor(cu, dtype=torch.int32)
    N = B if cu is None else len(cu) - 1
    args = make_inputs(B, T, H, D, P, decay=decay, initial_state=True, n_states=N, requires_grad=True)
    gen = torch.Generator().manual_seed(1)
    w_o = torch.randn(B, T, H, P, 2, generator=gen, dtype=torch.float64)
    w_f = torch.randn(N, H, 2 * P, D, generator=gen, dtype=torch.float64)
    out = SCANS[scan](*args, cu_seqlens=cu, chunk_size=C, output_final_state=True)
    grads = torch.autograd.grad(_weighted_loss(*out, w_o, w_f), args)
    ref = recurrent_delta_scan_reference(*args, cu_seqlens=cu)
    grads_ref = torch.autograd.grad(_weighted_loss(*ref, w_o, w_f), args)
    for name, g, g_ref in zip("q k v beta log_decay phase initial_state".split(), grads, grads_ref):
        scale = g_ref.abs().max().item()
        assert (g - g_ref).abs().max().item() <= 1e-8 * max(scale, 1.0), name


@pytest.mark.parametrize("scan", list(SCANS))
@pytest.mark.parametrize("P,cu", [(1, None), (2, [0, 3, 3, 7])])
def test_gradcheck(scan, P, cu):
    cu = None if cu is None else torch.tensor(cu, dtype=torch.int32)
    B = 2 if cu is None else 1
    N = B if cu is None else len(cu) - 1
    args = make_inputs(B, 7, 1, 3, P, initial_state=True, n_states=N, requires_grad=True)

    def fn(*xs):
        return SCANS[scan](*xs, cu_seqlens=cu, chunk_size=3, output_final_state=True)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7)


def test_chunk_and_recurrent_gradients_agree_without_final_state():
    args = make_inputs(1, 50, 2, 8, 2, decay="near_one", requires_grad=True)[:6]
    w = torch.randn(1, 50, 2, 2, 2, dtype=torch.float64)
    g_chunk = torch.autograd.grad((chunk_delta_scan(*args)[0] * w).sum(), args)
    g_rec = torch.autograd.grad((recurrent_delta_scan(*args)[0] * w).sum(), args)
    for a, b in zip(g_chunk, g_rec):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_one_pair_layout_and_flattened_pairs():
    q, k, v, beta, ld, ph, s0 = make_inputs(2, 20, 2, 8, 1, initial_state=True)
    o5, f5 = chunk_delta_scan(q, k, v, beta, ld, ph, s0, output_final_state=True)
    o4, f4 = chunk_delta_scan(q, k, v[..., 0, :], beta, ld[..., 0], ph[..., 0], s0, output_final_state=True)
    assert o4.shape == (2, 20, 2, 2)
    torch.testing.assert_close(o4, o5[..., 0, :], rtol=0, atol=0)
    torch.testing.assert_close(f4, f5, rtol=0, atol=0)
    q, k, v, beta, ld, ph, _ = make_inputs(1, 20, 2, 8, 3)
    o_flat, _ = recurrent_delta_scan(q, k, v.flatten(3), beta, ld, ph)
    assert o_flat.shape == (1, 20, 2, 6)
    torch.testing.assert_close(o_flat, recurrent_delta_scan(q, k, v, beta, ld, ph)[0].flatten(3))


def test_non_contiguous_inputs():
    q, k, v, beta, ld, ph, _ = make_inputs(2, 30, 2, 8, 2)
    qt = q.transpose(0, 1).contiguous().transpose(0, 1)
    assert not qt.is_contiguous()
    torch.testing.assert_close(chunk_delta_scan(qt, k, v, beta, ld, ph)[0],
                               chunk_delta_scan(q, k, v, beta, ld, ph)[0], rtol=0, atol=0)


def test_nan_dynamics_propagate_to_their_head_only():
    """Documented behaviour: NaN in log_decay/phase is not checked (that would need a host
    sync); it propagates to that sequence and head from that token on, and nowhere else."""
    q, k, v, beta, ld, ph, _ = make_inputs(2, 30, 2, 8, 1)
    ph = ph.clone()
    ph[0, 10, 1, 0] = math.nan
    o, _ = chunk_delta_scan(q, k, v, beta, ld, ph, chunk_size=8)
    assert torch.isnan(o[0, 10:, 1]).all()
    assert torch.isfinite(o[0, :10]).all() and torch.isfinite(o[1]).all() and torch.isfinite(o[0, :, 0]).all()


def test_empty_sequence_batch():
    q, k, v, beta, ld, ph, s0 = make_inputs(2, 0, 2, 8, 2, initial_state=True)
    o, final = chunk_delta_scan(q, k, v, beta, ld, ph, s0, output_final_state=True)
    assert o.shape == (2, 0, 2, 2, 2)
    torch.testing.assert_close(final, s0, rtol=0, atol=0)


def _bad(**changes):
    q, k, v, beta, ld, ph, s0 = make_inputs(1, 12, 2, 8, 1, initial_state=True)
    args = dict(q=q, k=k, v=v, beta=beta, log_decay=ld, phase=ph, initial_state=s0, cu_seqlens=None)
    args.update(changes)
    return args


BAD_INPUTS = [
    ("q", dict(q=torch.zeros(1, 12, 2)), ValueError, "q: expected shape"),
    ("k shape", dict(k=torch.zeros(1, 12, 2, 4, dtype=torch.float64)), ValueError, "k: expected shape"),
    ("k dtype", dict(k=torch.zeros(1, 12, 2, 8, dtype=torch.float32)), ValueError, "k: expected dtype"),
    ("q int", dict(q=torch.zeros(1, 12, 2, 8, dtype=torch.int64)), ValueError, "q: expected a dtype"),
    ("v", dict(v=torch.zeros(1, 12, 2, 3, dtype=torch.float64)), ValueError, "v: expected shape"),
    ("beta", dict(beta=torch.zeros(1, 12, dtype=torch.float64)), ValueError, "beta: expected shape"),
    ("log_decay", dict(log_decay=torch.zeros(1, 12, 3)), ValueError, "log_decay: expected shape"),
    ("phase", dict(phase=torch.zeros(1, 11, 2)), ValueError, "phase: expected shape"),
    ("state", dict(initial_state=torch.zeros(2, 2, 2, 8)), ValueError, "initial_state: expected shape"),
    ("cu float", dict(cu_seqlens=torch.tensor([0.0, 12.0]), initial_state=None), ValueError,
     "cu_seqlens: expected dtype"),
    ("cu start", dict(cu_seqlens=torch.tensor([1, 12], dtype=torch.int32), initial_state=None),
     RuntimeError, r"cu_seqlens: expected cu_seqlens\[0\] == 0"),
    ("cu end", dict(cu_seqlens=torch.tensor([0, 5, 11], dtype=torch.int32), initial_state=None),
     RuntimeError, r"cu_seqlens: expected cu_seqlens\[-1\] == T"),
    ("cu order", dict(cu_seqlens=torch.tensor([0, 7, 5, 12], dtype=torch.int32), initial_state=None),
     RuntimeError, "cu_seqlens: expected non-decreasing"),
    ("cu state rows", dict(cu_seqlens=torch.tensor([0, 5, 12], dtype=torch.int32)), ValueError,
     "initial_state: expected shape"),
]


@pytest.mark.parametrize("scan", list(SCANS))
@pytest.mark.parametrize("case,changes,error,match", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs(scan, case, changes, error, match):
    with pytest.raises(error, match=match):
        SCANS[scan](**_bad(**changes))


def test_bad_batch_with_cu_seqlens_and_chunk_size():
    q, k, v, beta, ld, ph, _ = make_inputs(2, 12, 2, 8, 1)
    with pytest.raises(ValueError, match="q: expected batch size 1"):
        chunk_delta_scan(q, k, v, beta, ld, ph, cu_seqlens=torch.tensor([0, 12], dtype=torch.int32))
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_delta_scan(q, k, v, beta, ld, ph, chunk_size=0)


def _op_samples():
    """(fwd args, chunk_size) for opcheck: with/without initial state, packed, several P."""
    cu = torch.tensor([0, 5, 5, 19], dtype=torch.int32)
    samples = []
    for dtype in (torch.float64, torch.float32):
        for P, init, packed in [(1, False, False), (2, True, False), (2, True, True), (8, False, True)]:
            B, N = (1, 3) if packed else (2, 2)
            q, k, v, beta, ld, ph, s0 = make_inputs(B, 19, 2, 8, P, dtype=dtype, initial_state=init,
                                                    n_states=N, requires_grad=True)
            samples.append((q, k, v, beta, ld, ph, s0, cu if packed else None))
    return samples


@pytest.mark.parametrize("sample", _op_samples())
def test_opcheck_chunk(sample):
    torch.library.opcheck(torch.ops.cdssm.chunk_delta_scan_fwd.default, (*sample, 8))
    q, k, v, beta, ld, ph, s0, cu = (None if t is None else t.detach() for t in sample)
    o, final, boundary, _ = torch.ops.cdssm.chunk_delta_scan_fwd(q, k, v, beta, ld, ph, s0, cu, 8)
    torch.library.opcheck(torch.ops.cdssm.chunk_delta_scan_bwd.default,
                          (torch.randn_like(o), torch.randn_like(final), q, k, v, beta, ld, ph,
                           boundary, cu, 8))


@pytest.mark.parametrize("sample", _op_samples())
def test_opcheck_recurrent(sample):
    torch.library.opcheck(torch.ops.cdssm.recurrent_delta_scan_fwd.default, sample)
    q, k, v, beta, ld, ph, s0, cu = (None if t is None else t.detach() for t in sample)
    o, final = torch.ops.cdssm.recurrent_delta_scan_fwd(q, k, v, beta, ld, ph, s0, cu)
    torch.library.opcheck(torch.ops.cdssm.recurrent_delta_scan_bwd.default,
                          (torch.randn_like(o), None, q, k, v, beta, ld, ph, s0, cu))


@pytest.mark.parametrize("scan", list(SCANS))
def test_compile_fullgraph_matches_eager(scan):
    torch._dynamo.reset()

    def step(q, k, v, beta, ld, ph, s0):
        o, final = SCANS[scan](q, k, v, beta, ld, ph, s0, output_final_state=True)
        return (o.square().sum() + final.square().sum())

    args = make_inputs(2, 40, 2, 8, 2, dtype=torch.float32, initial_state=True, requires_grad=True)
    eager = step(*args)
    g_eager = torch.autograd.grad(eager, args)
    compiled = torch.compile(step, fullgraph=True, dynamic=True)
    out = compiled(*args)
    g = torch.autograd.grad(out, args)
    torch.testing.assert_close(out, eager)
    for a, b in zip(g, g_eager):
        torch.testing.assert_close(a, b)


# (B, T, H, D, P, chunk_size, cu_seqlens, initial_state) for the in-kernel normalisation.
L2_CASES = [
    (2, 50, 2, 16, 1, 16, None, False),
    (1, 70, 2, 8, 2, 32, [0, 20, 20, 70], True),
    (2, 33, 3, 64, 8, 64, None, True),
]
L2_EPS = 1e-6


@pytest.mark.parametrize("B,T,H,D,P,C,cu,init", L2_CASES)
def test_l2_norm_in_kernel_equals_normalised_inputs(B, T, H, D, P, C, cu, init):
    """chunk_delta_scan(q, k, l2_norm_eps=eps) is the scan of the model's l2_normalize(q),
    l2_normalize(k): outputs, and gradients w.r.t. every input (the raw q, k included)."""
    from cdssm.models.cdssm import l2_normalize
    N = B if cu is None else len(cu) - 1
    q, k, v, beta, ld, ph, s0 = make_inputs(B, T, H, D, P, initial_state=init, n_states=N)
    q, k = raw_rows(q, 1), raw_rows(k, 2)
    cu = None if cu is None else torch.tensor(cu, dtype=torch.int32)
    inputs = [t if t is None else t.clone().requires_grad_() for t in (q, k, v, beta, ld, ph, s0)]

    def fused(q, k, *rest):
        return chunk_delta_scan(q, k, *rest, cu, chunk_size=C, output_final_state=True,
                                l2_norm_eps=L2_EPS)

    def explicit(q, k, *rest):
        return chunk_delta_scan(l2_normalize(q, L2_EPS), l2_normalize(k, L2_EPS), *rest, cu,
                                chunk_size=C, output_final_state=True)

    wrt = [t for t in inputs if t is not None]
    got, want = fused(*inputs), explicit(*inputs)
    grad_o, grad_final = torch.randn_like(want[0]), torch.randn_like(want[1])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, wrt, (grad_o, grad_final)),
                    torch.autograd.grad(want, wrt, (grad_o, grad_final))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_l2_norm_in_kernel_gradcheck():
    q, k, v, beta, ld, ph, s0 = make_inputs(1, 11, 2, 4, 2, initial_state=True)
    wrt = [t.requires_grad_() for t in (raw_rows(q, 1), raw_rows(k, 2), v, beta, ld, ph, s0)]

    def fn(*args):
        return chunk_delta_scan(*args, chunk_size=4, output_final_state=True, l2_norm_eps=1e-3)

    assert torch.autograd.gradcheck(fn, wrt)


@pytest.mark.parametrize("l2_norm_eps", [None, L2_EPS])
def test_token_rows_of_a_wider_projection_are_read_in_place(l2_norm_eps):
    """q, k as slices of wider projection rows: the contiguous tensors' outputs and gradients bit
    for bit, the gradients contiguous, and q, k themselves (not copies) kept for the backward."""
    q, k, v, beta, ld, ph, s0 = make_inputs(2, 40, 2, 8, 2, initial_state=True)
    q, k = raw_rows(q, 1), raw_rows(k, 2)
    q_rows, k_rows = token_rows(q, 3), token_rows(k, 4)
    assert not q_rows.is_contiguous() and torch.equal(q_rows, q)
    rest = [t.requires_grad_() for t in (v, beta, ld, ph, s0)]

    def run(q, k):
        return chunk_delta_scan(q, k, *rest, chunk_size=16, output_final_state=True,
                                l2_norm_eps=l2_norm_eps)

    q, k, q_rows, k_rows = (t.requires_grad_() for t in (q, k, q_rows, k_rows))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        got = run(q_rows, k_rows)
    assert any(t.data_ptr() == q_rows.data_ptr() and t.stride() == q_rows.stride() for t in saved)
    want = run(q, k)
    cot = (torch.randn_like(want[0]), torch.randn_like(want[1]))
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    g_rows = torch.autograd.grad(got, [q_rows, k_rows, *rest], cot)
    g = torch.autograd.grad(want, [q, k, *rest], cot)
    assert g_rows[0].is_contiguous() and g_rows[1].is_contiguous()
    for a, b in zip(g_rows, g):
        assert torch.equal(a, b)


def _l2_op_samples():
    """(fwd args) with raw token-row q, k, for opcheck of the ops with l2_norm_eps."""
    cu = torch.tensor([0, 5, 5, 19], dtype=torch.int32)
    samples = []
    for B, N, packed in [(2, 2, False), (1, 3, True)]:
        q, k, v, beta, ld, ph, s0 = make_inputs(B, 19, 2, 8, 2, initial_state=True, n_states=N)
        q, k = token_rows(raw_rows(q, 1), 3), token_rows(raw_rows(k, 2), 4)
        samples.append([t.requires_grad_() for t in (q, k, v, beta, ld, ph, s0)]
                       + [cu if packed else None])
    return samples


@pytest.mark.parametrize("sample", _l2_op_samples())
def test_opcheck_chunk_l2_normtoken_rows(sample):
    torch.library.opcheck(torch.ops.cdssm.chunk_delta_scan_fwd.default, (*sample, 8, L2_EPS))
    q, k, v, beta, ld, ph, s0, cu = (None if t is None else t.detach() for t in sample)
    o, final, boundary, _ = torch.ops.cdssm.chunk_delta_scan_fwd(q, k, v, beta, ld, ph, s0, cu, 8,
                                                                 L2_EPS)
    torch.library.opcheck(torch.ops.cdssm.chunk_delta_scan_bwd.default,
                          (torch.randn_like(o), torch.randn_like(final), q, k, v, beta, ld, ph,
                           boundary, cu, 8, L2_EPS))


@pytest.mark.parametrize("eps", [0.0, -1.0, math.nan, math.inf, True, "1e-6"])
def test_bad_l2_norm_eps(eps):
    with pytest.raises(ValueError, match="^l2_norm_eps: expected None or a finite float > 0"):
        chunk_delta_scan(*make_inputs(1, 12, 2, 8, 1), l2_norm_eps=eps)


# Direct calls of the op skip the Python checks: the kernel's TORCH_CHECKs name the argument.
OP_BAD_L2 = {
    "eps": (lambda a: a.update(l2_norm_eps=0.0), r"l2_norm_eps: expected a finite float > 0"),
    "q_d_stride": (lambda a: a.update(q=a["q"].transpose(2, 3).contiguous().transpose(2, 3)),
                   r"q: expected unit stride over D"),
    "k_batch_stride": (lambda a: a.update(k=a["k"].transpose(0, 1).contiguous().transpose(0, 1)),
                       r"k: expected unit stride over D, D over heads and one stride"),
}


@pytest.mark.parametrize("name", list(OP_BAD_L2))
def test_chunk_op_checks_name_the_argument(name):
    q, k, v, beta, ld, ph, _ = make_inputs(2, 12, 2, 8, 1)
    args = dict(q=q, k=k, v=v, beta=beta, ld=ld, ph=ph, s0=None, cu=None, chunk_size=8,
                l2_norm_eps=L2_EPS)
    change, match = OP_BAD_L2[name]
    change(args)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.cdssm.chunk_delta_scan_fwd(*args.values())
