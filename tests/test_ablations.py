"""Ablation switches (spec/model.md § Ablation switches): each changes what the spec says and
nothing else. Float64 models with shared weights; an ablated model is compared with a v1 model
that is made to behave identically where the spec says they agree."""

import dataclasses
import math

import pytest
import torch

from cdssm.config import ABLATION_CHOICES, CDSSMConfig
from cdssm.models import CDSSMForCausalLM
from cdssm.models.cdssm import ema_decay, spectral_band, spectral_dynamics_bias
from cdssm.ops.dynamics import fixed_timestep
from cdssm.training.config import TrainConfig, add_config_arguments, config_from_args

BASE = dict(d_model=64, n_layers=2, context_length=128, vocab_size=97)


def pair(**switches):
    """(v1 model, ablated model) in float64 with the v1 model's weights copied over."""
    torch.manual_seed(0)
    v1 = CDSSMForCausalLM(CDSSMConfig(**BASE)).double()
    ablated = CDSSMForCausalLM(CDSSMConfig(**BASE, **switches)).double()
    ablated.load_state_dict(v1.state_dict(), strict=False)
    return v1, ablated


def tokens(T, seed=1):
    return torch.randint(0, BASE["vocab_size"], (2, T), generator=torch.Generator().manual_seed(seed))


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("name, bad", [("scan", "approximate"), ("recurrence_gate", 0),
                                       ("adaptive_dt", "no"), ("spectral_init", None),
                                       ("utility", "beta"), ("metabolic", 1)])
def test_config_rejects_bad_switch(name, bad):
    with pytest.raises(ValueError, match=name):
        CDSSMConfig(**BASE, **{name: bad})


def test_defaults_are_v1_and_roundtrip():
    config = CDSSMConfig(**BASE)
    assert config.ablations() == {}
    assert {k: getattr(config, k) for k in ABLATION_CHOICES} == {
        k: c[0] for k, c in ABLATION_CHOICES.items()}
    ablated = CDSSMConfig(**BASE, scan="approx", metabolic=False)
    assert ablated.ablations() == {"scan": "approx", "metabolic": False}
    assert CDSSMConfig.from_dict(ablated.to_dict()) == ablated


def test_recurrence_gate_off_is_r_equal_one_over_c():
    """r ≡ 1/c: the v1 model with a constant gate σ(b) = 1/c gives the same logits."""
    v1, ablated = pair(recurrence_gate=False)
    assert ablated.blocks[0].recurrence_gate is None
    c = v1.config.gating_constant
    for block in v1.blocks:
        block.recurrence_gate.weight.data.zero_()
        block.recurrence_gate.bias.data.fill_(math.log((1 / c) / (1 - 1 / c)))
    ids = tokens(80)
    torch.testing.assert_close(logits(ablated, ids), logits(v1, ids), rtol=1e-10, atol=1e-10)
    n_gate = sum(p.numel() for p in v1.blocks[0].recurrence_gate.parameters())
    assert sum(p.numel() for p in v1.parameters()) - sum(
        p.numel() for p in ablated.parameters()) == n_gate * BASE["n_layers"]


def test_fixed_dt_formula_and_effect():
    log_dt_scale, selection = torch.randn(3, 1).double(), torch.randn(5, 3, 1).double()
    dt = fixed_timestep(log_dt_scale, selection)
    expected = torch.log1p(log_dt_scale.exp()) + torch.log1p(selection.exp())
    torch.testing.assert_close(dt, expected)
    v1, ablated = pair(adaptive_dt=False)
    assert [n for n, _ in v1.named_parameters()] == [n for n, _ in ablated.named_parameters()]
    ids = tokens(20)
    assert not torch.allclose(logits(ablated, ids), logits(v1, ids))


def test_uniform_init_puts_every_head_mid_band():
    config = CDSSMConfig(**BASE, state_pairs=2, spectral_init=False)
    v1 = CDSSMConfig(**BASE, state_pairs=2)
    H, P = config.n_heads, config.state_pairs
    for layer in range(config.n_layers):
        bs, be = spectral_band(config, layer)
        bias = spectral_dynamics_bias(config, layer)
        theta = math.exp((bs + be) / 2)
        alpha_bias = torch.full((H * P,), math.log(math.expm1(1 / theta)), dtype=torch.float64)
        f_max = min(0.5, math.exp(-bs))
        omega_bias = torch.full((H * P,), math.sqrt(math.exp(-be) * f_max), dtype=torch.float64)
        torch.testing.assert_close(bias, torch.cat((alpha_bias, omega_bias)))
        # the v1 band's ends bracket the middle value
        v1_alpha = spectral_dynamics_bias(v1, layer)[:H * P]
        assert v1_alpha.min() < alpha_bias[0] < v1_alpha.max()
        torch.testing.assert_close(ema_decay(config, layer),
                                   torch.full((H,), 1 - 1 / theta).clamp(0.9, 0.999).double())


def test_utility_on_value_agrees_on_the_first_token_only():
    """From a zero state the first write is β·υ·v·kᵀ under both placements; afterwards the
    erasure uses β_eff = β·υ (v1) or β (value), so later positions differ."""
    v1, ablated = pair(utility="value")
    for model in (v1, ablated):  # a utility well below 1, so that the placements differ
        for block in model.blocks:
            block.utility_gate.bias.data.fill_(-2.0)
    ids = tokens(30)
    a, b = logits(v1, ids), logits(ablated, ids)
    torch.testing.assert_close(a[:, 0], b[:, 0], rtol=1e-10, atol=1e-10)
    assert (a[:, 1:] - b[:, 1:]).abs().max() > 1e-6


def test_metabolic_off_removes_only_the_aux_loss():
    v1, ablated = pair(metabolic=False)
    ids = tokens(40)
    out_v1, out = v1(ids, labels=ids), ablated(ids, labels=ids)
    assert out.aux_loss.item() == 0.0 and out_v1.aux_loss.item() > 0
    torch.testing.assert_close(out.loss, out_v1.loss - out_v1.aux_loss, rtol=1e-12, atol=1e-12)


def test_approx_scan_is_exact_within_one_chunk():
    v1, ablated = pair(scan="approx")
    short, long = tokens(64), tokens(150)
    torch.testing.assert_close(logits(ablated, short), logits(v1, short), rtol=1e-9, atol=1e-9)
    a, b = logits(ablated, long), logits(v1, long)
    torch.testing.assert_close(a[:, :64], b[:, :64], rtol=1e-9, atol=1e-9)
    assert (a[:, 64:] - b[:, 64:]).abs().max() > 1e-6
    # training runs through autograd
    ablated(long, labels=long).loss.backward()
    assert ablated.blocks[0].dynamics_proj.weight.grad is not None


def test_approx_scan_rejects_packed_batches():
    _, ablated = pair(scan="approx")
    with pytest.raises(ValueError, match="cu_seqlens"):
        ablated(tokens(20)[:1], cu_seqlens=torch.tensor([0, 10, 20], dtype=torch.int32))


def test_train_config_and_cli_set_the_switches():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset")
    parser.add_argument("--config")
    add_config_arguments(parser)
    args = parser.parse_args(["--scan", "approx", "--no-recurrence-gate", "--no-adaptive-dt",
                              "--no-spectral-init", "--utility", "value", "--no-metabolic"])
    config = config_from_args(args)
    assert config.ablations() == {"scan": "approx", "recurrence_gate": False,
                                  "adaptive_dt": False, "spectral_init": False,
                                  "utility": "value", "metabolic": False}
    from cdssm.training.loop import build_lm

    model = build_lm(config, 97)
    assert model.config.ablations() == config.ablations()
    with pytest.raises(ValueError, match="scan"):
        TrainConfig(arch="transformer", d_model=64, scan="approx")
    with pytest.raises(ValueError, match="packed"):
        TrainConfig(scan="approx", packed=True)
    with pytest.raises(ValueError, match="utility"):
        dataclasses.replace(config, utility="both")
