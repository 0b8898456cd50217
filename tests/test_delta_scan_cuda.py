"""chunk_delta_scan CUDA kernels against the CPU kernel (float64 on the same rounded inputs)."""

import pytest
import torch

import cdssm.ops  # noqa: F401  (loads the op library)

from scan_cases import (assert_close_by_name, cu_seqlens_from_lengths, make_cotangents,
                        make_inputs, raw_rows, token_rows)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

OPS = torch.ops.cdssm
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 1.5e-2}

# (B, T, H, D, P, chunk_size, decay, sequence lengths or None)
CASES = [
    (2, 50, 2, 16, 1, 16, "random", None),
    (1, 64, 3, 8, 2, 32, "near_one", None),
    (1, 40, 2, 8, 2, 16, "zero", None),
    (2, 7, 2, 8, 8, 64, "random", None),
    (1, 129, 1, 64, 1, 64, "random", None),
    (2, 300, 2, 64, 4, 64, "random", None),
    (1, 63, 2, 8, 8, 16, "small", [5, 0, 40, 17, 1]),
    (1, 400, 2, 64, 2, 64, "random", [100, 0, 230, 64, 6]),
    # ≥ 128 chunks in few chains: the two-level state chain (segments of ⌈√chunks⌉ chunks, the
    # last one partial; an empty sequence and one shorter than a segment)
    (2, 1100, 2, 16, 2, 8, "near_one", None),
    (1, 1500, 2, 16, 2, 8, "random", [700, 0, 13, 787]),
    (1, 8320, 1, 64, 1, 64, "near_one", None),
]


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("B,T,H,D,P,C,decay,lengths", CASES)
def test_cuda_matches_cpu(B, T, H, D, P, C, decay, lengths, dtype):
    cu = cu_seqlens_from_lengths(lengths)
    N = B if cu is None else len(lengths)
    args = make_inputs(B, T, H, D, P, dtype=dtype, decay=decay, initial_state=True, n_states=N)
    grad_o, grad_final = make_cotangents(B, T, H, D, P, N, dtype=dtype, state_dtype=args[4].dtype)
    ref64 = [t.double() for t in args]
    ref = OPS.chunk_delta_scan_fwd(*ref64, cu, C)
    ref_grads = OPS.chunk_delta_scan_bwd(grad_o.double(), grad_final.double(), *ref64[:6], ref[2], cu, C)
    dev = [t.cuda() for t in args]
    cu_d = None if cu is None else cu.cuda()
    out = OPS.chunk_delta_scan_fwd(*dev, cu_d, C)
    grads = OPS.chunk_delta_scan_bwd(grad_o.cuda(), grad_final.cuda(), *dev[:6], out[2], cu_d, C)
    assert out[0].dtype == dtype and out[1].dtype == args[4].dtype
    names = "o final boundary energy dq dk dv dbeta dlog_decay dphase dinitial".split()
    assert_close_by_name(names, (*out, *grads), (*ref, *ref_grads), TOLERANCE[dtype])


def test_cuda_public_function_and_autograd():
    args = make_inputs(1, 90, 2, 32, 2, dtype=torch.float64, initial_state=True)
    cpu = [t.clone().requires_grad_() for t in args]
    gpu = [t.cuda().requires_grad_() for t in args]
    o_c, f_c = cdssm.ops.chunk_delta_scan(*cpu, output_final_state=True)
    o_g, f_g = cdssm.ops.chunk_delta_scan(*gpu, output_final_state=True)
    (o_c.square().sum() + f_c.sum()).backward()
    (o_g.square().sum() + f_g.sum()).backward()
    torch.testing.assert_close(o_g.cpu(), o_c, rtol=0, atol=1e-10)
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=0, atol=1e-9)


@pytest.mark.parametrize("bad", [[1, 12], [0, 5, 11], [0, 7, 5, 12]])
def test_cuda_invalid_cu_seqlens_give_nan(bad):
    """cu_seqlens are validated on the device without a host sync: invalid offsets poison every
    output with NaN instead of raising."""
    args = [t.cuda() for t in make_inputs(1, 12, 2, 8, 1, dtype=torch.float32)[:6]]
    o, final, _, energy = OPS.chunk_delta_scan_fwd(*args, None, torch.tensor(bad, dtype=torch.int32,
                                                                             device="cuda"), 8)
    assert torch.isnan(o).all() and torch.isnan(final).all() and torch.isnan(energy).all()


@pytest.mark.parametrize("packed", [False, True])
def test_cuda_opcheck(packed):
    B, N = (1, 3) if packed else (2, 2)
    cu = torch.tensor([0, 5, 5, 19], dtype=torch.int32, device="cuda") if packed else None
    args = [t.cuda().requires_grad_() for t in make_inputs(B, 19, 2, 8, 2, dtype=torch.float32,
                                                           initial_state=True, n_states=N)]
    torch.library.opcheck(OPS.chunk_delta_scan_fwd.default, (*args, cu, 8))
    det = [t.detach() for t in args]
    o, final, boundary, _ = OPS.chunk_delta_scan_fwd(*det, cu, 8)
    torch.library.opcheck(OPS.chunk_delta_scan_bwd.default,
                          (torch.randn_like(o), torch.randn_like(final), *det[:6], boundary, cu, 8))


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("lengths", [None, [100, 0, 230, 64, 6]])
def test_cuda_l2_norm_token_rows_matches_cpu(lengths, dtype):
    """The model's call: raw q, k read in place from projection rows and normalised inside the
    kernels, against the CPU kernel in float64 (tested against explicit normalisation)."""
    cu = cu_seqlens_from_lengths(lengths)
    B, T, N = (2, 300, 2) if cu is None else (1, 400, len(lengths))
    args = make_inputs(B, T, 2, 64, 2, dtype=dtype, initial_state=True, n_states=N)
    args[:2] = [raw_rows(t, seed) for t, seed in zip(args[:2], (5, 6))]
    grad_o, grad_final = make_cotangents(B, T, 2, 64, 2, N, dtype=dtype, state_dtype=args[4].dtype)
    ref64 = [t.double() for t in args]
    ref = OPS.chunk_delta_scan_fwd(*ref64, cu, 64, 1e-6)
    ref_grads = OPS.chunk_delta_scan_bwd(grad_o.double(), grad_final.double(), *ref64[:6], ref[2],
                                         cu, 64, 1e-6)
    dev = [t.cuda() for t in args]
    dev[:2] = [token_rows(t, seed) for t, seed in zip(dev[:2], (7, 8))]
    cu_d = None if cu is None else cu.cuda()
    out = OPS.chunk_delta_scan_fwd(*dev, cu_d, 64, 1e-6)
    grads = OPS.chunk_delta_scan_bwd(grad_o.cuda(), grad_final.cuda(), *dev[:6], out[2], cu_d, 64,
                                     1e-6)
    assert grads[0].is_contiguous() and grads[1].is_contiguous()
    names = "o final boundary energy dq dk dv dbeta dlog_decay dphase dinitial".split()
    assert_close_by_name(names, (*out, *grads), (*ref, *ref_grads), TOLERANCE[dtype])


def test_cuda_opcheck_l2_norm_token_rows():
    args = [t.cuda() for t in make_inputs(2, 19, 2, 8, 2, dtype=torch.float32, initial_state=True)]
    args[:2] = [token_rows(raw_rows(t, seed), seed) for t, seed in zip(args[:2], (1, 2))]
    args = [t.requires_grad_() for t in args]
    torch.library.opcheck(OPS.chunk_delta_scan_fwd.default, (*args, None, 8, 1e-6))
    det = [t.detach() for t in args]
    o, final, boundary, _ = OPS.chunk_delta_scan_fwd(*det, None, 8, 1e-6)
    torch.library.opcheck(OPS.chunk_delta_scan_bwd.default,
                          (torch.randn_like(o), torch.randn_like(final), *det[:6], boundary, None,
                           8, 1e-6))
