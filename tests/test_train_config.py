"""TrainConfig: presets, YAML/JSON files, command-line overrides, and clear validation errors."""

import dataclasses
import importlib.util
import json
import os

import pytest

from cdssm.cli import build_parser, main
from cdssm.training.config import PRESETS, TrainConfig, config_from_args, resolve_config
from cdssm.training.loop import read_data_meta, train
from cdssm.training.precision import convert_to_float8, float8_eligible, resolve_precision
from train_data import write_shards


def parse(*argv) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_precedence_preset_file_cli(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("d_model: 96\nlr: 0.001\nbetas: [0.8, 0.9]\n")
    config = parse("--preset", "tiny", "--config", str(path), "--lr", "3e-4", "--no-compile")
    assert config.d_model == 96 and config.lr == 3e-4 and config.betas == (0.8, 0.9)
    assert config.n_layers == PRESETS["tiny"]["n_layers"] and config.compile is False
    assert config.warmup_steps == PRESETS["tiny"]["warmup_steps"]


def test_json_file_and_defaults(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"arch": "transformer", "d_model": 128, "steps": 5}))
    config = resolve_config(config_file=str(path))
    assert (config.arch, config.d_model, config.steps, config.lr) == ("transformer", 128, 5,
                                                                      6e-4)
    assert config.total_steps() == 5
    assert TrainConfig().betas == (0.9, 0.95) and TrainConfig().weight_decay == 0.1


def test_token_budget_rounds_up_to_steps():
    config = TrainConfig(batch_size=2, seq_len=10, grad_accum=3, token_budget=121)
    assert config.tokens_per_step(world_size=2) == 120 and config.total_steps(2) == 2


def test_help_shows_every_field(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out
        assert " ".join(f.metadata["help"].split())[:30] in out


@pytest.mark.parametrize("values, message", [
    ({"arch": "rnn"}, "arch: expected one of"),
    ({"d_model": 48}, "multiple of 32"),
    ({"arch": "transformer", "d_model": 96}, "multiple of 64"),
    ({"arch": "transformer", "state_pairs": 2}, "no state pairs"),
    ({"steps": 0, "token_budget": 0}, "set one of them"),
    ({"batch_size": 0}, "batch_size: expected an int >= 1"),
    ({"lr": float("nan")}, "lr: expected a finite number"),
    ({"betas": (0.9, 1.0)}, "betas"),
    ({"precision": "fp16"}, "precision: expected one of"),
    ({"min_lr_ratio": 2.0}, "min_lr_ratio"),
])
def test_invalid_values(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)


def test_bad_preset_and_unknown_file_fields(tmp_path):
    with pytest.raises(ValueError, match="preset: expected one of"):
        resolve_config(preset="huge")
    path = tmp_path / "run.yaml"
    path.write_text("d_modle: 64\n")
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['d_modle'\]"):
        resolve_config(config_file=str(path))
    with pytest.raises(ValueError, match="no such file"):
        resolve_config(config_file=str(tmp_path / "missing.yaml"))


def test_missing_data_points_to_data_prepare(tmp_path):
    with pytest.raises(ValueError, match="cdssm data prepare"):
        read_data_meta(str(tmp_path))
    config = TrainConfig(data_dir=str(tmp_path / "none"), steps=1, device="cpu")
    with pytest.raises(ValueError, match="meta.json not found.*cdssm data prepare"):
        train(config)
    data = write_shards(tmp_path / "data")
    os.remove(os.path.join(data, "val.bin"))
    with pytest.raises(ValueError, match="no val.bin.*--val-fraction"):
        read_data_meta(data)


def test_cli_usage_error_for_missing_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "tiny", "--data-dir", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    assert "cdssm data prepare" in capsys.readouterr().err


def test_float8_needs_cuda(tmp_path):
    import torch

    with pytest.raises(ValueError, match="float8: needs a CUDA device"):
        resolve_precision("auto", True, torch.device("cpu"))
    with pytest.raises(ValueError, match="float8: needs a CUDA device"):
        train(TrainConfig(data_dir=write_shards(tmp_path), steps=1, device="cpu", float8=True))


@pytest.mark.skipif(importlib.util.find_spec("torchao") is not None, reason="torchao installed")
def test_float8_without_torchao_says_how_to_install():
    from cdssm.models.registry import build_model

    with pytest.raises(ValueError, match="pip install torchao"):
        convert_to_float8(build_model("cdssm", 64, 1, 64, 97))


@pytest.mark.parametrize("in_features, out_features, expected", [
    (2048, 12416, True),   # CD-SSM in_proj at d 2048
    (4096, 4096, True),    # Q_proj
    (4096, 2048, True),    # out_proj
    (2048, 5632, True),    # a SwiGLU projection
    (128, 4096, False),    # readout_proj (2PH = 128): too small a K
    (4096, 128, False),    # dynamics_proj
    (4096, 1024, False),   # torchao's tensorwise rule: K <= 4096 and N <= 1024
    (8192, 1024, True),
    (2040, 4096, False),   # not a multiple of 16
])
def test_float8_eligible_layers(in_features, out_features, expected):
    import torch
    from torch import nn

    layer = nn.Linear(in_features, out_features, bias=False, device="meta")
    assert float8_eligible(layer, torch.empty(0)) is expected
    assert float8_eligible(layer, layer.weight) is False  # the tied head never
    assert float8_eligible(nn.Conv1d(1024, 1024, 1, device="meta"), torch.empty(0)) is False


def test_checkpoint_blocks_replaces_selective_recompute():
    from cdssm.config import CDSSMConfig
    from cdssm.models import CDSSMForCausalLM
    from cdssm.training.precision import checkpoint_blocks

    model = CDSSMForCausalLM(CDSSMConfig(64, 2, 128, 97))
    keys = model.state_dict().keys()
    assert all(block.selective_recompute for block in model.blocks)
    checkpoint_blocks(model)
    assert not any(block._checkpoint_wrapped_module.selective_recompute for block in model.blocks)
    assert model.state_dict().keys() == keys
