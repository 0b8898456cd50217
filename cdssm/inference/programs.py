"""The two programs of generation, as modules: prefill and the decode step of a causal LM.

They are what every path runs: ``ModelRunner`` calls them eagerly, ``CUDAGraphStep`` captures
the decode step, and ``cdssm export`` hands them to ``torch.export``.
"""

import torch
from torch import nn


class PrefillProgram(nn.Module):
    """(input_ids (1, T), cu_seqlens (N + 1,) int32) → (logits (N, V), state after each prompt):
    the N packed prompts from a zero state, logits only at each prompt's last token."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor):
        state = self.model.init_state(cu_seqlens.shape[0] - 1, device=input_ids.device)
        out = self.model(input_ids, cu_seqlens=cu_seqlens, state=state,
                         logit_positions=cu_seqlens[1:] - 1)
        return out.logits[0], out.state


class DecodeProgram(nn.Module):
    """(tokens (N,), state) → (logits (N, V), next state): one step per sequence."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, state):
        out = self.model(tokens[:, None], state=state)
        return out.logits[:, -1], out.state
