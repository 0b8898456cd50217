#!/usr/bin/env bash
# The GPU runs behind docs/evaluation.md: four `cdssm eval` job chains side by side on one GPU
# (the models are small, so one process leaves the GPU mostly idle), all chains under one
# deadline so the whole command fits a 10-minute device call. Results (JSON, PNG, logs; not the
# trained runs) go into $OUT/evaluation.tar.gz.
#   usage: tools/eval_gpu.sh DATA_DIR [LIMIT_SECONDS]
# DATA_DIR: a `cdssm data prepare --val-fraction 0.1` folder of the bundled Shakespeare.
set -u
DATA=${1:?DATA_DIR}
LIMIT=${2:-420}
OUT=${OUT:-out}
DEADLINE=$(( $(date +%s) + LIMIT ))
E=until_deadline
until_deadline() {  # cdssm eval ARGS, killed at the deadline shared by all chains
  local left=$(( DEADLINE - $(date +%s) ))
  [ "$left" -gt 10 ] && timeout "$left" python3 -m cdssm eval "$@"
}
mkdir -p eval/logs
MQAR="--seq-lens 256 1024 --pairs 16 64 256 --steps 1500 --batch-size 32"
(
  $E mqar $MQAR --d-model 64 --out-dir eval/mqar --no-progress &&
  $E mqar $MQAR --d-model 64 128 --out-dir eval/mqar --no-progress &&
  $E mqar $MQAR --d-model 64 128 256 --out-dir eval/mqar --no-progress
) > eval/logs/mqar.log 2>&1 &
(
  $E passkey --steps 1500 --batch-size 16 --out-dir eval/passkey --no-progress
) > eval/logs/passkey.log 2>&1 &
(
  $E lm --data-dir "$DATA" --out-dir eval/lm --no-progress &&
  $E extrapolation --data-dir "$DATA" --out-dir eval/lm --no-progress &&
  $E lm --data-dir "$DATA" --arch cdssm --state-pairs 1 --ablation all \
    --out-dir eval/lm-ablation --no-progress
) > eval/logs/lm.log 2>&1 &
(
  $E mqar $MQAR --d-model 128 --arch cdssm --state-pairs 1 --ablation all \
    --out-dir eval/mqar-ablation --no-progress
) > eval/logs/mqar-ablation.log 2>&1 &
wait
for f in eval/logs/*.log; do echo "== $f"; grep -v "^\s*$" "$f" | tail -25; done
mkdir -p "$OUT"
tar czf "$OUT/evaluation.tar.gz" --exclude runs eval
