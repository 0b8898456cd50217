"""Rotary position embeddings (half-split layout).

For head dimension D and position p, pair i ∈ [0, D/2) of a query or key rotates by the angle
p·θ_i, θ_i = base^(−2i/D), where the pair is (x[i], x[i + D/2]):

    (x₁, x₂) ↦ (x₁ cos pθ − x₂ sin pθ,  x₂ cos pθ + x₁ sin pθ)

so q·k after rotation depends on the positions only through their difference.
"""

import torch


def rotary_tables(positions: torch.Tensor, head_dim: int, base: float,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of p·θ_i for ``positions`` (R, T) int64: each (R, 1, T, D/2) in ``dtype``
    (fp32, or fp64 for a fp64 model), ready to broadcast over heads."""
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim
    inv_freq = base ** -exponent
    angles = positions.to(dtype)[:, None, :, None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates x (B, H, T, D) by the tables of ``rotary_tables``; math in the tables' dtype,
    result in x's dtype."""
    x1, x2 = x.to(cos.dtype).chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
