"""What a causal LM's forward returns (a NamedTuple: a pytree that compile and export see through)."""

from typing import Any, NamedTuple, Optional

import torch
import torch.utils._pytree as pytree


class CausalLMOutput(NamedTuple):
    """Result of ``forward(input_ids, labels=None, cu_seqlens=None, state=None)``.

    logits: (B, T, V) in the activation dtype when no labels were given, else None.
    loss: scalar, mean cross-entropy + aux_loss, when labels were given, else None.
    aux_loss: scalar, λ_met · (mean over layers of the mean utility υ); zero for the Transformer.
    state_energy: (n_layers, H) fp32, detached: per block, the mean chunk-end ‖S‖²_F (CD-SSM only).
    mean_utility: (n_layers,) fp32, detached: per block, the mean of υ (CD-SSM only).
    state: the state after the last token (same type as the ``state`` argument) when a state
        was given, else None.
    """

    logits: Optional[torch.Tensor]
    loss: Optional[torch.Tensor]
    aux_loss: torch.Tensor
    state_energy: Optional[torch.Tensor]
    mean_utility: Optional[torch.Tensor]
    state: Optional[Any]


# A serialisable pytree node: torch.export and AOTInductor packages record the output structure
# by this name, so a process that loads a package must import cdssm first.
pytree._register_namedtuple(CausalLMOutput, serialized_type_name="cdssm.models.CausalLMOutput")


def check_logit_positions(logit_positions, labels) -> None:
    """``forward``'s logit_positions: None, or a 1-D int tensor of positions along T (no labels)."""
    if logit_positions is None:
        return
    if not (isinstance(logit_positions, torch.Tensor) and logit_positions.dim() == 1
            and logit_positions.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"logit_positions: expected a 1-D int tensor of positions, got "
                         f"{getattr(logit_positions, 'shape', type(logit_positions).__name__)}")
    if labels is not None:
        raise ValueError("logit_positions: only without labels (the loss needs every position)")
