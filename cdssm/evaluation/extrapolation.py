"""``cdssm eval extrapolation``: val loss by position when reading far past the training context.

The rows of ``cdssm eval lm`` (same options and defaults, so the same runs are loaded when that
task ran first into the same --out-dir) are trained at context L, then read val windows of
F_max·L tokens in one forward each. Both models are causal, so the loss at position t does not
depend on the window's length: one F_max·L forward gives the loss at every length F·L ≤ F_max·L.
CD-SSM carries everything before t in its recurrent state (no positions anywhere); the
Transformer attends over all t tokens with rotary positions it never saw beyond L.

Reported: mean CE over the windows per position bucket [0, L), [L, 2L), [2L, 4L), …, and the
finer curve (bins of L/4) in the figure.
"""

import argparse

import numpy as np
from tqdm import tqdm

from ..files import write_json
from .common import (args_record, environment, format_table, positive_int, pyplot,
                     resolved_precision, row_record, save_figure)
from .lm import add_lm_arguments, fit_rows


def val_windows(data_dir: str, length: int, count: int):
    """(n, length) int64: the first n = min(count, ⌊N/length⌋) consecutive windows of the val
    split (ValueError when it holds fewer than ``length`` tokens)."""
    import torch

    from ..training.data import load_meta, shard_path

    meta = load_meta(data_dir)
    tokens = np.memmap(shard_path(data_dir, "val"), dtype=np.dtype(meta["dtype"]), mode="r")
    n = min(count, tokens.shape[0] // length)
    if n == 0:
        raise ValueError(f"--factors: the val split of {data_dir} has {tokens.shape[0]} tokens, "
                         f"fewer than one window of {length}; prepare a larger val split "
                         f"(`cdssm data prepare --val-fraction 0.1 --out DIR`) or lower "
                         f"--factors / --seq-len")
    return torch.from_numpy(np.asarray(tokens[:n * length], dtype=np.int64).reshape(n, length))


def position_losses(model, windows, precision: str, progress: bool):
    """(T − 1,) float64: CE of predicting token t + 1 at position t, averaged over windows
    (one forward per window)."""
    import torch
    import torch.nn.functional as F

    from ..training.precision import autocast

    device = next(model.parameters()).device
    total = torch.zeros(windows.shape[1] - 1, dtype=torch.float64)
    for window in tqdm(windows, desc="windows", leave=False, disable=not progress):
        ids = window[None].to(device)
        with torch.no_grad(), autocast(precision, device):
            logits = model(ids).logits[0, :-1]  # (T − 1, V)
        total += F.cross_entropy(logits.float(), ids[0, 1:], reduction="none").double().cpu()
    return total / windows.shape[0]


def buckets(train_len: int, factors) -> list:
    """[(start, end)] position ranges: [0, L), then [F_{i−1}·L, F_i·L) for each factor > 1."""
    edges = [0, train_len] + [f * train_len for f in sorted(factors) if f > 1]
    return list(zip(edges[:-1], edges[1:]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    task = parser.add_argument_group("extrapolation")
    task.add_argument("--factors", nargs="+", type=positive_int, default=[2, 4, 8, 16],
                      metavar="F", help="evaluate up to F × L tokens (buckets at every F)")
    task.add_argument("--windows", type=positive_int, default=16,
                      help="val windows of max(F)·L tokens to average over")
    add_lm_arguments(parser, out_dir="eval/lm")


def run(args) -> dict:
    precision = resolved_precision(args)
    length = max(args.factors + [1]) * args.seq_len
    windows = val_windows(args.data_dir, length, args.windows)
    ranges = buckets(args.seq_len, args.factors)
    runs, results = [], []
    for spec, fitted in fit_rows(args):
        runs.append(row_record(spec, fitted))
        losses = position_losses(fitted.model, windows, precision, args.progress)
        # loss at position t predicts token t + 1: bucket [a, b) takes positions a … b − 1
        bucket_losses = [float(losses[a:b].mean()) for a, b in ranges]
        bin_width = max(1, args.seq_len // 4)
        curve = [(a, float(losses[a:a + bin_width].mean()))
                 for a in range(0, losses.shape[0], bin_width)]
        results.append({"label": spec.label, "buckets": [list(r) for r in ranges],
                        "bucket_loss": bucket_losses, "curve_bin": bin_width, "curve": curve})
        del fitted
    payload = {"task": "extrapolation", "args": args_record(args),
               "windows": int(windows.shape[0]), "window_len": length,
               "environment": environment(), "runs": runs, "results": results}
    write_json(f"{args.out_dir}/extrapolation.json", payload)
    plot(payload, f"{args.out_dir}/extrapolation.png")
    print(table(payload))
    return payload


def _bucket_name(a: int, b: int, train_len: int) -> str:
    return f"[{a // train_len}L,{b // train_len}L)"


def table(payload: dict) -> str:
    L = payload["args"]["seq_len"]
    ranges = payload["results"][0]["buckets"]
    header = ["model"] + [_bucket_name(a, b, L) for a, b in ranges]
    rows = [[r["label"]] + [f"{x:.3f}" for x in r["bucket_loss"]] for r in payload["results"]]
    return format_table(header, rows)


def plot(payload: dict, path: str) -> None:
    plt = pyplot()
    L = payload["args"]["seq_len"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
    for i, r in enumerate(payload["results"]):
        pos, loss = zip(*r["curve"])
        half = r["curve_bin"] / 2  # at bin centres
        ax.plot([(p + half) / L for p in pos], loss, color=f"C{i}", label=r["label"])
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1, label="training context L")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"position / L (L = {L}; bins of {payload['results'][0]['curve_bin']})")
    ax.set_ylabel("val cross-entropy (nats/token)")
    ax.set_title(f"{payload['args']['data_dir']}: loss by position, "
                 f"{payload['windows']} windows of {payload['window_len']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
