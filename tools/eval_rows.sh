# Sourced by tools/eval_gpu_recall*.sh: one `cdssm eval` process per row, side by side on one GPU
# (the models are small: one process leaves the GPU mostly idle), all under one deadline so the
# whole command fits a 10-minute device call; a row still training at the deadline is killed
# and leaves no result. merge_rows joins each group's finished rows into one table and figure
# (tools/eval_merge.py); finish_rows packs the results into $OUT.
#   usage: source tools/eval_rows.sh LIMIT_SECONDS   (the deadline is LIMIT_SECONDS from now)

set -u
DEADLINE=$(( $(date +%s) + ${1:-420} ))
OUT=${OUT:-out}
ROWS=""  # GROUP/NAME of every row, in table order

until_deadline() {  # $EVAL ARGS (default `cdssm eval`), killed at $DEADLINE
  local left=$(( DEADLINE - $(date +%s) ))
  [ "$left" -gt 10 ] && timeout "$left" ${EVAL:-python3 -m cdssm eval} "$@"
}

row() {  # GROUP NAME OPTIONS...: one row of `cdssm eval TASK` in the background, into
  local group=$1 name=$2  # eval/GROUP-rows/NAME; TASK is GROUP up to its first dot. `EVAL=CMD
  shift 2                 # row ...` runs CMD TASK ... instead (e.g. tools/eval_no_phase.py)
  ROWS="$ROWS $group/$name"
  mkdir -p eval/logs
  until_deadline "${group%%.*}" "$@" --no-progress --out-dir "eval/$group-rows/$name" \
    > "eval/logs/$group-$name.log" 2>&1 &
}

merge_rows() {  # after `wait`: eval/GROUP/TASK.{json,png} per group, tables, last steps, errors
  local groups group task done_rows f
  groups=$(for r in $ROWS; do echo "${r%%/*}"; done | awk '!seen[$0]++')
  for group in $groups; do
    task=${group%%.*}
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
        print(f"{path.split('/')[1]:>18} {path.split('/')[2]:>18}: step {last[0]['step']:>5} "
              f"loss {last[0]['loss']:.3f} {last[0]['tokens_per_s']:,.0f} tok/s")
PY
  for f in eval/logs/*.log; do
    grep -q "Traceback" "$f" && { echo "== $f"; tail -5 "$f"; }
  done
}

finish_rows() {  # ARCHIVE: wait for every row, merge, pack the results (JSON, PNG, logs, each
  wait           # run's config.json and metrics.jsonl; not the weights) into $OUT/ARCHIVE.tar.gz
  merge_rows
  mkdir -p "$OUT"
  tar czf "$OUT/$1.tar.gz" --exclude "*.safetensors" --exclude "*.pt" eval
  ls -la "$OUT"
}
