"""AdamW parameter groups and the learning-rate schedule of the training recipe (spec/model.md).

Groups: (decay?, dynamics?). Weight decay applies to matrices (≥ 2-D parameters, the embedding
included) and not to biases, norm gains, d_skip or log_dt_scale (all 1-D). The CD-SSM dynamics
parameters train at lr·ρ. Schedule: lr(s) = lr·f(s) with f(s) = (s+1)/warmup for s < warmup,
then f(s) = r + (1 − r)·½(1 + cos(π·(s − warmup)/(S − warmup))), r = min_lr_ratio, S = total steps.
"""

import functools
import math

import torch
from torch import nn

# Sub-module and parameter names of the CD-SSM block that set its dynamics (trained at lr·ρ).
DYNAMICS_NAMES = frozenset({"dynamics_proj", "log_dt_scale", "selection_dt", "beta_proj",
                            "recurrence_gate", "utility_gate", "W_sg", "read_gate"})


def is_dynamics(name: str) -> bool:
    """Whether the parameter ``name`` (a dotted path) belongs to a dynamics module/parameter."""
    return not DYNAMICS_NAMES.isdisjoint(name.split("."))


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 dynamics_lr_ratio: float) -> list:
    """AdamW groups over every trainable parameter of ``model`` (a tied weight once).

    Each group: {"params", "param_names", "lr", "weight_decay"}, lr = lr·ρ for dynamics parameters,
    weight_decay for ≥ 2-D parameters, else 0. Empty groups are left out.
    """
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (p.dim() >= 2, is_dynamics(name))
        groups.setdefault(key, {"params": [], "param_names": []})
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    for (decay, dynamics), group in groups.items():
        group["lr"] = lr * (dynamics_lr_ratio if dynamics else 1.0)
        group["weight_decay"] = weight_decay if decay else 0.0
    return [groups[key] for key in sorted(groups)]


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """f(s): linear warmup to 1, then cosine to min_lr_ratio at s = total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with ``lr_factor``: group lr = initial lr · f(s); its state_dict resumes it."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, warmup_steps=warmup_steps, total_steps=total_steps,
        min_lr_ratio=min_lr_ratio))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple,
                    dynamics_lr_ratio: float, warmup_steps: int, total_steps: int,
                    min_lr_ratio: float) -> tuple:
    """(AdamW over ``param_groups``, its ``warmup_cosine`` schedule). Fused AdamW on CUDA."""
    groups = param_groups(model, lr, weight_decay, dynamics_lr_ratio)
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=on_cuda or None)
    return optimizer, warmup_cosine(optimizer, warmup_steps, total_steps, min_lr_ratio)
