"""TrainConfig: every knob of a training run, its presets, and how a run's config is assembled.

A run's config is, in order of precedence (later wins): the dataclass defaults, a preset
(``tiny``, ``small``, ``gpt2-small``), a YAML/JSON file, then command-line overrides, one
``--field value`` per dataclass field (``cdssm train --help`` lists them with the docs below).
This module imports no torch, so ``--help`` stays fast.
"""

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Optional


def _doc(text: str, **kwargs):
    """A dataclass field whose ``metadata["help"]`` is its documentation."""
    return field(metadata={"help": text}, **kwargs)


ARCHS = ("cdssm", "transformer")
SCANS = ("exact", "approx")
UTILITIES = ("strength", "value")
# The cdssm ablation switches among the fields, with their v1 values.
ABLATION_DEFAULTS = {"scan": "exact", "recurrence_gate": True, "adaptive_dt": True,
                     "spectral_init": True, "utility": "strength", "metabolic": True}
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """A training run. Sizes in tokens are per optimizer step unless stated."""

    # ---- model ------------------------------------------------------------------------------
    arch: str = _doc(f"architecture: one of {', '.join(ARCHS)}", default="cdssm")
    d_model: int = _doc("residual width d (a multiple of 32 for cdssm, of 64 for transformer)",
                        default=512)
    n_layers: int = _doc("number of blocks n", default=8)
    seq_len: int = _doc("tokens per training sequence; also the model's context_length Lc",
                        default=1024)
    state_pairs: int = _doc("complex state pairs P per head (cdssm only)", default=1)
    # ---- cdssm ablation switches (spec/model.md § Ablation switches; defaults are v1) ----------
    scan: str = _doc("cdssm scan: exact, or approx (the original's carry: the incoming state "
                     "of a chunk only decays; unpacked batches only)", default="exact")
    recurrence_gate: bool = _doc("cdssm recurrence gate r (off: r = 1/c, |z_eff| = |z|)",
                                 default=True)
    adaptive_dt: bool = _doc("cdssm adaptive step (off: dt = softplus(log_dt_scale) + "
                             "softplus(selection_dt))", default=True)
    spectral_init: bool = _doc("cdssm spectral init (off: every head at the band's middle "
                               "timescale and frequency)", default=True)
    utility: str = _doc("cdssm utility gate placement: strength (beta_eff = beta*utility) or "
                        "value (utility scales v)", default="strength")
    metabolic: bool = _doc("cdssm metabolic loss (off: lambda_met = 0)", default=True)
    # ---- data -------------------------------------------------------------------------------
    data_dir: str = _doc("directory of train.bin, val.bin and meta.json (from `cdssm data "
                         "prepare`); the vocabulary size comes from meta.json", default="data")
    packed: bool = _doc("pack documents into one row with cu_seqlens (no state or attention "
                        "crosses a document start)", default=False)
    # ---- batch and length -------------------------------------------------------------------
    batch_size: int = _doc("sequences per micro-batch per rank", default=16)
    grad_accum: int = _doc("micro-batches per optimizer step: tokens per step = world_size · "
                           "grad_accum · batch_size · seq_len", default=1)
    steps: int = _doc("optimizer steps; when > 0 it overrides token_budget", default=0)
    token_budget: int = _doc("training tokens, rounded up to whole optimizer steps (used when "
                             "steps is 0)", default=2_500_000_000)
    # ---- optimizer and schedule ---------------------------------------------------------------
    lr: float = _doc("peak learning rate", default=6e-4)
    warmup_steps: int = _doc("linear warmup steps: lr·(s+1)/warmup", default=500)
    min_lr_ratio: float = _doc("cosine decay ends at lr·min_lr_ratio", default=0.1)
    weight_decay: float = _doc("AdamW decay of the matrices (>= 2-D, embedding included); none "
                               "on biases, norms, d_skip, log_dt_scale", default=0.1)
    betas: tuple = _doc("AdamW (beta1, beta2)", default=(0.9, 0.95))
    dynamics_lr_ratio: Optional[float] = _doc(
        "lr ratio rho of the cdssm dynamics parameters (default: the model's "
        "min(0.5, 1/sqrt(2n)))", default=None)
    grad_clip: float = _doc("clip the global gradient norm to this (0: no clipping)", default=1.0)
    # ---- evaluation, logging, checkpoints --------------------------------------------------
    eval_every: int = _doc("evaluate on val every N steps and at the end (0: only at the end)",
                           default=250)
    eval_batches: int = _doc("val micro-batches per evaluation (per rank)", default=20)
    log_every: int = _doc("write a metrics line every N steps", default=10)
    checkpoint_every: int = _doc("write out_dir/checkpoint.pt every N steps and at the end "
                                 "(0: only at the end)", default=1000)
    out_dir: str = _doc("run directory: config.json, metrics.jsonl, checkpoint.pt, final/",
                        default="runs/cdssm")
    seed: int = _doc("seed of the initialisation and the data order", default=0)
    # ---- execution ----------------------------------------------------------------------------
    device: str = _doc(f"one of {', '.join(DEVICES)} (auto: cuda when available)",
                       default="auto")
    compile: bool = _doc("torch.compile the model with fullgraph=True", default=True)
    precision: str = _doc(f"one of {', '.join(PRECISIONS)}: bf16 autocast with fp32 master "
                          "weights, or fp32 (auto: bf16 on cuda, fp32 on cpu)", default="auto")
    float8: bool = _doc("train the linear layers in float8 (torchao; cuda only; layers whose "
                        "dims are not multiples of 16 and the tied head stay as they are)",
                        default=False)
    activation_checkpointing: bool = _doc("recompute each block's activations in the backward",
                                          default=False)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.arch not in ARCHS:
            raise ValueError(f"arch: expected one of {ARCHS}, got {self.arch!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {DEVICES}, got {self.device!r}")
        for name, low in (("d_model", 1), ("n_layers", 1), ("seq_len", 2), ("state_pairs", 1),
                          ("batch_size", 1), ("grad_accum", 1), ("steps", 0),
                          ("token_budget", 0), ("warmup_steps", 0), ("eval_every", 0),
                          ("eval_batches", 1), ("log_every", 1), ("checkpoint_every", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if self.steps == 0 and self.token_budget == 0:
            raise ValueError("steps, token_budget: set one of them > 0")
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: expected a number in [0, 1], got "
                             f"{self.min_lr_ratio!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        if self.dynamics_lr_ratio is not None and not self.dynamics_lr_ratio > 0:
            raise ValueError(f"dynamics_lr_ratio: expected a number > 0 or None, got "
                             f"{self.dynamics_lr_ratio!r}")
        if self.scan not in SCANS:
            raise ValueError(f"scan: expected one of {SCANS}, got {self.scan!r}")
        if self.utility not in UTILITIES:
            raise ValueError(f"utility: expected one of {UTILITIES}, got {self.utility!r}")
        if self.scan == "approx" and self.packed:
            raise ValueError("packed: the scan='approx' ablation runs unpacked batches only")
        if self.arch == "transformer":
            changed = sorted(self.ablations())
            if changed:
                raise ValueError(f"{', '.join(changed)}: cdssm ablation switches, the transformer "
                                 f"has none")
            if self.state_pairs != 1:
                raise ValueError(f"state_pairs: the transformer has no state pairs, got "
                                 f"{self.state_pairs}")
            if self.d_model % 64:
                raise ValueError(f"d_model: the transformer needs a multiple of 64, got "
                                 f"{self.d_model}")
        elif self.d_model % 32:
            raise ValueError(f"d_model: cdssm needs a multiple of 32 (E = 2d a multiple of 64), "
                             f"got {self.d_model}")

    # ---- derived --------------------------------------------------------------------------
    def ablations(self) -> dict:
        """The cdssm ablation switches that differ from v1, {field: value}."""
        return {k: getattr(self, k) for k, v1 in ABLATION_DEFAULTS.items()
                if getattr(self, k) != v1}

    def tokens_per_step(self, world_size: int = 1) -> int:
        """world_size · grad_accum · batch_size · seq_len."""
        return world_size * self.grad_accum * self.batch_size * self.seq_len

    def total_steps(self, world_size: int = 1) -> int:
        """``steps`` when > 0, else ⌈token_budget / tokens_per_step⌉."""
        if self.steps:
            return self.steps
        return -(-self.token_budget // self.tokens_per_step(world_size))

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["betas"] = list(self.betas)
        return values

    @classmethod
    def from_dict(cls, values: dict, where: str = "values") -> "TrainConfig":
        """Builds a config from ``values`` (unknown keys raise ValueError naming ``where``)."""
        _check_fields(values, where)
        return cls(**values)


def _check_fields(values: dict, where: str) -> None:
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(f"{where}: unknown TrainConfig fields {unknown}")


# Presets: the fields they set on top of the defaults.
PRESETS = {
    # tiny: eager, since compiling takes longer on a small CPU than the run itself; at V = 50257
    # the tied head and its softmax dominate a step.
    "tiny": dict(d_model=64, n_layers=2, seq_len=128, batch_size=8, steps=50, warmup_steps=10,
                 lr=2e-3, eval_every=25, eval_batches=4, log_every=5, checkpoint_every=0,
                 device="cpu", compile=False, data_dir="data/shakespeare", out_dir="runs/tiny"),
    "small": dict(d_model=512, n_layers=8, seq_len=1024, batch_size=16, grad_accum=2,
                  steps=0, token_budget=2_500_000_000, out_dir="runs/small"),
    "gpt2-small": dict(d_model=768, n_layers=12, seq_len=2048, batch_size=16, grad_accum=4,
                       steps=0, token_budget=10_000_000_000, out_dir="runs/gpt2-small"),
}


def load_config_file(path: str) -> dict:
    """The mapping in a YAML (.yaml/.yml) or JSON file."""
    if not os.path.isfile(path):
        raise ValueError(f"config: no such file {path!r}")
    with open(path) as f:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(f)
        else:
            values = json.load(f)
    if not isinstance(values, dict):
        raise ValueError(f"config: {path!r} must hold a mapping of TrainConfig fields, got "
                         f"{type(values).__name__}")
    return values


def resolve_config(preset: Optional[str] = None, config_file: Optional[str] = None,
                   overrides: Optional[dict] = None) -> TrainConfig:
    """defaults ← PRESETS[preset] ← the file's fields ← overrides."""
    values = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
        values.update(PRESETS[preset])
    if config_file is not None:
        file_values = load_config_file(config_file)
        _check_fields(file_values, f"config {config_file!r}")
        values.update(file_values)
    values.update(overrides or {})
    return TrainConfig.from_dict(values)


# ---- command line -----------------------------------------------------------------------------
def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per field (``--d-model``, ``--compile/--no-compile``, ``--betas B1 B2``), with
    the field's doc as help; defaults are SUPPRESSed so only the given options override."""
    group = parser.add_argument_group("run settings (TrainConfig fields; default: the preset's "
                                      "or the dataclass's value, shown in brackets)")
    defaults = TrainConfig.__dataclass_fields__
    for f in dataclasses.fields(TrainConfig):
        option = "--" + f.name.replace("_", "-")
        default = defaults[f.name].default
        text = f"{f.metadata['help']} [{default}]"
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=text)
        if f.type is bool:
            group.add_argument(option, action=argparse.BooleanOptionalAction, **kwargs)
        elif f.name == "betas":
            group.add_argument(option, type=float, nargs=2, metavar=("B1", "B2"), **kwargs)
        elif f.name == "dynamics_lr_ratio":
            group.add_argument(option, type=float, metavar="RHO", **kwargs)
        else:
            group.add_argument(option, type=f.type, metavar=f.name.upper(),
                               choices={"arch": ARCHS, "precision": PRECISIONS,
                                        "device": DEVICES, "scan": SCANS,
                                        "utility": UTILITIES}.get(f.name), **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of parsed ``cdssm train`` arguments (``--preset``, ``--config``, overrides)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return resolve_config(args.preset, args.config, overrides)
