"""``cdssm eval lm``: language modelling, CD-SSM vs the Transformer at equal tokens.

Every row trains with the same ``cdssm.training`` recipe (AdamW, warmup + cosine, the same
batches: same seed, same data order) on a prepared corpus (``cdssm data prepare``; the bundled
Shakespeare by default) for the same number of steps, so the same tokens. The table reports
parameters (total and without the tied embedding: at small widths the V×d embedding dominates),
tokens, the final val loss (mean CE over ``--eval-batches`` val batches) and perplexity; the
figure the train and val loss curves against tokens.
"""

import argparse
import math

from tqdm import tqdm

from ..files import write_json
from .common import (add_common_arguments, args_record, environment, fit, format_table,
                     positive_int, pyplot, row_record, rows_from_args, save_figure, train_settings)

DEFAULT_DATA = "data/shakespeare"


def add_lm_arguments(parser: argparse.ArgumentParser, out_dir: str) -> None:
    """The corpus and schedule options shared by ``lm`` and ``extrapolation`` (same defaults, so
    both tasks train — or load — the same runs)."""
    data = parser.add_argument_group("corpus")
    data.add_argument("--data-dir", default=DEFAULT_DATA,
                      help="folder from `cdssm data prepare` (train.bin, val.bin, meta.json)")
    data.add_argument("--seq-len", type=positive_int, default=512,
                      help="training context L (the model's context_length)")
    data.add_argument("--eval-every", type=positive_int, default=100,
                      help="val loss every N steps (and at the end)")
    data.add_argument("--eval-batches", type=positive_int, default=8,
                      help="val batches per evaluation")
    add_common_arguments(parser, d_model=256, n_layers=4, steps=600, batch_size=32, lr=2e-3,
                         out_dir=out_dir)


def fit_rows(args) -> list:
    """[(spec, Fitted)] of every row of ``args``, trained (or loaded) on ``--data-dir``."""
    from ..training.loop import read_data_meta

    read_data_meta(args.data_dir)  # a clear error before any training
    fitted = []
    for spec in tqdm(rows_from_args(args), desc="lm rows", unit="model",
                     disable=not args.progress):
        settings = train_settings(args, d_model=args.d_model, seq_len=args.seq_len,
                                  data_dir=args.data_dir, eval_every=args.eval_every,
                                  eval_batches=args.eval_batches)
        fitted.append((spec, fit(spec, settings, args.out_dir, retrain=args.retrain,
                                 progress=args.progress)))
    return fitted


def embedding_parameters(model) -> int:
    return model.embed.weight.numel()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_lm_arguments(parser, out_dir="eval/lm")


def run(args) -> dict:
    from ..training.metrics import read_metrics

    runs = []
    for spec, fitted in fit_rows(args):
        records = read_metrics(fitted.config.out_dir)
        tokens_per_step = fitted.config.tokens_per_step()
        runs.append({**row_record(spec, fitted),
                     "non_embedding_parameters": fitted.parameters
                     - embedding_parameters(fitted.model),
                     "tokens": fitted.config.steps * tokens_per_step,
                     "val_loss": fitted.val_loss,
                     "val_ppl": math.exp(fitted.val_loss),
                     "train_curve": [(r["step"] * tokens_per_step, r["loss"])
                                     for r in records if "loss" in r],
                     "val_curve": [(r["step"] * tokens_per_step, r["val_loss"])
                                   for r in records if "val_loss" in r]})
        del fitted
    payload = {"task": "lm", "args": args_record(args),
               "environment": environment(), "runs": runs}
    write_json(f"{args.out_dir}/lm.json", payload)
    plot(payload, f"{args.out_dir}/lm.png")
    print(table(payload))
    return payload


def table(payload: dict) -> str:
    header = ["model", "params", "non-emb params", "tokens", "val loss", "val ppl", "tok/s"]
    rows = [[r["label"], f"{r['parameters']:,}", f"{r['non_embedding_parameters']:,}",
             f"{r['tokens']:,}", f"{r['val_loss']:.4f}", f"{r['val_ppl']:.2f}",
             "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}"]
            for r in payload["runs"]]
    return format_table(header, rows)


def plot(payload: dict, path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
    for i, r in enumerate(payload["runs"]):
        tokens, loss = zip(*r["train_curve"])
        ax.plot(tokens, loss, color=f"C{i}", linewidth=0.8, alpha=0.5)
        tokens, loss = zip(*r["val_curve"])
        ax.plot(tokens, loss, "o-", color=f"C{i}", markersize=3,
                label=f"{r['label']} ({r['parameters'] / 1e6:.1f}M): val {r['val_loss']:.3f}")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"{payload['args']['data_dir']}: train (thin) and val (dots) loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
