"""Merge ``cdssm eval TASK`` results whose rows were trained apart into one table and figure.

On one GPU the rows of a task run fastest as separate processes side by side (one row each,
e.g. ``--arch transformer`` / ``--arch cdssm --state-pairs 8``, each with its own --out-dir);
this reads their TASK.json files, checks that they differ only in the rows
(``cdssm.evaluation.common.merge_payloads``), and writes OUT_DIR/TASK.json and OUT_DIR/TASK.png
and prints the table, as the all-rows command would.

Example: python tools/eval_merge.py eval/mqar eval/mqar-rows/*/mqar.json
"""

import argparse
import importlib
import json
import os

from cdssm.evaluation.common import merge_payloads
from cdssm.files import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="where TASK.json and TASK.png are written")
    parser.add_argument("results", nargs="+", help="TASK.json files of one task")
    args = parser.parse_args()
    payloads = []
    for path in args.results:
        with open(path) as f:
            payloads.append(json.load(f))
    merged = merge_payloads(payloads)
    task = importlib.import_module(f"cdssm.evaluation.{merged['task']}")
    os.makedirs(args.out_dir, exist_ok=True)
    write_json(os.path.join(args.out_dir, f"{merged['task']}.json"), merged)
    task.plot(merged, os.path.join(args.out_dir, f"{merged['task']}.png"))
    print(task.table(merged))


if __name__ == "__main__":
    main()
