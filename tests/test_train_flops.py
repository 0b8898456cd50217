"""Model FLOPs per token: 6·N plus the sequence-mixing term of each architecture, by hand."""

import pytest

from cdssm.config import CDSSMConfig
from cdssm.models.cdssm import CDSSMForCausalLM
from cdssm.models.parameters import count_parameters
from cdssm.models.transformer import TransformerConfig, TransformerForCausalLM
from cdssm.training.flops import model_flops_per_token


def _scan(n, H, C, D, P):
    """3·n·H·(6CD + ⅔C² + P(16C + 12D)), written out term by term."""
    products = 3 * (2 * C * D)          # K Kᵀ, Q Kᵀ, W
    inverse = 2 * C * C / 3             # T_real
    per_pair = 2 * (8 * C) + 3 * (4 * D)  # u_loc, (QKᵀ⊙E)u; W s, Kᵀ(E⊙u), Q s
    return 3 * n * H * (products + inverse + P * per_pair)


@pytest.mark.parametrize("arch, d, n, L, P, mixing", [
    # cdssm: H = 2d/64 heads of D = 64; the chunk is min(64, L)
    ("cdssm", 64, 2, 128, 1, _scan(2, 2, 64, 64, 1)),
    ("cdssm", 128, 3, 32, 4, _scan(3, 4, 32, 64, 4)),
    ("transformer", 64, 2, 128, 1, 6 * 2 * 128 * 64),
    ("transformer", 128, 1, 2048, 1, 6 * 1 * 2048 * 128),
])
def test_flops_per_token(arch, d, n, L, P, mixing):
    if arch == "cdssm":
        model = CDSSMForCausalLM(CDSSMConfig(d, n, L, 256, state_pairs=P))
    else:
        model = TransformerForCausalLM(TransformerConfig(d, n, L, 256))
    params = count_parameters(model)["total"]  # the tied head once
    assert params == sum(p.numel() for p in model.parameters())
    assert model_flops_per_token(model, L) == pytest.approx(6 * params + mixing, rel=1e-12)


def test_flops_rejects_bad_input():
    model = TransformerForCausalLM(TransformerConfig(64, 1, 16, 256))
    with pytest.raises(ValueError, match="seq_len: expected an int >= 1"):
        model_flops_per_token(model, 0)
    with pytest.raises(ValueError, match="model: expected a cdssm or transformer LM"):
        model_flops_per_token(model.lm_head, 16)
