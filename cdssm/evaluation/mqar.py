"""``cdssm eval mqar``: multi-query associative recall (Zoology, Arora et al. 2023).

An example of length T with K pairs (the Zoology ``multiquery_ar`` format): the first 2K tokens
are K key-value pairs k₁ v₁ … k_K v_K (keys distinct, drawn from 1 … V/2 − 1; values distinct,
from V/2 … V − 1); the remaining T − 2K positions hold each key once more as a query, at even
offsets 2·g from the end of the pairs, the gaps g drawn without replacement from 0 … (T−2K)/2 − 1
with probability ∝ (g + 1)^(a − 1), a = 0.01 (queries cluster early); every other position is a
uniformly random token. The token after a query is its value: the model is asked (and scored)
only there. Accuracy = correct greedy predictions / queries, over a fixed test set per cell.

Each row (model) and width is trained once on batches whose cell (T, K) is drawn uniformly from
the grid's cells, then tested on every cell.
"""

import argparse
import itertools

import numpy as np
from tqdm import tqdm

from ..files import write_json
from .common import (add_common_arguments, args_record, environment, fit, format_table,
                     labelled_predictions, positive_int, pyplot, resolved_precision, row_record,
                     rows_from_args, save_figure, train_settings)

IGNORE = -100
POWER_A = 0.01


def check_cell(seq_len: int, num_pairs: int, vocab_size: int) -> None:
    """Zoology's constraints: T even, 4K ≤ T, V > T (and V ≥ 2K + 2 for distinct keys/values)."""
    if seq_len % 2:
        raise ValueError(f"seq_len: expected an even length, got {seq_len}")
    if num_pairs < 1 or 4 * num_pairs > seq_len:
        raise ValueError(f"num_pairs: expected 1 <= 4·num_pairs <= seq_len = {seq_len}, got "
                         f"{num_pairs}")
    if vocab_size <= seq_len or vocab_size // 2 - 1 < num_pairs:
        raise ValueError(f"vocab_size: expected > seq_len = {seq_len} and room for "
                         f"{num_pairs} distinct keys, got {vocab_size}")


def _distinct(rng, n: int, low: int, high: int, count: int) -> np.ndarray:
    """(n, count) int64: per row, ``count`` distinct integers of [low, high), uniformly."""
    return np.argsort(rng.random((n, high - low)), axis=1)[:, :count] + low


def mqar_examples(rng: np.random.Generator, n: int, seq_len: int, num_pairs: int,
                  vocab_size: int) -> tuple:
    """n MQAR examples: (input_ids, labels), int64 (n, seq_len); labels unshifted (the value at
    the position after each query, −100 elsewhere), as ``CausalLM.forward`` takes them."""
    check_cell(seq_len, num_pairs, vocab_size)
    half = vocab_size // 2
    context = 2 * num_pairs
    keys = _distinct(rng, n, 1, half, num_pairs)
    values = _distinct(rng, n, half, vocab_size, num_pairs)
    space = (seq_len - context) // 2
    p = POWER_A * np.arange(1, space + 1) ** (POWER_A - 1)
    p /= p.sum()
    gaps = np.stack([rng.choice(space, num_pairs, replace=False, p=p) for _ in range(n)])
    # Zoology builds seq_len + 1 tokens and labels, then drops the last input / first label.
    tokens = np.zeros((n, seq_len + 1), dtype=np.int64)
    tokens[:, 0:context:2], tokens[:, 1:context:2] = keys, values
    rows = np.arange(n)[:, None]
    tokens[rows, context + 2 * gaps] = keys
    targets = np.full((n, seq_len + 1), IGNORE, dtype=np.int64)
    targets[rows, context + 2 * gaps + 1] = values
    input_ids = tokens[:, :-1]
    noise = rng.integers(0, vocab_size, size=input_ids.shape)
    input_ids = np.where(input_ids == 0, noise, input_ids)
    return input_ids, targets[:, :-1].copy()


def cells(seq_lens, pairs) -> list:
    """The grid's (T, K) cells with 4K ≤ T, in order."""
    return [(t, k) for t, k in itertools.product(seq_lens, pairs) if 4 * k <= t]


def _sampler(grid: list, vocab_size: int):
    def sample(rng, batch_size):
        seq_len, num_pairs = grid[rng.integers(len(grid))]
        return mqar_examples(rng, batch_size, seq_len, num_pairs, vocab_size)

    return sample


def accuracy(model, examples, precision: str, batch_size: int) -> tuple:
    """(correct queries, queries) of ``model`` over ``examples`` = (input_ids, labels)."""
    import torch

    input_ids, labels = (torch.from_numpy(a) for a in examples)
    correct = asked = 0
    for i in range(0, input_ids.shape[0], batch_size):
        c, a = labelled_predictions(model, input_ids[i:i + batch_size],
                                    labels[i:i + batch_size], precision)
        correct, asked = correct + int(c.sum()), asked + int(a.sum())
    return correct, asked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    task = parser.add_argument_group("MQAR grid")
    task.add_argument("--seq-lens", nargs="+", type=positive_int, default=[256, 1024],
                      metavar="T", help="sequence lengths (even)")
    task.add_argument("--pairs", nargs="+", type=positive_int, default=[16, 64, 256],
                      metavar="K", help="key-value pairs (cells with 4K > T are skipped)")
    task.add_argument("--vocab-size", type=positive_int, default=8192,
                      help="vocabulary V (keys below V/2, values above; Zoology: 8192)")
    task.add_argument("--test-examples", type=positive_int, default=256,
                      help="test examples per cell")
    task.add_argument("--eval-batch-size", type=positive_int, default=64,
                      help="examples per forward when testing")
    add_common_arguments(parser, d_model=[64, 128], n_layers=2, steps=1000, batch_size=64,
                         lr=3e-3, out_dir="eval/mqar")


def run(args) -> dict:
    from .synthetic import synthetic_loader_factory

    grid = cells(args.seq_lens, args.pairs)
    if not grid:
        raise ValueError("--pairs: no cell has 4·pairs <= seq_len")
    for seq_len, num_pairs in grid:
        check_cell(seq_len, num_pairs, args.vocab_size)
    specs = rows_from_args(args)
    precision = resolved_precision(args)
    tests = {cell: mqar_examples(np.random.default_rng([args.seed, 2, i]), args.test_examples,
                                 *cell, args.vocab_size) for i, cell in enumerate(grid)}
    make_loader = synthetic_loader_factory(_sampler(grid, args.vocab_size))
    train_examples = {"task": "mqar", "cells": grid, "vocab_size": args.vocab_size}
    runs, results = [], []
    jobs = [(spec, d) for d in args.d_model for spec in specs]
    for spec, d_model in tqdm(jobs, desc="mqar rows", unit="model", disable=not args.progress):
        settings = train_settings(args, d_model=d_model, seq_len=max(args.seq_lens))
        fitted = fit(spec, settings, args.out_dir, make_loader=make_loader,
                     vocab_size=args.vocab_size, examples=train_examples, retrain=args.retrain,
                     progress=args.progress)
        runs.append({**row_record(spec, fitted), "d_model": d_model})
        for (seq_len, num_pairs), examples in tests.items():
            correct, asked = accuracy(fitted.model, examples, precision, args.eval_batch_size)
            results.append({"label": spec.label, "d_model": d_model, "seq_len": seq_len,
                            "num_pairs": num_pairs, "correct": correct, "queries": asked,
                            "accuracy": correct / asked})
        del fitted
    payload = {"task": "mqar", "args": args_record(args),
               "cells": grid, "environment": environment(), "runs": runs, "results": results}
    write_json(f"{args.out_dir}/mqar.json", payload)
    plot(payload, f"{args.out_dir}/mqar.png")
    print(table(payload))
    return payload


def table(payload: dict) -> str:
    """Rows: model@width (with parameters); columns: accuracy per cell T/K."""
    grid = [tuple(c) for c in payload["cells"]]
    acc = {(r["label"], r["d_model"], r["seq_len"], r["num_pairs"]): r["accuracy"]
           for r in payload["results"]}
    header = ["model", "d", "params"] + [f"T{t}/K{k}" for t, k in grid]
    rows = [[r["label"], r["d_model"], f"{r['parameters']:,}"]
            + [f"{acc[(r['label'], r['d_model'], t, k)]:.3f}" for t, k in grid]
            for r in payload["runs"]]
    return format_table(header, rows)


def plot(payload: dict, path: str) -> None:
    plt = pyplot()
    seq_lens = sorted({c[0] for c in payload["cells"]})
    widths = sorted({r["d_model"] for r in payload["runs"]})
    labels = list(dict.fromkeys(r["label"] for r in payload["runs"]))
    acc = {(r["label"], r["d_model"], r["seq_len"], r["num_pairs"]): r["accuracy"]
           for r in payload["results"]}
    fig, axes = plt.subplots(2, len(seq_lens), figsize=(4.2 * len(seq_lens), 7), dpi=90,
                             squeeze=False)
    colors = {label: f"C{i}" for i, label in enumerate(labels)}
    for j, t in enumerate(seq_lens):
        pairs = sorted({c[1] for c in payload["cells"] if c[0] == t})
        ax = axes[0, j]  # accuracy vs pairs, one line per (model, width)
        for label in labels:
            for w_i, d in enumerate(widths):
                ys = [acc.get((label, d, t, k)) for k in pairs]
                if None not in ys:
                    ax.plot(pairs, ys, marker="o", color=colors[label],
                            alpha=0.4 + 0.6 * (w_i + 1) / len(widths),
                            label=f"{label} d={d}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("key-value pairs K")
        ax.set_title(f"T = {t}: accuracy vs pairs")
        ax = axes[1, j]  # accuracy vs width at the most pairs
        k = pairs[-1]
        for label in labels:
            points = [(d, acc[(label, d, t, k)]) for d in widths if (label, d, t, k) in acc]
            if points:
                ax.plot(*zip(*points), marker="o", color=colors[label], label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("model width d")
        ax.set_title(f"T = {t}, K = {k}: accuracy vs width")
        for ax in axes[:, j]:
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("query accuracy")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
