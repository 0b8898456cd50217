"""recurrent_delta_scan CUDA kernels against the CPU kernel (float64 on the same rounded inputs),
the decode step under CUDA-graph capture, and opcheck on CUDA."""

import pytest
import torch

import cdssm.ops  # noqa: F401  (loads the op library)

from scan_cases import (assert_close_by_name, cu_seqlens_from_lengths, make_cotangents,
                        make_inputs)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

OPS = torch.ops.cdssm
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 1.5e-2}

# (B, T, H, D, P, decay, sequence lengths or None): decode (T = 1), small T, D > 64, P > 16
# (warps loop over pairs), varlen with empty sequences.
CASES = [
    (64, 1, 24, 64, 1, "random", None),
    (64, 1, 24, 64, 8, "random", None),
    (2, 50, 2, 16, 1, "random", None),
    (1, 64, 3, 8, 2, "near_one", None),
    (1, 40, 2, 8, 2, "zero", None),
    (1, 20, 2, 100, 3, "small", None),
    (1, 10, 2, 16, 20, "random", None),
    (1, 4, 3, 64, 2, "random", [1, 0, 1, 1, 1]),
    (1, 63, 2, 8, 8, "random", [5, 0, 40, 17, 1]),
]


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("B,T,H,D,P,decay,lengths", CASES)
def test_cuda_matches_cpu(B, T, H, D, P, decay, lengths, dtype):
    cu = cu_seqlens_from_lengths(lengths)
    N = B if cu is None else len(lengths)
    args = make_inputs(B, T, H, D, P, dtype=dtype, decay=decay, initial_state=True, n_states=N)
    grad_o, grad_final = make_cotangents(B, T, H, D, P, N, dtype=dtype, state_dtype=args[4].dtype)
    ref64 = [t.double() for t in args]
    ref = OPS.recurrent_delta_scan_fwd(*ref64, cu)
    ref_grads = OPS.recurrent_delta_scan_bwd(grad_o.double(), grad_final.double(), *ref64, cu)
    dev = [t.cuda() for t in args]
    cu_d = None if cu is None else cu.cuda()
    out = OPS.recurrent_delta_scan_fwd(*dev, cu_d)
    grads = OPS.recurrent_delta_scan_bwd(grad_o.cuda(), grad_final.cuda(), *dev, cu_d)
    assert out[0].dtype == dtype and out[1].dtype == args[4].dtype
    names = "o final dq dk dv dbeta dlog_decay dphase dinitial".split()
    assert_close_by_name(names, (*out, *grads), (*ref, *ref_grads), TOLERANCE[dtype])


def test_cuda_decode_step_replays_from_a_graph():
    """T = 1 with a state: no host sync and no allocation beyond outputs, so it captures."""
    args = [t.cuda() for t in make_inputs(64, 1, 24, 64, 2, dtype=torch.bfloat16, initial_state=True)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        OPS.recurrent_delta_scan_fwd(*args, None)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = OPS.recurrent_delta_scan_fwd(*args, None)
    for t in args:
        t.copy_(torch.rand_like(t.float()).to(t.dtype))
    graph.replay()
    for a, b in zip(captured, OPS.recurrent_delta_scan_fwd(*args, None)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [[1, 12], [0, 5, 11], [0, 7, 5, 12]])
def test_cuda_invalid_cu_seqlens_give_nan(bad):
    args = [t.cuda() for t in make_inputs(1, 12, 2, 8, 1, dtype=torch.float32)[:6]]
    cu = torch.tensor(bad, dtype=torch.int32, device="cuda")
    o, final = OPS.recurrent_delta_scan_fwd(*args, None, cu)
    assert torch.isnan(o).all() and torch.isnan(final).all()


@pytest.mark.parametrize("packed", [False, True])
def test_cuda_opcheck(packed):
    B, N = (1, 3) if packed else (2, 2)
    cu = torch.tensor([0, 5, 5, 19], dtype=torch.int32, device="cuda") if packed else None
    args = [t.cuda().requires_grad_() for t in make_inputs(B, 19, 2, 8, 2, initial_state=True, n_states=N)]
    torch.library.opcheck(OPS.recurrent_delta_scan_fwd.default, (*args, cu))
    det = [t.detach() for t in args]
    o, final = OPS.recurrent_delta_scan_fwd(*det, cu)
    torch.library.opcheck(OPS.recurrent_delta_scan_bwd.default,
                          (torch.randn_like(o), torch.randn_like(final), *det, cu))
