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
ROWS=""  # TASK/NAME of every row, in table order
row() {  # TASK NAME OPTIONS...: one row in the background, into eval/TASK-rows/NAME
  local task=$1 name=$2
  shift 2
  ROWS="$ROWS $task/$name"
  until_deadline "$task" "$@" --no-progress --out-dir "eval/$task-rows/$name" \
    > "eval/logs/$task-$name.log" 2>&1 &
}
for d in 64 128 256; do
  row mqar "transformer-d$d" $MQAR --d-model $d --arch transformer
done
for p in 1 2 4 8; do
  for d in 64 128 256; do  # P = 2 and 4 at d = 128 only
    [ "$p" -eq 1 ] || [ "$p" -eq 8 ] || [ "$d" -eq 128 ] &&
      row mqar "cdssm-P$p-d$d" $MQAR --d-model $d --arch cdssm --state-pairs $p
  done
done
PASSKEY="--train-len 512 --train-min-len 64 --test-lens 512 1024 2048 4096 8192 16384 32768
         --steps 1500 --batch-size 64 --lr 3e-3 --d-model 128"
row passkey transformer $PASSKEY --arch transformer
row passkey cdssm-P1 $PASSKEY --arch cdssm --state-pairs 1
row passkey cdssm-P8 $PASSKEY --arch cdssm --state-pairs 8
wait
for task in mqar passkey; do
  done_rows=$(for r in $ROWS; do f="eval/$task-rows/${r#*/}/$task.json";
              [ "${r%%/*}" = "$task" ] && [ -f "$f" ] && echo "$f"; done)
  echo "== $task: $(echo $done_rows | wc -w) rows finished"
  python3 tools/eval_merge.py "eval/$task" $done_rows
done
for f in eval/logs/*.log; do
  grep -q "Traceback" "$f" && { echo "== $f"; tail -5 "$f"; }
done
mkdir -p "$OUT"
tar czf "$OUT/recall.tar.gz" --exclude "*.safetensors" --exclude "*.pt" eval
ls -la "$OUT"
