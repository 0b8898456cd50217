"""``cdssm plot RUN_DIR``: the train and val loss curves of a run as a PNG."""

import os
from typing import Optional

from .metrics import read_metrics


def plot_losses(run_dir: str, out: Optional[str] = None) -> str:
    """Draws the train loss (CE + metabolic, every logged step) and the val loss (CE, every
    evaluation) against the step into ``out`` (default RUN_DIR/loss.png); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    if not train and not val:
        raise ValueError(f"run_dir: {run_dir!r} has no loss records yet")
    out = out or os.path.join(run_dir, "loss.png")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=1,
                label="train loss (CE + metabolic)")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(os.path.basename(os.path.abspath(run_dir)))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
