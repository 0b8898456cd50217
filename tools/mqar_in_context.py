"""MQAR diagnostic: does a trained row recall, or only copy *some* value from the context?

For every row trained by ``cdssm eval mqar`` under OUT/runs/, rebuilds the same test sets as the
CLI (seed s, cell i: rng [s, 2, i]) and prints, per cell (T, K), the query accuracy and the share
of greedy predictions that are one of the example's K in-context values. A model that copies a
random in-context value scores ≈ 1/K accuracy with share ≈ 1; uniform guessing over the V/2
values scores 2/V with share 2K/V; recall scores accuracy ≈ share ≈ 1.

Example: python tools/mqar_in_context.py /tmp/mqar-cpu --seq-len 64 --pairs 4 8 16 --vocab-size 128
"""

import argparse
import glob
import os

import numpy as np
import torch

from cdssm.evaluation.mqar import cells, mqar_examples
from cdssm.models.lm_loss import IGNORE_INDEX, shift_labels
from cdssm.models.registry import ARCHITECTURES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="the --out-dir of a cdssm eval mqar run")
    parser.add_argument("--seq-lens", nargs="+", type=int, required=True, help="as in the run")
    parser.add_argument("--pairs", nargs="+", type=int, required=True, help="as in the run")
    parser.add_argument("--vocab-size", type=int, required=True, help="as in the run")
    parser.add_argument("--test-examples", type=int, default=256, help="as in the run")
    parser.add_argument("--seed", type=int, default=0, help="as in the run")
    args = parser.parse_args()
    grid = cells(args.seq_lens, args.pairs)
    for run in sorted(glob.glob(os.path.join(args.out_dir, "runs", "*"))):
        arch = os.path.basename(run).split("-")[0]
        model = ARCHITECTURES[arch].from_pretrained(os.path.join(run, "final")).eval()
        report = []
        for i, (seq_len, k) in enumerate(grid):
            x, y = mqar_examples(np.random.default_rng([args.seed, 2, i]), args.test_examples,
                                 seq_len, k, args.vocab_size)
            x, target = torch.from_numpy(x), shift_labels(torch.from_numpy(y))
            with torch.no_grad():
                pred = model(x).logits.argmax(-1)  # (B, T)
            asked = target != IGNORE_INDEX
            values = x[:, 1:2 * k:2]  # (B, K) the in-context values
            in_context = (pred.unsqueeze(-1) == values.unsqueeze(1)).any(-1)
            report.append(f"T{seq_len}/K{k}: accuracy {(pred == target)[asked].float().mean():.3f}"
                          f", in-context share {in_context[asked].float().mean():.3f}")
        print(f"{os.path.basename(run)} | " + "; ".join(report))


if __name__ == "__main__":
    main()
