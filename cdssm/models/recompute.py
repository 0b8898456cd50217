"""Selective activation recomputation: keep what the matmuls and custom ops return, recompute
the elementwise work (norms, casts, gates, the dynamics) in the backward.

A block's elementwise tensors are cheap to recompute (Inductor fuses the recomputation into the
backward's own kernels) but many and wide: kept, they are about half of a CD-SSM block's
activation memory (docs/benchmarks.md, "Where the block's memory goes").
"""

import functools

import torch
from torch.utils.checkpoint import (CheckpointPolicy, checkpoint,
                                    create_selective_checkpoint_contexts)

_aten = torch.ops.aten
# Outputs kept for the backward: the matmuls (float8's scaled matmul included) and every cdssm op
# (the scan and the conv are never run twice).
_KEPT = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default,
                   _aten._scaled_mm.default})


def _policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op in _KEPT or getattr(op, "namespace", None) == "cdssm":
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


_CONTEXT = functools.partial(create_selective_checkpoint_contexts, _policy)


def selective_recompute(fn, *args):
    """fn(*args), keeping for the backward only the outputs of matmuls and cdssm ops (non-reentrant
    ``torch.utils.checkpoint`` with a selective policy; compiles with ``fullgraph=True``)."""
    return checkpoint(fn, *args, use_reentrant=False, context_fn=_CONTEXT,
                      preserve_rng_state=False)  # the block draws no random numbers
