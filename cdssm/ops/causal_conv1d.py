"""Depthwise causal conv1d + SiLU as a custom op: ``causal_conv1d_silu`` (model step 3).

Per sequence of length L, channel e, with the extended input ext = (initial conv state ++ x),
W − 1 + L positions (the state is zeros when none is given):

    y_t[e] = SiLU(bias[e] + Σ_{i=0}^{W−1} weight[e, i] · ext[t + i, e]),    SiLU(z) = z·σ(z)
    final conv state[e, j] = ext[L + j, e],   j = 0 .. W − 2 (oldest first)

so x_t sits at ext[t + W − 1] and y_t sees x_{t−W+1} .. x_t. With ``cu_seqlens`` every packed
sequence is convolved on its own, from its own initial state row: no window crosses a boundary.
"""

from typing import Optional

import torch

from . import _library  # noqa: F401  (loads the op library)
from ._checks import ACTIVATION_DTYPES, check_tensor, expect, prepare_cu_seqlens, state_dtype
from .reference import sequence_spans

_ops = torch.ops.cdssm


def causal_conv1d_silu_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    cu_seqlens: Optional[torch.Tensor] = None,
    initial_conv_state: Optional[torch.Tensor] = None,
):
    """Pure-PyTorch spec of ``causal_conv1d_silu`` (eager only: reads ``cu_seqlens`` on the host).

    Same shapes and formula as ``causal_conv1d_silu``; computes in fp32 (fp64 for fp64 x),
    returns ``(y, final_conv_state)`` in x's dtype, differentiable in every float input.
    """
    B, T, E = x.shape
    W = weight.shape[1]
    acc = state_dtype(x.dtype)
    w, b = weight.to(acc), bias.to(acc)
    rows = [[] for _ in range(B)]
    finals = []
    for n, (row, start, end) in enumerate(sequence_spans(B, T, cu_seqlens)):
        if initial_conv_state is None:
            head = x.new_zeros(W - 1, E, dtype=acc)
        else:
            head = initial_conv_state[n].to(acc).T
        ext = torch.cat((head, x[row, start:end].to(acc)))  # (W − 1 + L, E)
        length = end - start
        z = b + sum(w[:, i] * ext[i:i + length] for i in range(W))
        rows[row].append(torch.nn.functional.silu(z))
        finals.append(ext[length:].T)
    y = torch.stack([torch.cat(parts) for parts in rows]) if B else x.new_zeros(0, T, E, dtype=acc)
    final = torch.stack(finals) if finals else x.new_zeros(0, E, W - 1, dtype=acc)
    return y.to(x.dtype), final.to(x.dtype)


def causal_conv1d_silu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    cu_seqlens: Optional[torch.Tensor] = None,
    initial_conv_state: Optional[torch.Tensor] = None,
    output_conv_state: bool = False,
):
    """Depthwise causal conv1d followed by SiLU, per channel e:

        y[b, t, e] = SiLU(bias[e] + Σ_{i=0}^{W−1} weight[e, i] · x[b, t − W + 1 + i, e])

    where inputs before a sequence's start come from its initial conv state (zeros without one).
    Accumulates in fp32 (fp64 for fp64 x); differentiable in x, weight, bias and the initial state.

    Args:
        x: (B, T, E) channels-last activations (bf16, fp16, fp32 or fp64); its rows may be
            strided (a slice of a wider projection is read in place).
        weight: (E, W) kernel, W >= 1 (4 in the model); cast to x's dtype.
        bias: (E,); cast to x's dtype.
        cu_seqlens: (N + 1,) int32 (or int64) offsets of packed sequences: 0, non-decreasing,
            ending at T (checked in the kernel); then B must be 1. No window crosses a boundary.
        initial_conv_state: (N, E, W − 1), N = B or the number of sequences: the W − 1 inputs
            before each sequence, oldest first; cast to x's dtype.
        output_conv_state: return the final conv state.

    Returns:
        ``(y, final_conv_state)`` — y (B, T, E) in x's dtype; final_conv_state (N, E, W − 1) in
        x's dtype (the last W − 1 inputs of each sequence, oldest first, reaching into the initial
        state for sequences shorter than W − 1), or None unless ``output_conv_state``.
    """
    expect(isinstance(x, torch.Tensor), "x", "a torch.Tensor", type(x).__name__)
    expect(x.dim() == 3, "x", "shape (B, T, E)", tuple(x.shape))
    expect(x.dtype in ACTIVATION_DTYPES, "x", lambda: f"a dtype in {ACTIVATION_DTYPES}", x.dtype)
    B, _, E = x.shape
    for name, t in (("weight", weight), ("bias", bias)):
        check_tensor(t, name, x, "x")
        expect(t.is_floating_point(), name, "a floating-point tensor", t.dtype)
    expect(weight.dim() == 2 and weight.shape[0] == E and weight.shape[1] >= 1, "weight",
            lambda: f"shape ({E}, W) with W >= 1", tuple(weight.shape))
    expect(tuple(bias.shape) == (E,), "bias", lambda: f"shape ({E},)", tuple(bias.shape))
    W = weight.shape[1]

    if cu_seqlens is not None:
        cu_seqlens = prepare_cu_seqlens(cu_seqlens, x, "x")
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    if initial_conv_state is not None:
        check_tensor(initial_conv_state, "initial_conv_state", x, "x")
        expect(initial_conv_state.is_floating_point(), "initial_conv_state",
                "a floating-point tensor", initial_conv_state.dtype)
        expect(tuple(initial_conv_state.shape) == (N, E, W - 1), "initial_conv_state",
                lambda: f"shape ({N}, {E}, {W - 1}) (N = "
                f"{'number of sequences' if cu_seqlens is not None else 'batch'})",
                tuple(initial_conv_state.shape))
        initial_conv_state = initial_conv_state.to(x.dtype).contiguous()

    # The kernels read strided rows: x, usually a slice of the input projection, is read in
    # place (and kept so for the backward) rather than copied. Only a channel stride other than 1
    # makes a copy (a copy, not contiguous(), which on a (N, 1, E) slice would guard on N == 1
    # and stop torch.export from keeping the decode batch dynamic).
    if x.stride(-1) != 1:
        x = x.clone(memory_format=torch.contiguous_format)
    y, final_conv_state = _ops.causal_conv1d_silu_fwd(
        x, weight.to(x.dtype).contiguous(), bias.to(x.dtype).contiguous(), cu_seqlens,
        initial_conv_state)
    return y, (final_conv_state if output_conv_state else None)


def _setup_context(ctx, inputs, output):
    x, weight, bias, cu_seqlens, initial_conv_state = inputs
    # The backward recomputes the pre-activation, so it needs every input (and nothing else).
    ctx.save_for_backward(x, weight, bias, cu_seqlens, initial_conv_state)
    ctx.has_initial_state = initial_conv_state is not None


def _backward(ctx, grad_y, grad_final_conv_state):
    x, weight, bias, cu_seqlens, initial_conv_state = ctx.saved_tensors
    grad_y = torch.zeros_like(x) if grad_y is None else grad_y.contiguous()
    if grad_final_conv_state is not None:
        grad_final_conv_state = grad_final_conv_state.contiguous()
    grad_x, grad_weight, grad_bias, grad_initial = _ops.causal_conv1d_silu_bwd(
        grad_y, grad_final_conv_state, x, weight, bias, cu_seqlens, initial_conv_state)
    return grad_x, grad_weight, grad_bias, None, (grad_initial if ctx.has_initial_state else None)


torch.library.register_autograd(
    "cdssm::causal_conv1d_silu_fwd", _backward, setup_context=_setup_context)
