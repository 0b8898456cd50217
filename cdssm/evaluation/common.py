"""What every ``cdssm eval`` task shares: the model rows, the command-line options, training (or
loading) one model through ``cdssm.training``, scoring labelled positions, and the outputs.

A task compares *rows*: the Transformer baseline, CD-SSM at each state-pair count P, and CD-SSM
with one ablation (spec/model.md § Ablation switches) at the smallest P. Each row is trained by
``cdssm.training.loop.train`` into ``OUT/runs/<row>-<hash of its TrainConfig>``; a later run
with the identical config loads that run's ``final/`` model instead of training again.
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Callable, NamedTuple, Optional

from ..argtypes import positive_float, positive_int
from ..files import atomic_write
from ..models.parameters import count_parameters
from ..training.config import TrainConfig

# One-switch (or the utility pair) ablations of the issue, by name → TrainConfig fields.
ABLATIONS = {
    "approx-scan": {"scan": "approx"},
    "no-recurrence-gate": {"recurrence_gate": False},
    "fixed-dt": {"adaptive_dt": False},
    "uniform-init": {"spectral_init": False},
    "utility-value": {"utility": "value"},
    "no-metabolic": {"metabolic": False},
    "utility-value-no-metabolic": {"utility": "value", "metabolic": False},
}


class ModelSpec(NamedTuple):
    """One row: ``label`` (table and file name), arch, state pairs, ablation fields."""

    label: str
    arch: str
    state_pairs: int
    ablation: dict

    def fields(self) -> dict:
        """The TrainConfig fields that define the row."""
        return {"arch": self.arch, "state_pairs": self.state_pairs, **self.ablation}


def model_specs(archs, state_pairs, ablations) -> list:
    """Rows: the transformer (if in ``archs``), cdssm at each P, then cdssm at min(P) with each
    ablation in ``ablations`` (names of ``ABLATIONS``)."""
    rows = []
    if "transformer" in archs:
        rows.append(ModelSpec("transformer", "transformer", 1, {}))
    if "cdssm" in archs:
        rows += [ModelSpec(f"cdssm-P{p}", "cdssm", p, {}) for p in state_pairs]
        p = min(state_pairs)
        rows += [ModelSpec(f"cdssm-P{p}-{name}", "cdssm", p, dict(ABLATIONS[name]))
                 for name in ablations]
    elif ablations:
        raise ValueError("--ablation: ablations are cdssm rows; add cdssm to --arch")
    return rows


# ---- command line -----------------------------------------------------------------------------
def _ablation_name(text: str) -> str:
    if text != "all" and text not in ABLATIONS:
        raise argparse.ArgumentTypeError(f"expected 'all' or one of {', '.join(ABLATIONS)}, "
                                         f"got {text!r}")
    return text


def add_common_arguments(parser: argparse.ArgumentParser, *, d_model, n_layers: int,
                         steps: int, batch_size: int, lr: float, out_dir: str) -> None:
    """The options of every task; the defaults given are the task's."""
    rows = parser.add_argument_group("models (rows of the table)")
    rows.add_argument("--arch", nargs="+", choices=("cdssm", "transformer"),
                      default=["cdssm", "transformer"], help="architectures to compare")
    rows.add_argument("--state-pairs", nargs="+", type=positive_int, default=[1, 8],
                      metavar="P", help="CD-SSM state pairs P, one row each")
    rows.add_argument("--ablation", action="append", type=_ablation_name, default=[],
                      metavar="NAME",
                      help="add a CD-SSM row (at the smallest P) with an ablation switch of "
                           "spec/model.md: " + ", ".join(
                               f"{k} ({', '.join(f'{f}={v}' for f, v in s.items())})"
                               for k, s in ABLATIONS.items()) + "; 'all' for every one; "
                           "repeatable")
    size = parser.add_argument_group("model size and training")
    if isinstance(d_model, list):
        size.add_argument("--d-model", nargs="+", type=positive_int, default=d_model,
                          metavar="D", help="residual widths d (one model per width)")
    else:
        size.add_argument("--d-model", type=positive_int, default=d_model, metavar="D",
                          help="residual width d (a multiple of 64)")
    size.add_argument("--n-layers", type=positive_int, default=n_layers, help="blocks n")
    size.add_argument("--steps", type=positive_int, default=steps, help="optimizer steps")
    size.add_argument("--batch-size", type=positive_int, default=batch_size,
                      help="sequences per step")
    size.add_argument("--lr", type=positive_float, default=lr, help="peak learning rate")
    size.add_argument("--warmup-steps", type=int, default=None,
                      help="linear warmup steps (default: 10%% of --steps)")
    run = parser.add_argument_group("execution and output")
    run.add_argument("--seed", type=int, default=0, help="seed of the weights and the data")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto: cuda when available")
    run.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                     help="auto: bf16 autocast on cuda, fp32 on cpu")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                     help="torch.compile the training step (slower for short runs)")
    run.add_argument("--out-dir", default=out_dir,
                     help="results (TASK.json, TASK.png) and runs/ (the trained models)")
    run.add_argument("--retrain", action="store_true",
                     help="train every row again even when OUT/runs holds its model")
    run.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bars")


def rows_from_args(args) -> list:
    names = list(ABLATIONS) if "all" in args.ablation else list(dict.fromkeys(args.ablation))
    return model_specs(args.arch, args.state_pairs, names)


def train_settings(args, **task_fields) -> dict:
    """TrainConfig fields shared by every row of a task (the row adds arch, P, ablation)."""
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 10)
    settings = dict(n_layers=args.n_layers, steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, warmup_steps=warmup, seed=args.seed, device=args.device,
                    precision=args.precision, compile=args.compile, eval_every=0,
                    checkpoint_every=0, log_every=10)
    settings.update(task_fields)
    return settings


# ---- training or loading one row ---------------------------------------------------------------
@dataclasses.dataclass
class Fitted:
    """A trained row: the model (eval mode, on its device), its config, its train-loss log
    [(step, loss)], its final val loss (None if not evaluated), parameter count, whether it
    was trained now, and the training wall time and throughput (None when loaded)."""

    model: "torch.nn.Module"
    config: TrainConfig
    losses: list
    val_loss: Optional[float]
    parameters: int
    trained: bool
    train_seconds: Optional[float]
    tokens_per_s: Optional[float]


def run_directory(root: str, spec: ModelSpec, config: TrainConfig,
                  examples: Optional[dict] = None) -> str:
    """root/runs/<label>-<first 10 hex of sha256 of the config without out_dir>, and of
    ``examples`` when given: the options of a generated task that define its training
    examples but are no TrainConfig field (MQAR cells and V, passkey lengths, digits and V), so
    that a run trained on other examples is never loaded in place of this one."""
    values = {k: v for k, v in config.to_dict().items() if k != "out_dir"}
    if examples is not None:
        values["examples"] = examples
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(root, "runs", f"{spec.label}-{digest}")


def _saved_config(run_dir: str) -> Optional[dict]:
    path = os.path.join(run_dir, "config.json")
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(run_dir, "final",
                                                                 "model.safetensors"))):
        return None
    with open(path) as f:
        return json.load(f)


def _logged(run_dir: str) -> tuple:
    """([(step, loss)], last val loss or None) from the run's metrics.jsonl."""
    from ..training.metrics import read_metrics

    records = read_metrics(run_dir)
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    return losses, (vals[-1] if vals else None)


def fit(spec: ModelSpec, settings: dict, root: str, *, make_loader: Optional[Callable] = None,
        vocab_size: Optional[int] = None, examples: Optional[dict] = None,
        retrain: bool = False, progress: bool = True) -> Fitted:
    """Trains the row ``spec`` with ``settings`` (TrainConfig fields) through
    ``cdssm.training.loop.train`` — or loads it, when its run directory (``run_directory``, with
    ``examples``) holds a finished run of the same config and not ``retrain``. ``make_loader``
    and ``vocab_size`` as in ``train``."""
    from ..models.registry import ARCHITECTURES
    from ..training.loop import train
    from ..training.precision import resolve_device

    config = TrainConfig(**settings, **spec.fields())
    run_dir = run_directory(root, spec, config, examples)
    config = dataclasses.replace(config, out_dir=run_dir)
    device = resolve_device(config.device)
    if not retrain and _saved_config(run_dir) == config.to_dict():
        model = ARCHITECTURES[spec.arch].from_pretrained(os.path.join(run_dir, "final"))
        model.to(device)
        seconds = tokens_per_s = None
        trained = False
    else:
        tic = time.perf_counter()
        result = train(config, make_loader=make_loader, vocab_size=vocab_size,
                       progress=progress)
        seconds, tokens_per_s = time.perf_counter() - tic, result.tokens_per_s
        model, trained = result.model, True
    losses, val = _logged(run_dir)
    if tokens_per_s is not None and math.isnan(tokens_per_s):
        tokens_per_s = None
    return Fitted(model.eval(), config, losses, val, count_parameters(model)["total"], trained,
                  seconds, tokens_per_s)


# ---- scoring ------------------------------------------------------------------------------------
def labelled_predictions(model, input_ids, labels, precision: str) -> tuple:
    """Greedy next-token predictions where a target exists.

    input_ids, labels (B, T) int64 (labels unshifted, −100 where nothing is asked, as the models
    take them). Returns (correct, asked), both (B, T) bool on the CPU: asked[b, t] when
    labels[b, t + 1] ≠ −100, correct[b, t] when also argmax logits[b, t] == labels[b, t + 1].
    """
    import torch

    from ..models.lm_loss import IGNORE_INDEX, shift_labels
    from ..training.precision import autocast

    device = next(model.parameters()).device
    target = shift_labels(labels).to(device)
    with torch.no_grad(), autocast(precision, device):
        logits = model(input_ids.to(device)).logits  # (B, T, V)
    asked = target != IGNORE_INDEX
    correct = asked & (logits.argmax(-1) == target)
    return correct.cpu(), asked.cpu()


def resolved_precision(args) -> str:
    """The precision string of ``args`` on its device (auto → bf16 on cuda, fp32 on cpu)."""
    from ..training.precision import resolve_device, resolve_precision

    return resolve_precision(args.precision, False, resolve_device(args.device))


# ---- outputs ------------------------------------------------------------------------------------
def environment() -> dict:
    """Device, versions and time of the measurement."""
    import platform

    import torch

    import cdssm

    env = {"torch": torch.__version__, "cdssm": getattr(cdssm, "__version__", "unknown"),
           "python": platform.python_version(), "cuda": torch.version.cuda,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def save_figure(fig, path: str) -> None:
    """Saves a matplotlib figure as PNG, atomically, and closes it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def format_table(header: list, rows: list) -> str:
    """A plain-text table: columns padded to their widest cell, floats as given."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def args_record(args) -> dict:
    """The task's options as JSON values (the command line that produced a result)."""
    return {k: v for k, v in vars(args).items() if k not in ("handler", "parser", "run")}


# Options that only choose rows or where they are written: runs of one task that differ in
# nothing else can be merged into one table.
ROW_OPTIONS = ("arch", "state_pairs", "ablation", "d_model", "out_dir", "retrain", "progress")


def merge_payloads(payloads: list) -> dict:
    """One task payload from several of the same task whose rows were trained apart (e.g. one
    process per row side by side on one GPU): runs and results concatenated in order.

    Every option outside ``ROW_OPTIONS`` and every other top-level entry (the MQAR cells) must
    agree, and no row (label, width) may appear twice, else ValueError. ``args`` keeps the
    agreed options; ``sources`` keeps each payload's own args and environment.
    """
    if not payloads:
        raise ValueError("payloads: expected at least one")
    first = payloads[0]
    kept = ("args", "environment", "runs", "results", "sources")
    for p in payloads[1:]:
        if p["task"] != first["task"]:
            raise ValueError(f"payloads: expected one task, got {first['task']!r} and "
                             f"{p['task']!r}")
        for key in set(first) | set(p):
            if key not in kept and first.get(key) != p.get(key):
                raise ValueError(f"payloads: {key!r} differs between the runs")
        differ = sorted(k for k in set(first["args"]) | set(p["args"]) if k not in ROW_OPTIONS
                        and first["args"].get(k) != p["args"].get(k))
        if differ:
            raise ValueError(f"payloads: options {', '.join(differ)} differ between the runs")
    rows = [(r["label"], r.get("d_model")) for p in payloads for r in p["runs"]]
    twice = sorted({row for row in rows if rows.count(row) > 1}, key=str)
    if twice:
        raise ValueError(f"payloads: rows {twice} appear more than once")
    merged = {k: v for k, v in first.items() if k not in kept}
    merged["args"] = {k: v for k, v in first["args"].items() if k not in ROW_OPTIONS}
    merged["environment"] = first["environment"]
    merged["sources"] = [{"args": p["args"], "environment": p["environment"]}
                         for p in payloads]
    merged["runs"] = [r for p in payloads for r in p["runs"]]
    merged["results"] = [r for p in payloads for r in p["results"]]
    return merged


def row_record(spec: ModelSpec, fitted: Fitted) -> dict:
    """The JSON description of a trained row."""
    return {"label": spec.label, "arch": spec.arch, "state_pairs": spec.state_pairs,
            "ablation": spec.ablation, "parameters": fitted.parameters,
            "trained_now": fitted.trained, "train_seconds": fitted.train_seconds,
            "tokens_per_s": fitted.tokens_per_s,
            "final_train_loss": fitted.losses[-1][1] if fitted.losses else None,
            "run_dir": fitted.config.out_dir}
