#!/usr/bin/env bash
# MQAR and passkey runs behind docs/evaluation.md § Recall: one `cdssm eval` process per row, all
# side by side on one GPU (the models are small: one process leaves the GPU mostly idle) under
# one deadline, so the whole command fits a 10-minute device call; a row still training at the
# deadline is killed and leaves no result. tools/eval_merge.py then joins the rows of each task
# into one table and figure. Results (JSON, PNG, logs, each run's config.json and
# metrics.jsonl; not the weights) go into $OUT/recall.tar.gz.
#   usage: tools/eval_gpu_recall.sh [LIMIT_SECONDS]        (after pip install -e .)
set -u
LIMIT=${1:-420}
OUT=${OUT:-out}
DEADLINE=$(( $(date +%s) + LIMIT ))
until_deadline() {  # cdssm eval ARGS, killed at the deadline shared by all rows
  local left=$(( DEADLINE - $(date +%s) ))
  [ "$left" -gt 10 ] && timeout "$left" python3 -m cdssm eval "$@"
}
mkdir -p eval/logs
MQAR="--seq-lens 256 --pairs 4 16 64 --vocab-size 1024 --steps 1200 --batch-size 128 --lr 3e-3"
ROWS=""  # GROUP/NAME of every row, in table order
row() {  # GROUP NAME OPTIONS...: one row of `cdssm eval TASK` (TASK = GROUP without a trailing
  local group=$1 name=$2  # 1k) in the background, into eval/GROUP-rows/NAME
  shift 2
  ROWS="$ROWS $group/$name"
  until_deadline "${group%1k}" "$@" --no-progress --out-dir "eval/$group-rows/$name" \
    > "eval/logs/$group-$name.log" 2>&1 &
}
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
row mqar1k transformer-d128 $MQAR1K --d-model 128 --arch transformer
row mqar1k cdssm-P1-d128 $MQAR1K --d-model 128 --arch cdssm --state-pairs 1
row mqar1k cdssm-P8-d128 $MQAR1K --d-model 128 --arch cdssm --state-pairs 8
PASSKEY="--train-len 512 --train-min-len 64 --test-lens 512 1024 2048 4096 8192 16384 32768
         --steps 1500 --batch-size 64 --lr 3e-3 --d-model 128"
row passkey transformer $PASSKEY --arch transformer
row passkey cdssm-P1 $PASSKEY --arch cdssm --state-pairs 1
row passkey cdssm-P8 $PASSKEY --arch cdssm --state-pairs 8
wait
for group in mqar mqar1k passkey; do
  task=${group%1k}
  done_rows=$(for r in $ROWS; do f="eval/$group-rows/${r#*/}/$task.json";
              [ "${r%%/*}" = "$group" ] && [ -f "$f" ] && echo "$f"; done)
  echo "== $group: $(echo $done_rows | wc -w) rows finished"
  [ -n "$done_rows" ] && python3 tools/eval_merge.py "eval/$group" $done_rows
done
python3 - <<'PY'  # every row's last logged step: rows the deadline killed show how far they got
import glob, json
for path in sorted(glob.glob("eval/*-rows/*/runs/*/metrics.jsonl")):
    last = [json.loads(line) for line in open(path) if '"loss"' in line][-1:]
    if last:
        print(f"{path.split('/')[1]:>14} {path.split('/')[2]:>18}: step {last[0]['step']:>5} "
              f"loss {last[0]['loss']:.3f} {last[0]['tokens_per_s']:,.0f} tok/s")
PY
for f in eval/logs/*.log; do
  grep -q "Traceback" "$f" && { echo "== $f"; tail -5 "$f"; }
done
mkdir -p "$OUT"
tar czf "$OUT/recall.tar.gz" --exclude "*.safetensors" --exclude "*.pt" eval
ls -la "$OUT"
