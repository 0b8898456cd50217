"""CDSSMConfig: the derived constants of spec/model.md's table, validation, serialisation."""

import math

import pytest

from cdssm.config import ABLATION_CHOICES, CDSSMConfig

SPEC_EXAMPLE = CDSSMConfig(768, 12, 1024, 50257)

# (property, value in the spec's table for d=768, n=12, Lc=1024, V=50257, half its last digit)
DERIVED = [
    ("d_inner", 1536, 0),
    ("head_dim", 64, 0),
    ("n_heads", 24, 0),
    ("chunk_size", 64, 0),
    ("conv_kernel", 4, 0),
    ("norm_groups", 32, 0),
    ("gating_constant", 6.931, 5e-4),
    ("metabolic_weight", 7.884e-4, 5e-8),
    ("dynamics_lr_ratio", 0.2041, 5e-5),
    ("timestep_base", 2.0 ** -7, 0),
    ("rotation_threshold", 0.08839, 5e-6),
    ("dt_margin", 0.125, 0),
    ("rotation_width", 0.01768, 5e-6),
    ("dt_eps", 0.78125, 0),
    ("rms_norm_eps", 1e-5, 0),
    ("group_norm_eps", 1e-5, 0),
    ("l2_norm_eps", 1e-6, 0),
]


@pytest.mark.parametrize("name,value,tol", DERIVED)
def test_spec_example(name, value, tol):
    assert getattr(SPEC_EXAMPLE, name) == pytest.approx(value, rel=0, abs=tol)


# (n_layers, ρ): min(0.5, 1/√(2n)) saturates at n = 1, 2
@pytest.mark.parametrize("n,rho", [(1, 0.5), (2, 0.5), (3, 1 / math.sqrt(6)), (48, 0.1020620726)])
def test_dynamics_lr_ratio(n, rho):
    assert CDSSMConfig(64, n, 128, 97).dynamics_lr_ratio == pytest.approx(rho)


def test_state_pairs_keyword_only_default_one():
    assert SPEC_EXAMPLE.state_pairs == 1
    assert CDSSMConfig(64, 2, 128, 97, state_pairs=4).state_pairs == 4
    with pytest.raises(TypeError):
        CDSSMConfig(64, 2, 128, 97, 4)


# (arguments, field the error must name)
INVALID = [
    (dict(d_model=48), "d_model"),  # E = 96 is not a multiple of 64
    (dict(d_model=0), "d_model"),
    (dict(d_model=64.0), "d_model"),
    (dict(n_layers=0), "n_layers"),
    (dict(n_layers=True), "n_layers"),
    (dict(context_length=1), "context_length"),
    (dict(context_length="1024"), "context_length"),
    (dict(vocab_size=1), "vocab_size"),
    (dict(state_pairs=0), "state_pairs"),
    (dict(state_pairs=1.5), "state_pairs"),
]


@pytest.mark.parametrize("change,field", INVALID)
def test_invalid_values(change, field):
    args = dict(d_model=64, n_layers=2, context_length=128, vocab_size=97) | change
    with pytest.raises(ValueError, match=field):
        CDSSMConfig(**args)


@pytest.mark.parametrize("config", [SPEC_EXAMPLE, CDSSMConfig(64, 2, 128, 97, state_pairs=8)])
def test_dict_roundtrip(config):
    values = config.to_dict()
    assert values == dict(d_model=config.d_model, n_layers=config.n_layers,
                          context_length=config.context_length, vocab_size=config.vocab_size,
                          state_pairs=config.state_pairs,
                          **{name: choices[0] for name, choices in ABLATION_CHOICES.items()})
    assert CDSSMConfig.from_dict(values) == config


@pytest.mark.parametrize("values", [
    dict(d_model=64, n_layers=2, context_length=128, vocab_size=97, n_heads=2),
    dict(d_model=64, n_layers=2, context_length=128),
])
def test_from_dict_rejects_unknown_or_missing(values):
    with pytest.raises(ValueError, match="values"):
        CDSSMConfig.from_dict(values)
