"""Model FLOPs per training token, for throughput in model TFLOP/s and MFU.

A training step (forward + backward) of a model with N parameters (a tied embedding counted
once: it is the head's matmul) costs about 6·N FLOPs per token, plus the sequence mixing that
no parameter counts, with the backward taken as twice the forward:

  transformer  causal attention, QKᵀ and PV over on average L/2 keys per query:
               3 · n · (2 · 2 · d · L/2) = 6·n·L·d
  cdssm        the chunk scan's matrix products per head and token (spec/scan.md, C = chunk,
               D = head_dim, P = state pairs; a complex × real product is 2 real multiply-adds,
               complex × complex 4): K Kᵀ, Q Kᵀ and W = T_real·diag(β)·K, 2·C·D each; the
               triangular inverse, ⅔·C²; u_loc = (T_real ⊙ E)(β v) and (Q Kᵀ ⊙ E)·u, 8·C each
               per pair; W s, Kᵀ(E ⊙ u) and Q s, 4·D each per pair:
               3 · n · H · (6·C·D + ⅔·C² + P·(16·C + 12·D))

These are model FLOPs (the activation recomputation of checkpointing or of the chunked loss is
not counted). MFU = model FLOPs per second / the accelerator's dense bf16 peak.
"""

from torch import nn


def model_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token of ``model`` (a ``CDSSMForCausalLM`` or
    ``TransformerForCausalLM``) on sequences of ``seq_len`` tokens (see the module docstring)."""
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len: expected an int >= 1, got {seq_len!r}")
    arch = getattr(model, "arch", None)
    if arch not in ("cdssm", "transformer"):
        raise ValueError(f"model: expected a cdssm or transformer LM, got {type(model).__name__}")
    c = model.config
    params = sum(p.numel() for p in model.parameters())  # each shared tensor once
    if arch == "transformer":
        mixing = 6 * c.n_layers * seq_len * c.d_model
    else:
        C, D, P = min(c.chunk_size, seq_len), c.head_dim, c.state_pairs
        mixing = 3 * c.n_layers * c.n_heads * (6 * C * D + 2 * C * C / 3 + P * (16 * C + 12 * D))
    return 6.0 * params + mixing
