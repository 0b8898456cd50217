"""AdamW parameter groups (decay on matrices, dynamics at lr·ρ) and the warmup-cosine schedule."""

import math

import pytest
import torch

from cdssm.models.registry import build_model
from cdssm.training.optim import build_optimizer, is_dynamics, lr_factor, param_groups

DYNAMICS = {"dynamics_proj", "log_dt_scale", "selection_dt", "beta_proj", "recurrence_gate",
            "utility_gate", "W_sg", "read_gate"}


@pytest.mark.parametrize("arch", ["cdssm", "transformer"])
def test_every_parameter_in_exactly_one_group(arch):
    model = build_model(arch, 64, 2, 128, 97)
    groups = param_groups(model, lr=1e-3, weight_decay=0.1, dynamics_lr_ratio=0.25)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters()}  # the tied head once
    for g in groups:
        assert len(g["params"]) == len(g["param_names"])
        for name, p in zip(g["param_names"], g["params"]):
            module = name.split(".")[-2] if "." in name else name
            dynamics = module in DYNAMICS or name.split(".")[-1] in DYNAMICS
            assert g["lr"] == pytest.approx(1e-3 * (0.25 if dynamics else 1.0)), name
            assert g["weight_decay"] == (0.1 if p.dim() >= 2 else 0.0), name
            assert is_dynamics(name) == dynamics


def test_cdssm_decay_and_dynamics_membership():
    model = build_model("cdssm", 64, 2, 128, 97)
    by_name = {n: g for g in param_groups(model, 1.0, 0.1, 0.5)
               for n in g["param_names"]}
    expect = {  # name: (weight decay, lr)
        "embed.weight": (0.1, 1.0), "norm.weight": (0.0, 1.0),
        "blocks.0.in_proj.weight": (0.1, 1.0), "blocks.0.in_proj.bias": (0.0, 1.0),
        "blocks.0.d_skip": (0.0, 1.0), "blocks.0.group_norm.weight": (0.0, 1.0),
        "blocks.0.conv.weight": (0.1, 1.0), "blocks.0.Q_proj.weight": (0.1, 1.0),
        "blocks.1.dynamics_proj.weight": (0.1, 0.5), "blocks.1.dynamics_proj.bias": (0.0, 0.5),
        "blocks.1.log_dt_scale": (0.0, 0.5), "blocks.1.selection_dt.weight": (0.1, 0.5),
        "blocks.1.W_sg": (0.1, 0.5), "blocks.1.read_gate.bias": (0.0, 0.5),
        "blocks.1.utility_gate.weight": (0.1, 0.5), "blocks.1.beta_proj.bias": (0.0, 0.5),
        "blocks.1.recurrence_gate.weight": (0.1, 0.5),
    }
    for name, (decay, lr) in expect.items():
        assert (by_name[name]["weight_decay"], by_name[name]["lr"]) == (decay, lr), name
    assert "lm_head.weight" not in by_name  # tied to embed.weight


def test_schedule_warmup_then_cosine_to_min():
    warm, total, r = 10, 110, 0.1
    assert lr_factor(0, warm, total, r) == pytest.approx(0.1)
    assert lr_factor(9, warm, total, r) == pytest.approx(1.0)
    assert lr_factor(10, warm, total, r) == pytest.approx(1.0)
    assert lr_factor(60, warm, total, r) == pytest.approx(r + (1 - r) * 0.5)
    assert lr_factor(110, warm, total, r) == pytest.approx(r)
    assert lr_factor(500, warm, total, r) == pytest.approx(r)
    assert lr_factor(0, 0, total, r) == pytest.approx(1.0)


def test_scheduler_resumes_from_state_dict():
    model = torch.nn.Linear(4, 4)
    args = dict(lr=1.0, weight_decay=0.1, betas=(0.9, 0.95), dynamics_lr_ratio=1.0,
                warmup_steps=3, total_steps=20, min_lr_ratio=0.1)
    opt, sched = build_optimizer(model, **args)
    for _ in range(7):
        opt.step()
        sched.step()
    opt2, sched2 = build_optimizer(model, **args)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr_factor(7, 3, 20, 0.1))
    for _ in range(5):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert math.isclose(opt.param_groups[0]["lr"], lr_factor(12, 3, 20, 0.1))
