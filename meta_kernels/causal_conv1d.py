"""Fake kernels of the causal conv1d + SiLU ops: output shapes and dtypes from input shapes alone.

x (B, T, E), rows possibly strided; y, grad_x contiguous (B, T, E); weight (E, W); bias (E);
conv state (N, E, W - 1), N = B, or the number of sequences of cu_seqlens.
"""

import torch


def _check_inputs(x, weight, bias):
    torch._check(x.dim() == 3, lambda: f"x: expected (B, T, E), got {tuple(x.shape)}")
    torch._check(weight.dim() == 2, lambda: f"weight: expected (E, W), got {tuple(weight.shape)}")
    torch._check(bias.dim() == 1, lambda: f"bias: expected (E,), got {tuple(bias.shape)}")


def _conv_state(x, weight, cu_seqlens):
    """An empty (N, E, W - 1) conv state in x's dtype."""
    n = x.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    return x.new_empty(n, x.shape[2], weight.shape[1] - 1)


def causal_conv1d_silu_fwd(x, weight, bias, cu_seqlens, initial_conv_state):
    _check_inputs(x, weight, bias)
    return x.new_empty(x.shape), _conv_state(x, weight, cu_seqlens)


def causal_conv1d_silu_bwd(grad_y, grad_final_conv_state, x, weight, bias, cu_seqlens,
                           initial_conv_state):
    _check_inputs(x, weight, bias)
    return (x.new_empty(x.shape), torch.empty_like(weight), torch.empty_like(bias),
            _conv_state(x, weight, cu_seqlens))
