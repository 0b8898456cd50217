"""causal_conv1d_silu CUDA kernels against the CPU kernel (float64 on the same rounded inputs),
determinism of the weight gradients, and opcheck on CUDA."""

import pytest
import torch

import cdssm.ops  # noqa: F401  (loads the op library)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

OPS = torch.ops.cdssm
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}

# (B, T, E, W, sequence lengths or None): the model's width over vectorised channels, E not a
# multiple of the vector width, W = 1 and W > 4, decode (T = 1), varlen with empty sequences.
CASES = [
    (2, 300, 1536, 4, None),
    (2, 9, 5, 4, None),
    (3, 6, 3, 1, None),
    (2, 100, 64, 8, None),
    (64, 1, 1536, 4, None),
    (1, 10, 64, 4, [3, 0, 1, 6]),
    (1, 500, 256, 3, [0, 200, 7, 0, 293]),
]


def inputs(B, T, E, W, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    return (randn(B, T, E), randn(E, W, scale=0.5), randn(E, scale=0.5), randn(N, E, W - 1),
            randn(B, T, E), randn(N, E, W - 1))


def _rel(out, ref):
    return ((out.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def _cu(lengths):
    return None if lengths is None else torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(),
                                                     dtype=torch.int32)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("B,T,E,W,lengths", CASES)
def test_cuda_matches_cpu(B, T, E, W, lengths, with_state, dtype):
    cu = _cu(lengths)
    N = B if cu is None else len(lengths)
    x, w, b, s0, gy, gf = inputs(B, T, E, W, N, dtype)
    s0 = s0 if with_state else None
    f64 = [None if t is None else t.double() for t in (x, w, b, s0)]
    ref = OPS.causal_conv1d_silu_fwd(*f64[:3], cu, f64[3])
    ref_grads = OPS.causal_conv1d_silu_bwd(gy.double(), gf.double(), *f64[:3], cu, f64[3])
    dev = [None if t is None else t.cuda() for t in (x, w, b, s0)]
    cu_d = None if cu is None else cu.cuda()
    out = OPS.causal_conv1d_silu_fwd(*dev[:3], cu_d, dev[3])
    grads = OPS.causal_conv1d_silu_bwd(gy.cuda(), gf.cuda(), *dev[:3], cu_d, dev[3])
    for name, a, r in zip("y final dx dweight dbias dinitial".split(), (*out, *grads), (*ref, *ref_grads)):
        assert a.shape == r.shape and a.dtype == dtype, name
        assert _rel(a, r) <= TOLERANCE[dtype], name


# name -> (B, T, 3E) buffer of x's rows, and the column where x starts: the model's slice of the
# input projection (16-byte aligned rows, vectorised), and rows one element off (scalar path).
ROW_LAYOUTS = {"in_proj": lambda E: (3 * E, E), "offset_by_one": lambda E: (E + 1, 1)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("layout", list(ROW_LAYOUTS))
def test_cuda_row_strided_x_equals_contiguous(layout, dtype):
    """x read in place from wider rows gives the contiguous x's outputs and gradients bit for bit."""
    B, T, E, W = 2, 300, 1536, 4
    x, w, b, s0, gy, gf = (t.cuda() for t in inputs(B, T, E, W, B, dtype))
    width, col = ROW_LAYOUTS[layout](E)
    wide = torch.randn(B, T, width, device="cuda").to(dtype)
    wide[..., col:col + E] = x
    strided = wide[..., col:col + E]
    outs = (*OPS.causal_conv1d_silu_fwd(x, w, b, None, s0),
            *OPS.causal_conv1d_silu_bwd(gy, gf, x, w, b, None, s0))
    outs_s = (*OPS.causal_conv1d_silu_fwd(strided, w, b, None, s0),
              *OPS.causal_conv1d_silu_bwd(gy, gf, strided, w, b, None, s0))
    for name, a, r in zip("y final dx dweight dbias dinitial".split(), outs_s, outs):
        assert torch.equal(a, r), name


def test_cuda_weight_gradients_are_deterministic():
    x, w, b, s0, gy, gf = (t.cuda() for t in inputs(1, 8192, 1536, 4, 1, torch.bfloat16))
    first = OPS.causal_conv1d_silu_bwd(gy, gf, x, w, b, None, s0)
    for _ in range(3):
        for a, r in zip(OPS.causal_conv1d_silu_bwd(gy, gf, x, w, b, None, s0), first):
            assert torch.equal(a, r)


@pytest.mark.parametrize("bad", [[1, 12], [0, 5, 11], [0, 7, 5, 12]])
def test_cuda_invalid_cu_seqlens_give_nan(bad):
    x, w, b = (t.cuda() for t in inputs(1, 12, 16, 4, 1, torch.float32)[:3])
    y, final = OPS.causal_conv1d_silu_fwd(x, w, b, torch.tensor(bad, dtype=torch.int32, device="cuda"), None)
    assert torch.isnan(y).all() and torch.isnan(final).all()


@pytest.mark.parametrize("packed", [False, True])
def test_cuda_opcheck(packed):
    B, N = (1, 3) if packed else (2, 2)
    cu = torch.tensor([0, 5, 5, 19], dtype=torch.int32, device="cuda") if packed else None
    x, w, b, s0, gy, gf = (t.cuda() for t in inputs(B, 19, 6, 4, N, torch.float64))
    args = [t.requires_grad_() for t in (x, w, b)]
    torch.library.opcheck(OPS.causal_conv1d_silu_fwd.default, (*args, cu, s0.requires_grad_()))
    torch.library.opcheck(OPS.causal_conv1d_silu_bwd.default,
                          (gy, gf, x.detach(), w.detach(), b.detach(), cu, s0.detach()))
