"""``cdssm eval passkey``: a number hidden at a depth in filler, asked for at the end.

Token-level task over a small synthetic vocabulary (V = 256 by default): digits 0–9 are tokens
0–9, markers KEY = 10, END = 11, ASK = 12, filler tokens 16 … V − 1. An example of length T at
depth δ ∈ [0, 1]:

    f₁ … f_a  KEY d₁ … d_K END  f_{a+1} … f_F  ASK d₁ … d_K

with F = T − 2K − 3 i.i.d. uniform filler tokens, a = round(δ·F) of them before the key, and a
K-digit passkey (K = 5, uniform digits). Only the answer is scored: the predictions after ASK,
d₁, …, d_{K−1} (teacher-forced); an example counts as retrieved when all K digits are right.

The models learn the task from scratch: they are trained on such examples with T uniform in
[--train-min-len, --train-len] and δ uniform, then tested on a depth × length grid reaching far
past the training lengths (32k by default): a measure of length generalisation of retrieval,
not of a pretrained LM's passkey ability (a small model trained on text alone scores 0).
"""

import argparse

import numpy as np
from tqdm import tqdm

from ..files import write_json
from .common import (add_common_arguments, args_record, environment, fit, format_table,
                     labelled_predictions, positive_int, pyplot, resolved_precision, row_record,
                     rows_from_args, save_figure, train_settings)

IGNORE = -100
KEY, END, ASK = 10, 11, 12
FIRST_FILLER = 16


def passkey_examples(rng: np.random.Generator, n: int, seq_len: int, depth, digits: int = 5,
                     vocab_size: int = 256) -> tuple:
    """n examples of length ``seq_len``: (input_ids, labels, passkeys), int64 (n, seq_len) twice
    and (n, digits). ``depth``: a float in [0, 1] or an (n,) array of them. labels are unshifted:
    the passkey digits at the last ``digits`` positions, −100 elsewhere."""
    filler_len = seq_len - 2 * digits - 3
    if filler_len < 0:
        raise ValueError(f"seq_len: expected >= 2·digits + 3 = {2 * digits + 3}, got {seq_len}")
    if vocab_size <= FIRST_FILLER:
        raise ValueError(f"vocab_size: expected > {FIRST_FILLER}, got {vocab_size}")
    depth = np.broadcast_to(np.asarray(depth, dtype=np.float64), (n,))
    if not ((depth >= 0) & (depth <= 1)).all():
        raise ValueError(f"depth: expected values in [0, 1], got {depth}")
    keys = rng.integers(0, 10, size=(n, digits))
    filler = rng.integers(FIRST_FILLER, vocab_size, size=(n, filler_len))
    before = np.rint(depth * filler_len).astype(np.int64)
    input_ids = np.empty((n, seq_len), dtype=np.int64)
    block = np.concatenate([np.full((n, 1), KEY), keys, np.full((n, 1), END)], axis=1)
    for i in range(n):
        a = before[i]
        input_ids[i, :seq_len - digits - 1] = np.concatenate(
            [filler[i, :a], block[i], filler[i, a:]])
    input_ids[:, -digits - 1] = ASK
    input_ids[:, -digits:] = keys
    labels = np.full((n, seq_len), IGNORE, dtype=np.int64)
    labels[:, -digits:] = keys
    return input_ids, labels, keys


def retrieved(model, examples, precision: str, batch_size: int) -> tuple:
    """(examples with every digit right, digits right, examples, digits) over ``examples``."""
    import torch

    input_ids, labels = (torch.from_numpy(a) for a in examples[:2])
    whole = digits = 0
    for i in range(0, input_ids.shape[0], batch_size):
        correct, asked = labelled_predictions(model, input_ids[i:i + batch_size],
                                              labels[i:i + batch_size], precision)
        whole += int((correct | ~asked).all(1).sum())
        digits += int(correct.sum())
    return whole, digits, input_ids.shape[0], int((labels != IGNORE).sum())


def _sampler(min_len: int, max_len: int, digits: int, vocab_size: int):
    def sample(rng, batch_size):
        seq_len = int(rng.integers(min_len, max_len + 1))
        input_ids, labels, _ = passkey_examples(rng, batch_size, seq_len,
                                                rng.random(batch_size), digits, vocab_size)
        return input_ids, labels

    return sample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    task = parser.add_argument_group("passkey task")
    task.add_argument("--train-len", type=positive_int, default=2048,
                      help="longest training example (also the model's context_length)")
    task.add_argument("--train-min-len", type=positive_int, default=128,
                      help="shortest training example")
    task.add_argument("--test-lens", nargs="+", type=positive_int,
                      default=[1024, 2048, 4096, 8192, 16384, 32768], metavar="T",
                      help="test lengths")
    task.add_argument("--depths", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                      metavar="DEPTH", help="test depths in [0, 1] (share of filler before "
                                            "the key)")
    task.add_argument("--digits", type=positive_int, default=5, help="passkey digits K")
    task.add_argument("--vocab-size", type=positive_int, default=256,
                      help="vocabulary V (filler tokens 16 … V − 1)")
    task.add_argument("--test-examples", type=positive_int, default=32,
                      help="test examples per (depth, length) cell")
    task.add_argument("--eval-batch-size", type=positive_int, default=8,
                      help="examples per forward when testing")
    add_common_arguments(parser, d_model=128, n_layers=2, steps=1000, batch_size=32, lr=3e-3,
                         out_dir="eval/passkey")


def run(args) -> dict:
    from .synthetic import synthetic_loader_factory

    if not args.train_min_len <= args.train_len:
        raise ValueError(f"--train-min-len: expected <= --train-len = {args.train_len}, got "
                         f"{args.train_min_len}")
    shortest = 2 * args.digits + 3
    for name, values in (("--train-min-len", [args.train_min_len]),
                         ("--test-lens", args.test_lens)):
        if min(values) < shortest:
            raise ValueError(f"{name}: expected lengths >= 2·digits + 3 = {shortest}, got "
                             f"{min(values)}")
    if not all(0 <= d <= 1 for d in args.depths):
        raise ValueError(f"--depths: expected values in [0, 1], got {args.depths}")
    specs = rows_from_args(args)
    precision = resolved_precision(args)
    make_loader = synthetic_loader_factory(
        _sampler(args.train_min_len, args.train_len, args.digits, args.vocab_size))
    train_examples = {"task": "passkey", "train_min_len": args.train_min_len,
                      "digits": args.digits, "vocab_size": args.vocab_size}  # train_len: seq_len
    runs, results = [], []
    for spec in tqdm(specs, desc="passkey rows", unit="model", disable=not args.progress):
        settings = train_settings(args, d_model=args.d_model, seq_len=args.train_len)
        fitted = fit(spec, settings, args.out_dir, make_loader=make_loader,
                     vocab_size=args.vocab_size, examples=train_examples, retrain=args.retrain,
                     progress=args.progress)
        runs.append(row_record(spec, fitted))
        for i, seq_len in enumerate(args.test_lens):
            for j, depth in enumerate(args.depths):
                examples = passkey_examples(np.random.default_rng([args.seed, 2, i, j]),
                                            args.test_examples, seq_len, depth, args.digits,
                                            args.vocab_size)
                whole, digits, n, n_digits = retrieved(fitted.model, examples, precision,
                                                       args.eval_batch_size)
                results.append({"label": spec.label, "seq_len": seq_len, "depth": depth,
                                "retrieved": whole, "examples": n, "accuracy": whole / n,
                                "digit_accuracy": digits / n_digits})
        del fitted
    payload = {"task": "passkey", "args": args_record(args),
               "environment": environment(), "runs": runs, "results": results}
    write_json(f"{args.out_dir}/passkey.json", payload)
    plot(payload, f"{args.out_dir}/passkey.png")
    print(table(payload))
    return payload


def table(payload: dict) -> str:
    """Rows: model; columns: accuracy (all digits) per test length, averaged over depths."""
    lens = payload["args"]["test_lens"]
    header = ["model", "params"] + [f"T={t}" for t in lens]
    rows = []
    for r in payload["runs"]:
        cells = []
        for t in lens:
            hits = [x for x in payload["results"] if x["label"] == r["label"] and x["seq_len"] == t]
            cells.append(f"{sum(x['retrieved'] for x in hits) / sum(x['examples'] for x in hits):.3f}")
        rows.append([r["label"], f"{r['parameters']:,}"] + cells)
    return format_table(header, rows)


def plot(payload: dict, path: str) -> None:
    plt = pyplot()
    lens, depths = payload["args"]["test_lens"], payload["args"]["depths"]
    labels = [r["label"] for r in payload["runs"]]
    fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels) + 0.8, 3.4), dpi=90,
                             squeeze=False)
    acc = {(x["label"], x["seq_len"], x["depth"]): x["accuracy"] for x in payload["results"]}
    for ax, label in zip(axes[0], labels):
        grid = np.array([[acc[(label, t, d)] for t in lens] for d in depths])
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(len(lens)), [f"{t // 1024}k" if t >= 1024 else str(t) for t in lens],
                      fontsize=7)
        ax.set_yticks(range(len(depths)), [f"{d:.2f}" for d in depths], fontsize=7)
        ax.set_xlabel("context length")
        ax.set_title(label, fontsize=9)
        for (yi, xi), value in np.ndenumerate(grid):
            ax.text(xi, yi, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value < 0.6 else "black")
    axes[0, 0].set_ylabel("depth")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="passkey accuracy")
    fig.suptitle(f"passkey retrieval (trained at ≤ {payload['args']['train_len']} tokens)",
                 fontsize=10)
    save_figure(fig, path)
