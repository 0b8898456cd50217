"""The gated complex delta scans as custom ops: ``chunk_delta_scan`` and ``recurrent_delta_scan``.

Per head and pair (spec/scan.md), with z_t = exp(log_decay_t + i·phase_t), v^c = v[..., 0] + i·v[..., 1],
state rows s = S[2p] + i·S[2p+1]:

    s_t = z_t (s_{t−1} − β_t (s_{t−1}·k_t) k_t) + β_t v^c_t k_t,    y^c_t = s_t·q_t

The chunk op runs the exact chunked (WY/UT) form; the recurrent op the literal recurrence (test
oracle and the decode step). Both are differentiable in every tensor input (gradients come from
the ``*_bwd`` custom ops, so they trace under compile and export).
"""

import math
from typing import Optional

import torch

from . import _library  # noqa: F401  (loads the op library)
from ._checks import expect
from ._scan_inputs import check_chunk_size, finish_output, prepare_scan_inputs

_ops = torch.ops.cdssm


def chunk_delta_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor,
    phase: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
    chunk_size: int = 64,
    output_final_state: bool = False,
    output_state_energy: bool = False,
    l2_norm_eps: Optional[float] = None,
):
    """Exact chunked delta scan.

    Args:
        q, k: (B, T, H, D) unit-norm queries and keys (bf16, fp16, fp32 or fp64), or any rows
            with ``l2_norm_eps``. Token rows of a wider projection (unit stride over D and
            heads, e.g. a slice of a linear layer's output) are read in place, not copied.
        v: (B, T, H, P, 2) complex values per state pair; (B, T, H, 2) for one pair, or the
            flattened (B, T, H, 2P), in which case o comes back as (B, T, H, 2P).
        beta: (B, T, H) write strengths in (0, 1).
        log_decay, phase: (B, T, H, P) (or (B, T, H) for one pair): log|z| ≤ 0 and arg z.
        initial_state: (N, H, 2P, D), N = B, or the number of sequences with ``cu_seqlens``.
        cu_seqlens: (N + 1,) int32 offsets of packed sequences (B must be 1): states, never
            cross a boundary.
        chunk_size: tokens per chunk C (1..1024; 64 is the tuned value).
        output_final_state: return the state after each sequence's last token.
        output_state_energy: also return (N, H) fp32: the mean over each sequence's chunk ends of
            ‖S‖²_F (detached; the model's metabolic bookkeeping).
        l2_norm_eps: when given (a float > 0), the scan runs on x̂ = x / √(Σ_d x_d² + eps) of
            each row of q and k (computed in fp32 as the kernels load the rows, rounded to q's
            dtype; no normalised copy is stored) and the gradients flow to the raw rows.

    Returns:
        ``(o, final_state)`` — o (B, T, H, P, 2) in q's dtype, final_state (N, H, 2P, D) fp32
        (fp64 for fp64 inputs) or None — plus ``state_energy`` when ``output_state_energy``.

    Shapes, dtypes and devices are checked here (ValueError naming the argument); cu_seqlens
    contents inside the kernel (RuntimeError on CPU; on CUDA, where raising would need a host
    sync, every output becomes NaN). Values are not checked: a NaN or inf in the dynamics
    propagates to the outputs of its sequence and head from that token on, and nowhere else.
    """
    check_chunk_size(chunk_size)
    expect(l2_norm_eps is None or (isinstance(l2_norm_eps, (int, float))
                                   and not isinstance(l2_norm_eps, bool)
                                   and 0 < l2_norm_eps < math.inf),
           "l2_norm_eps", "None or a finite float > 0", l2_norm_eps)
    x = prepare_scan_inputs(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens,
                            token_rows_qk=True)
    o, final_state, _, energy = _ops.chunk_delta_scan_fwd(
        x.q, x.k, x.v, x.beta, x.log_decay, x.phase, x.initial_state, x.cu_seqlens, chunk_size,
        None if l2_norm_eps is None else float(l2_norm_eps))
    o = finish_output(o, x.flat_output)
    final_state = final_state if output_final_state else None
    if output_state_energy:
        return o, final_state, energy
    return o, final_state


def recurrent_delta_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor,
    phase: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
):
    """The literal step-by-step recurrence; same arguments and results as ``chunk_delta_scan``
    (without chunking or energy). O(1) per token in context length: T = 1 with a state is the
    decode step."""
    x = prepare_scan_inputs(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens)
    o, final_state = _ops.recurrent_delta_scan_fwd(
        x.q, x.k, x.v, x.beta, x.log_decay, x.phase, x.initial_state, x.cu_seqlens)
    return finish_output(o, x.flat_output), (final_state if output_final_state else None)


def _grads(ctx, grads):
    """Input gradients in the op's argument order (non-tensor and absent inputs get None)."""
    *tensor_grads, grad_initial = grads
    return (*tensor_grads, grad_initial if ctx.has_initial_state else None)


def _zeros_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _chunk_setup_context(ctx, inputs, output):
    q, k, v, beta, log_decay, phase, initial_state, cu_seqlens, chunk_size, l2_norm_eps = inputs
    ctx.save_for_backward(q, k, v, beta, log_decay, phase, output[2], cu_seqlens)
    ctx.has_initial_state = initial_state is not None
    ctx.chunk_size = chunk_size
    ctx.l2_norm_eps = l2_norm_eps


def _chunk_backward(ctx, grad_o, grad_final_state, _grad_boundary, _grad_energy):
    q, k, v, beta, log_decay, phase, boundary, cu_seqlens = ctx.saved_tensors
    grads = _ops.chunk_delta_scan_bwd(
        _zeros_if_none(grad_o, v), None if grad_final_state is None else grad_final_state.contiguous(),
        q, k, v, beta, log_decay, phase, boundary, cu_seqlens, ctx.chunk_size, ctx.l2_norm_eps)
    return (*_grads(ctx, grads), None, None, None)


def _recurrent_setup_context(ctx, inputs, output):
    q, k, v, beta, log_decay, phase, initial_state, cu_seqlens = inputs
    ctx.save_for_backward(q, k, v, beta, log_decay, phase, initial_state, cu_seqlens)
    ctx.has_initial_state = initial_state is not None


def _recurrent_backward(ctx, grad_o, grad_final_state):
    q, k, v, beta, log_decay, phase, initial_state, cu_seqlens = ctx.saved_tensors
    grads = _ops.recurrent_delta_scan_bwd(
        _zeros_if_none(grad_o, v), None if grad_final_state is None else grad_final_state.contiguous(),
        q, k, v, beta, log_decay, phase, initial_state, cu_seqlens)
    return (*_grads(ctx, grads), None)


torch.library.register_autograd(
    "cdssm::chunk_delta_scan_fwd", _chunk_backward, setup_context=_chunk_setup_context)
torch.library.register_autograd(
    "cdssm::recurrent_delta_scan_fwd", _recurrent_backward, setup_context=_recurrent_setup_context)
