#!/usr/bin/env bash
# Device call 4 behind docs/evaluation.md § Recall, after call 3 (tools/eval_gpu_recall.sh)
# left the Transformer at the copy stage and CD-SSM at chance: the Transformer at T = 256 for
# 2,500 steps; CD-SSM at every width and P on the T = 64 grid the Transformer solves on CPU,
# with larger batches (and two other learning rates); passkey trained at ≤ 128 tokens.
# One process per row (tools/eval_rows.sh); results into $OUT/recall2.tar.gz.
#   usage: tools/eval_gpu_recall_part2.sh [LIMIT_SECONDS]        (after pip install -e .)
source "$(dirname "$0")/eval_rows.sh" "${1:-420}"
MQAR="--seq-lens 256 --pairs 4 16 64 --vocab-size 1024 --steps 2500 --batch-size 128 --lr 3e-3"
for d in 64 128 256; do
  row mqar "transformer-d$d" $MQAR --d-model $d --arch transformer
done
T64="--seq-lens 64 --pairs 4 8 16 --vocab-size 128 --steps 2000 --batch-size 256"
row mqar.t64 transformer-d64 $T64 --lr 3e-3 --d-model 64 --arch transformer
for p in 1 8; do
  for d in 64 128 256; do
    row mqar.t64 "cdssm-P$p-d$d" $T64 --lr 3e-3 --d-model $d --arch cdssm --state-pairs $p
  done
done
for p in 2 4; do
  row mqar.t64 "cdssm-P$p-d128" $T64 --lr 3e-3 --d-model 128 --arch cdssm --state-pairs $p
done
for lr in 1e-3 1e-2; do
  row "mqar.t64-lr$lr" cdssm-P8-d128 $T64 --lr $lr --d-model 128 --arch cdssm --state-pairs 8
done
PASSKEY="--train-len 128 --train-min-len 32 --test-lens 128 512 1024 4096 16384 32768
         --steps 2000 --batch-size 256 --lr 3e-3 --d-model 128"
row passkey transformer $PASSKEY --arch transformer
row passkey cdssm-P1 $PASSKEY --arch cdssm --state-pairs 1
row passkey cdssm-P8 $PASSKEY --arch cdssm --state-pairs 8
finish_rows recall2
