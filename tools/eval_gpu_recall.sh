#!/usr/bin/env bash
# Device call 3 behind docs/evaluation.md § Recall: MQAR at T = 256 (widths 64–256) and
# T = 1024 (d 128), passkey trained at ≤ 512 tokens; one process per row (tools/eval_rows.sh).
# Results (JSON, PNG, logs, each run's config.json and metrics.jsonl; not the weights) go into
# $OUT/recall.tar.gz.     usage: tools/eval_gpu_recall.sh [LIMIT_SECONDS]   (after pip install -e .)
source "$(dirname "$0")/eval_rows.sh" "${1:-420}"
MQAR="--seq-lens 256 --pairs 4 16 64 --vocab-size 1024 --steps 1200 --batch-size 128 --lr 3e-3"
for d in 64 128 256; do
  row mqar "transformer-d$d" $MQAR --d-model $d --arch transformer
done
for p in 1 8; do
  for d in 64 128 256; do
    row mqar "cdssm-P$p-d$d" $MQAR --d-model $d --arch cdssm --state-pairs $p
  done
done
# T = 1024 at one width (same tokens per step: batch 32)
MQAR1K="--seq-lens 1024 --pairs 16 64 256 --vocab-size 2048 --steps 1200 --batch-size 32 --lr 3e-3"
row mqar.1k transformer-d128 $MQAR1K --d-model 128 --arch transformer
row mqar.1k cdssm-P1-d128 $MQAR1K --d-model 128 --arch cdssm --state-pairs 1
row mqar.1k cdssm-P8-d128 $MQAR1K --d-model 128 --arch cdssm --state-pairs 8
PASSKEY="--train-len 512 --train-min-len 64 --test-lens 512 1024 2048 4096 8192 16384 32768
         --steps 1500 --batch-size 64 --lr 3e-3 --d-model 128"
row passkey transformer $PASSKEY --arch transformer
row passkey cdssm-P1 $PASSKEY --arch cdssm --state-pairs 1
row passkey cdssm-P8 $PASSKEY --arch cdssm --state-pairs 8
finish_rows recall
