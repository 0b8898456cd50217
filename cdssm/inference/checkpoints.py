"""The model a `cdssm generate` / `cdssm export` command runs: from a checkpoint or a preset.

A checkpoint directory is, in this order of lookup:
  1. a ``save_pretrained`` directory (``config.json`` with "arch" + ``model.safetensors``);
  2. a `cdssm train` run directory whose ``final/`` is such a directory;
  3. a run directory without ``final/`` yet: its ``checkpoint.pt`` (the latest training step).
A preset (``cdssm.training.config.PRESETS``) gives a randomly initialised model of that size
with the GPT-2 vocabulary: for trying the commands without a trained model.
"""

import json
import os

import torch
from torch import nn

from ..models.pretrained import CONFIG_NAME, WEIGHTS_NAME
from ..models.registry import ARCHITECTURES, build_model
from ..training.tokenizer import GPT2_VOCAB_SIZE


def _is_pretrained(directory: str) -> bool:
    return (os.path.isfile(os.path.join(directory, WEIGHTS_NAME))
            and os.path.isfile(os.path.join(directory, CONFIG_NAME)))


def load_checkpoint_model(directory: str) -> nn.Module:
    """The model saved in ``directory`` (see the module docstring), on CPU, in eval mode."""
    if not isinstance(directory, str) or not os.path.isdir(directory):
        raise ValueError(f"checkpoint: expected a directory, got {directory!r} (not found)")
    for candidate in (directory, os.path.join(directory, "final")):
        if _is_pretrained(candidate):
            with open(os.path.join(candidate, CONFIG_NAME)) as f:
                arch = json.load(f).get("arch")
            if arch not in ARCHITECTURES:
                raise ValueError(f"checkpoint: {candidate!r} holds an unknown architecture "
                                 f"{arch!r} (expected one of {sorted(ARCHITECTURES)})")
            return ARCHITECTURES[arch].from_pretrained(candidate).eval()
    from ..training.checkpoint import checkpoint_path
    from ..training.config import TrainConfig
    from ..training.loop import build_lm

    path = checkpoint_path(directory)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint: no model in {directory!r} (expected {CONFIG_NAME} + "
                         f"{WEIGHTS_NAME} from save_pretrained, a run directory's final/, or "
                         f"a run directory's checkpoint.pt)")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    weights = saved["model"]
    model = build_lm(TrainConfig.from_dict(saved["config"], where=path),
                     weights["embed.weight"].shape[0])
    model.load_state_dict(weights)
    return model.eval()


def preset_model(preset: str, arch: str = "cdssm", seed: int = 0) -> nn.Module:
    """A randomly initialised (seeded) model of a training preset's size, GPT-2 vocabulary."""
    from ..training.config import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    values = PRESETS[preset]
    torch.manual_seed(seed)
    return build_model(arch, values["d_model"], values["n_layers"], values["seq_len"],
                       GPT2_VOCAB_SIZE).eval()
