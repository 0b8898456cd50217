#!/usr/bin/env bash
# Second device call behind docs/evaluation.md (after `pip install -e .`, like tools/eval_gpu.sh):
# passkey, MQAR at T = 256 and the LM ablations, smaller than the first
# call's versions of them, which did not finish (passkey, ablations) or learned nothing (MQAR
# with 1,500 steps over a T ≤ 1024, K ≤ 256 mixture). Three chains side by side under one
# deadline; results into $OUT/evaluation2.tar.gz.   usage: tools/eval_gpu_part2.sh DATA_DIR [LIMIT]
set -u
DATA=${1:?DATA_DIR}
LIMIT=${2:-300}
OUT=${OUT:-out}
DEADLINE=$(( $(date +%s) + LIMIT ))
until_deadline() {
  local left=$(( DEADLINE - $(date +%s) ))
  [ "$left" -gt 10 ] && timeout "$left" python3 -m cdssm eval "$@"
}
mkdir -p eval/logs2
until_deadline passkey --train-len 1024 --train-min-len 128 --steps 600 --batch-size 16 \
  --out-dir eval/passkey --no-progress > eval/logs2/passkey.log 2>&1 &
until_deadline mqar --seq-lens 256 --pairs 16 64 --d-model 128 --steps 1500 --batch-size 64 \
  --out-dir eval/mqar256 --no-progress > eval/logs2/mqar256.log 2>&1 &
until_deadline lm --data-dir "$DATA" --d-model 128 --n-layers 2 --steps 300 --arch cdssm \
  --state-pairs 1 --ablation all --out-dir eval/lm-ablation-small --no-progress \
  > eval/logs2/lm-ablation.log 2>&1 &
wait
for f in eval/logs2/*.log; do echo "== $f"; grep -v "^\s*$" "$f" | tail -14; done
mkdir -p "$OUT"
tar czf "$OUT/evaluation2.tar.gz" --exclude runs eval/passkey eval/mqar256 eval/lm-ablation-small eval/logs2 eval/mqar-ablation eval/lm-ablation 2>/dev/null
ls -la "$OUT"
