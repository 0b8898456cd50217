"""``cdssm plot RUN_DIR [RUN_DIR ...]``: the loss curves of one run, or of several side by side,
as a PNG."""

import os
from typing import Optional, Sequence, Union

from .metrics import read_metrics


def _label(run_dir: str) -> str:
    return os.path.basename(os.path.abspath(run_dir))


def _records(run_dir: str):
    records = read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    if not train and not val:
        raise ValueError(f"run_dir: {run_dir!r} has no loss records yet")
    return train, val


def plot_losses(run_dirs: Union[str, Sequence[str]], out: Optional[str] = None) -> str:
    """Draws loss curves into ``out`` and returns its path.

    One run (a path): the train loss (CE + metabolic, every logged step) and the val loss (CE,
    every evaluation) against the step, into ``out`` (default RUN_DIR/loss.png). Several runs (a
    list): two panels side by side, train loss and val loss, one curve per run (labelled by its
    directory name) against the training tokens seen, so runs with different batch sizes line
    up; ``out`` is required.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(run_dirs, str):
        run_dirs = [run_dirs]
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("run_dirs: expected at least one run directory")
    if len(run_dirs) > 1 and out is None:
        raise ValueError("out: required when plotting several runs")
    out = out or os.path.join(run_dirs[0], "loss.png")
    runs = [(_label(d), *_records(d)) for d in run_dirs]
    if len(runs) == 1:
        name, train, val = runs[0]
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=1,
                    label="train loss (CE + metabolic)")
        if val:
            ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-",
                    label="val loss")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    else:
        fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
        for name, train, val in runs:
            tokens = _tokens_per_step(train)
            line, = ax_train.plot([r["tokens"] for r in train], [r["loss"] for r in train],
                                  linewidth=1, label=name)
            ax_val.plot([r["step"] * tokens for r in val], [r["val_loss"] for r in val], "o-",
                        markersize=3, color=line.get_color(), label=name)
        for ax, title in ((ax_train, "train loss (CE + metabolic)"), (ax_val, "val loss (CE)")):
            ax.set_xlabel("training tokens")
            ax.set_ylabel("cross-entropy (nats/token)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _tokens_per_step(train: list) -> int:
    """Tokens per optimizer step, from the train records (``tokens`` = step · tokens/step)."""
    if not train:
        raise ValueError("run_dirs: a run without train records cannot be placed on the token "
                         "axis")
    return train[0]["tokens"] // train[0]["step"]
