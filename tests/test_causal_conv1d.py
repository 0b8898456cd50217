"""causal_conv1d_silu: the custom op against the float64 reference, varlen, state chaining,
gradients, opcheck, torch.compile, and input validation."""

import pytest
import torch

from cdssm.ops import causal_conv1d_silu, causal_conv1d_silu_reference

_ops = torch.ops.cdssm

# (B, T, E, W): typical; T < W; W = 1; T < W - 1; E over two channel blocks; T = 0.
SHAPES = [(2, 9, 5, 4), (1, 3, 70, 4), (3, 6, 3, 1), (2, 2, 4, 6), (1, 16, 130, 3), (2, 0, 4, 4)]
# Packed offsets (T = last): an empty sequence, a length-1 one, sequences shorter than W - 1.
CU_SEQLENS = [[0, 3, 3, 4, 10], [0, 0, 7], [0, 2, 9, 9], [0, 1, 2, 3]]
# dtype: (atol, rtol) of the kernel against the float64 reference on the same inputs.
LOW_PRECISION = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1e-2, 1e-2),
}


def make_inputs(B, T, E, W, *, cu=None, with_state=False, dtype=torch.float64, seed=0):
    """(x, weight, bias, cu_seqlens, initial_conv_state) with N = B, or len(cu) - 1 sequences."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    N = B if cu is None else len(cu) - 1
    cu_seqlens = None if cu is None else torch.tensor(cu, dtype=torch.int32)
    state = randn(N, E, W - 1) if with_state else None
    return randn(B, T, E), randn(E, W, scale=0.5), randn(E, scale=0.5), cu_seqlens, state


def packed_inputs(cu, *, with_state=False, E=5, W=4, dtype=torch.float64):
    return make_inputs(1, cu[-1], E, W, cu=cu, with_state=with_state, dtype=dtype)


def to_float64(inputs):
    """The reference's float64 copy of the inputs (cu_seqlens unchanged)."""
    return [t if t is None or not t.is_floating_point() else t.double() for t in inputs]


def run(x, weight, bias, cu_seqlens=None, initial_conv_state=None):
    return causal_conv1d_silu(x, weight, bias, cu_seqlens, initial_conv_state,
                              output_conv_state=True)


def assert_matches_reference(inputs, atol, rtol):
    """Kernel outputs on ``inputs`` vs the float64 reference on the same (rounded) values."""
    y, final = run(*inputs)
    y_ref, final_ref = causal_conv1d_silu_reference(*to_float64(inputs))
    assert y.dtype == inputs[0].dtype and final.dtype == inputs[0].dtype
    torch.testing.assert_close(y.double(), y_ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(final.double(), final_ref, atol=atol, rtol=rtol)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_float64(shape, with_state):
    assert_matches_reference(make_inputs(*shape, with_state=with_state), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("cu", CU_SEQLENS)
def test_varlen_matches_reference_float64(cu, with_state):
    assert_matches_reference(packed_inputs(cu, with_state=with_state), atol=1e-12, rtol=1e-12)


def grads_of(fn, inputs, grad_y, grad_final):
    """Gradients of <y, grad_y> + <final, grad_final> w.r.t. x, weight, bias and the state."""
    x, weight, bias, cu_seqlens, state = inputs
    leaves = [None if t is None else t.detach().requires_grad_() for t in (x, weight, bias, state)]
    y, final = fn(*leaves[:3], cu_seqlens, leaves[3])
    wrt = [t for t in leaves if t is not None]
    return torch.autograd.grad((y, final), wrt, (grad_y, grad_final))


@pytest.mark.parametrize("dtype", list(LOW_PRECISION))
@pytest.mark.parametrize("cu", [None, CU_SEQLENS[0]], ids=["batched", "varlen"])
def test_low_precision_matches_reference(dtype, cu):
    atol, rtol = LOW_PRECISION[dtype]
    inputs = (make_inputs(2, 12, 70, 4, with_state=True, dtype=dtype) if cu is None
              else packed_inputs(cu, with_state=True, E=70, dtype=dtype))
    assert_matches_reference(inputs, atol, rtol)

    y, final = run(*inputs)
    g = torch.Generator().manual_seed(1)
    grad_y = torch.randn(y.shape, generator=g).to(dtype)
    grad_final = torch.randn(final.shape, generator=g).to(dtype)
    expected = grads_of(causal_conv1d_silu_reference, to_float64(inputs), grad_y.double(),
                        grad_final.double())
    for got, want in zip(grads_of(run, inputs, grad_y, grad_final), expected):
        assert got.dtype == dtype
        # Parameter gradients sum over every position: scale the tolerance by their size.
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.double(), want, atol=atol * scale, rtol=rtol)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("cu", CU_SEQLENS)
def test_packed_equals_each_sequence_alone(cu, with_state):
    x, weight, bias, cu_seqlens, state = packed_inputs(cu, with_state=with_state)
    y, final = run(x, weight, bias, cu_seqlens, state)
    for n in range(len(cu) - 1):
        start, end = cu[n], cu[n + 1]
        y_n, final_n = run(x[:, start:end], weight, bias, None,
                           None if state is None else state[n:n + 1])
        torch.testing.assert_close(y[:, start:end], y_n, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(final[n:n + 1], final_n, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("split", [0, 1, 2, 5, 11])
def test_state_chaining_equals_one_pass(split, with_state):
    """conv(x[:split]) then conv(x[split:], initial = its final state) == conv(x)."""
    x, weight, bias, _, state = make_inputs(2, 11, 6, 4, with_state=with_state)
    y, final = run(x, weight, bias, None, state)
    y_head, mid = run(x[:, :split], weight, bias, None, state)
    y_tail, final_tail = run(x[:, split:], weight, bias, None, mid)
    torch.testing.assert_close(torch.cat((y_head, y_tail), dim=1), y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(final_tail, final, atol=1e-12, rtol=1e-12)


GRADCHECK_CASES = {
    "batched": dict(shape=(2, 5, 3, 4), cu=None, with_state=False),
    "batched_state": dict(shape=(2, 5, 3, 4), cu=None, with_state=True),
    "short_state": dict(shape=(2, 2, 3, 5), cu=None, with_state=True),
    "width_1": dict(shape=(2, 4, 3, 1), cu=None, with_state=True),
    "varlen_state": dict(shape=None, cu=[0, 3, 3, 4, 8], with_state=True),
    "varlen": dict(shape=None, cu=[0, 2, 6], with_state=False),
}


def case_inputs(case):
    if case["cu"] is None:
        return make_inputs(*case["shape"], with_state=case["with_state"])
    return packed_inputs(case["cu"], with_state=case["with_state"], E=3)


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck(case):
    """Float64 gradcheck of y and the final state w.r.t. x, weight, bias and the initial state."""
    x, weight, bias, cu_seqlens, state = case_inputs(GRADCHECK_CASES[case])
    wrt = [t.requires_grad_() for t in (x, weight, bias, state) if t is not None]

    def fn(*args):
        return run(*args[:3], cu_seqlens, args[3] if state is not None else None)

    assert torch.autograd.gradcheck(fn, wrt)


def test_backward_is_deterministic_across_thread_counts():
    inputs = make_inputs(4, 40, 200, 4, with_state=True, dtype=torch.float32)
    y, final = run(*inputs)
    grad_y, grad_final = torch.randn_like(y), torch.randn_like(final)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = grads_of(run, inputs, grad_y, grad_final)
        torch.set_num_threads(max(2, threads))
        parallel = grads_of(run, inputs, grad_y, grad_final)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(serial, parallel):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_opcheck_fwd(case):
    x, weight, bias, cu_seqlens, state = case_inputs(GRADCHECK_CASES[case])
    args = [t.requires_grad_() for t in (x, weight, bias)]
    state = None if state is None else state.requires_grad_()
    torch.library.opcheck(_ops.causal_conv1d_silu_fwd, (*args, cu_seqlens, state))


@pytest.mark.parametrize("with_grad_final", [False, True])
@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_opcheck_bwd(case, with_grad_final):
    x, weight, bias, cu_seqlens, state = case_inputs(GRADCHECK_CASES[case])
    y, final = run(x, weight, bias, cu_seqlens, state)
    grad_final = torch.randn_like(final) if with_grad_final else None
    torch.library.opcheck(_ops.causal_conv1d_silu_bwd,
                          (torch.randn_like(y), grad_final, x, weight, bias, cu_seqlens, state))


@pytest.mark.parametrize("cu", [None, CU_SEQLENS[0]], ids=["batched", "varlen"])
def test_compile_fullgraph_matches_eager(cu):
    """Forward and backward graphs through Inductor. The loss stays outside the compiled function
    so that Inductor generates no C++ kernels (a cold g++ build costs ~25 s on 2 cores)."""
    inputs = packed_inputs(cu, with_state=True) if cu else make_inputs(2, 9, 5, 4, with_state=True)
    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True)
    y, final = run(*inputs)
    y_c, final_c = compiled(*inputs)
    torch.testing.assert_close(y_c, y, atol=0, rtol=0)
    torch.testing.assert_close(final_c, final, atol=0, rtol=0)
    grad_y, grad_final = torch.randn_like(y), torch.randn_like(final)
    for got, want in zip(grads_of(compiled, inputs, grad_y, grad_final),
                         grads_of(run, inputs, grad_y, grad_final)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def _wide_rows(x):
    """x as the middle third of (B, T, 3E) rows: the model's slice of the input projection."""
    wide = torch.randn(*x.shape[:2], 3 * x.shape[2], dtype=x.dtype)
    wide[..., x.shape[2]:2 * x.shape[2]] = x
    return wide[..., x.shape[2]:2 * x.shape[2]]


# name -> x with the same values in another layout. Row strides are read in place; only a
# channel stride other than 1 is copied (by the Python wrapper).
LAYOUTS = {
    "wide_rows": _wide_rows,
    "time_major": lambda x: x.new_empty(x.shape[1], x.shape[0], x.shape[2]).transpose(0, 1).copy_(x),
    "offset_by_one": lambda x: torch.cat((x[..., :1], x), -1)[..., 1:],
    "channel_strided": lambda x: torch.stack((x, x), -1)[..., 0],
}


@pytest.mark.parametrize("cu", [None, CU_SEQLENS[0]], ids=["batched", "varlen"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_strided_x_equals_contiguous(layout, cu):
    """Same outputs and gradients, bit for bit, whatever x's layout; gradients are contiguous."""
    inputs = (packed_inputs(cu, with_state=True, E=6) if cu else
              make_inputs(3, 9, 6, 4, with_state=True))
    x, rest = inputs[0], inputs[1:]
    strided = LAYOUTS[layout](x)
    assert torch.equal(strided, x) and strided.stride() != x.stride()
    y, final = run(x, *rest)
    y_s, final_s = run(strided, *rest)
    assert torch.equal(y_s, y) and torch.equal(final_s, final) and y_s.is_contiguous()
    grad_y, grad_final = torch.randn_like(y), torch.randn_like(final)
    want = grads_of(run, inputs, grad_y, grad_final)
    got = grads_of(run, (strided, *rest), grad_y, grad_final)
    assert got[0].is_contiguous()
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_row_strided_x_is_saved_without_a_copy():
    """The op keeps x itself (a view of the wider rows) for its backward, not a copy of it."""
    x, weight, bias, _, state = make_inputs(2, 7, 4, 4, with_state=True)
    strided = _wide_rows(x).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        run(strided, weight, bias, None, state)
    assert any(t.untyped_storage().data_ptr() == strided.untyped_storage().data_ptr()
               and t.stride() == strided.stride() for t in saved)


@pytest.mark.parametrize("layout", ["wide_rows", "time_major"])
def test_opcheck_row_strided_x(layout):
    x, weight, bias, cu_seqlens, state = make_inputs(2, 6, 3, 4, with_state=True)
    strided = LAYOUTS[layout](x).requires_grad_()
    torch.library.opcheck(_ops.causal_conv1d_silu_fwd,
                          (strided, weight.requires_grad_(), bias.requires_grad_(), None,
                           state.requires_grad_()))
    y, final = run(strided, weight, bias, None, state)
    torch.library.opcheck(_ops.causal_conv1d_silu_bwd,
                          (torch.randn_like(y), torch.randn_like(final), strided.detach(),
                           weight.detach(), bias.detach(), None, state.detach()))


def _replace(inputs, **changes):
    names = ("x", "weight", "bias", "cu_seqlens", "initial_conv_state")
    args = dict(zip(names, inputs))
    args.update(changes)
    return args


# name -> (changes to make_inputs(1, 10, 5, 4, cu=[0, 4, 10], with_state=True), error, match).
BAD_INPUTS = {
    "x_rank": (dict(x=torch.zeros(10, 5, dtype=torch.float64)), ValueError, r"^x: .*\(B, T, E\)"),
    "x_dtype": (dict(x=torch.zeros(1, 10, 5, dtype=torch.int64)), ValueError, r"^x: .*dtype"),
    "weight_shape": (dict(weight=torch.zeros(6, 4, dtype=torch.float64)), ValueError, r"^weight: "),
    "weight_rank": (dict(weight=torch.zeros(5, 1, 4, dtype=torch.float64)), ValueError,
                    r"^weight: "),
    "weight_dtype": (dict(weight=torch.zeros(5, 4, dtype=torch.int32)), ValueError, r"^weight: "),
    "weight_device": (dict(weight=torch.zeros(5, 4, device="meta")), ValueError,
                      r"^weight: .*device"),
    "bias_shape": (dict(bias=torch.zeros(4, dtype=torch.float64)), ValueError, r"^bias: "),
    "state_shape": (dict(initial_conv_state=torch.zeros(2, 5, 4, dtype=torch.float64)), ValueError,
                    r"^initial_conv_state: .*\(2, 5, 3\)"),
    "state_dtype": (dict(initial_conv_state=torch.zeros(2, 5, 3, dtype=torch.int32)), ValueError,
                    r"^initial_conv_state: "),
    "cu_dtype": (dict(cu_seqlens=torch.tensor([0.0, 4.0, 10.0])), ValueError,
                 r"^cu_seqlens: .*int32"),
    "cu_rank": (dict(cu_seqlens=torch.tensor([[0, 4, 10]], dtype=torch.int32)), ValueError,
                r"^cu_seqlens: "),
    "cu_batch": (dict(x=torch.zeros(2, 10, 5, dtype=torch.float64)), ValueError,
                 r"^x: .*batch size 1 when cu_seqlens"),
    "cu_start": (dict(cu_seqlens=torch.tensor([1, 4, 10], dtype=torch.int32)), RuntimeError,
                 r"cu_seqlens: expected cu_seqlens\[0\] == 0"),
    "cu_decreasing": (dict(cu_seqlens=torch.tensor([0, 6, 4, 10], dtype=torch.int32),
                           initial_conv_state=None), RuntimeError, r"cu_seqlens: .*non-decreasing"),
    "cu_end": (dict(cu_seqlens=torch.tensor([0, 4, 9], dtype=torch.int32)), RuntimeError,
               r"cu_seqlens: expected cu_seqlens\[-1\] == T"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_raise_naming_the_argument(name):
    changes, error, match = BAD_INPUTS[name]
    args = _replace(make_inputs(1, 10, 5, 4, cu=[0, 4, 10], with_state=True), **changes)
    with pytest.raises(error, match=match):
        causal_conv1d_silu(**args)


# Direct calls of the op skip the Python checks: the kernels' TORCH_CHECKs name the argument.
OP_BAD_INPUTS = {
    "x_rank": (lambda a: a.update(x=a["x"][0]), r"x: expected \(B, T, E\)"),
    "x_channel_stride": (lambda a: a.update(x=a["x"].transpose(1, 2).contiguous().transpose(1, 2)),
                         r"x: expected unit stride over channels"),
    "weight_shape": (lambda a: a.update(weight=a["weight"][:4]), r"weight: expected \(E, W\)"),
    "weight_dtype": (lambda a: a.update(weight=a["weight"].float()), r"weight: expected x's dtype"),
    "bias_shape": (lambda a: a.update(bias=a["bias"][:4]), r"bias: expected \(E,\)"),
    "cu_int64": (lambda a: a.update(cu_seqlens=a["cu_seqlens"].long()), r"cu_seqlens: .*int32"),
    "state_shape": (lambda a: a.update(initial_conv_state=a["initial_conv_state"][:1]),
                    r"initial_conv_state: expected \(N, E, W - 1\)"),
}


@pytest.mark.parametrize("name", list(OP_BAD_INPUTS))
def test_op_checks_name_the_argument(name):
    change, match = OP_BAD_INPUTS[name]
    args = _replace(make_inputs(1, 10, 5, 4, cu=[0, 4, 10], with_state=True))
    change(args)
    with pytest.raises(RuntimeError, match=match):
        _ops.causal_conv1d_silu_fwd(*args.values())


@pytest.mark.parametrize("arg, bad, match", [
    ("grad_y", lambda y, f: y[:, :5], r"grad_y: expected x's shape"),
    ("grad_final_conv_state", lambda y, f: f[:, :, :2].contiguous(),
     r"grad_final_conv_state: expected \(N, E, W - 1\)"),
])
def test_bwd_op_checks_name_the_argument(arg, bad, match):
    x, weight, bias, cu_seqlens, state = make_inputs(1, 10, 5, 4, cu=[0, 4, 10], with_state=True)
    grads = dict(grad_y=torch.ones_like(x), grad_final_conv_state=torch.ones_like(state))
    grads[arg] = bad(grads["grad_y"], grads["grad_final_conv_state"])
    with pytest.raises(RuntimeError, match=match):
        _ops.causal_conv1d_silu_bwd(grads["grad_y"], grads["grad_final_conv_state"], x, weight,
                                    bias, cu_seqlens, state)
