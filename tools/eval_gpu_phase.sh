#!/usr/bin/env bash
# Device call behind docs/evaluation.md § "The rotating state": MQAR on the T = 64 grid of
# tools/eval_gpu_recall_part2.sh (2,000 steps, batch 256), CD-SSM P = 1 and 8 at d 128 as
# specified and with arg z forced to 0 (tools/eval_no_phase.py), plus a longer pair at P = 8.
# One process per row (tools/eval_rows.sh); results into $OUT/phase.tar.gz.
#   usage: tools/eval_gpu_phase.sh [LIMIT_SECONDS]        (after pip install -e .)
source "$(dirname "$0")/eval_rows.sh" "${1:-420}"
T64="--seq-lens 64 --pairs 4 8 16 --vocab-size 128 --batch-size 256 --lr 3e-3 --d-model 128 --arch cdssm"
for p in 1 8; do
  row mqar.t64 "cdssm-P$p-d128" $T64 --steps 2000 --state-pairs $p
  EVAL="python3 tools/eval_no_phase.py" row mqar.t64-phase0 "cdssm-P$p-d128" $T64 --steps 2000 --state-pairs $p
done
row mqar.t64-5k cdssm-P8-d128 $T64 --steps 5000 --state-pairs 8
EVAL="python3 tools/eval_no_phase.py" row mqar.t64-5k-phase0 cdssm-P8-d128 $T64 --steps 5000 --state-pairs 8
finish_rows phase
