#!/bin/bash
# One device call: build, validate every CUDA op and the models, time the scan and the blocks.
# Usage (from the repository root on the GPU machine): bash tools/device_validate.sh OUT_DIR [bench_gpu args]
# Steps run in priority order, each under its own time limit; logs go to OUT_DIR. With .whl carried
# (tools/fetch_peer_wheels.sh), its wheels are installed first, so that `--peers` can be passed on.
out=${1:?OUT_DIR}; shift
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
S=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout "$limit" "$@" > "$out/$name.log" 2>&1; local rc=$?;
         echo "$name rc=$rc t=$(( $(date +%s) - S ))s"; }
[ -d .whl ] && step peer_wheels 60 python3 -m pip install -q --no-deps --no-index .whl/*.whl
step build 300 python3 -m pip install -q --no-build-isolation --no-deps -e .
step gpu_check 150 python3 tools/gpu_check.py --json "$out/gpu_check.json"
grep -c PASS "$out/gpu_check.log"; grep FAIL "$out/gpu_check.log" | head
step bench_scan 90 python3 tools/bench_scan_gpu.py --repeats 10 --profile --json "$out/bench_scan.json"
grep -v -i warn "$out/bench_scan.log" | cut -c1-100
step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 1 python3 tools/sanitize_scan.py
tail -2 "$out/memcheck.log"
step pytest_cuda 150 python3 -m pytest -m cuda -q -x tests
tail -2 "$out/pytest_cuda.log"
step model_check 150 python3 tools/gpu_model_check.py
tail -14 "$out/model_check.log"
left=$(( 570 - ($(date +%s) - S) ))
[ "$left" -gt 120 ] && step bench_gpu "$left" python3 tools/bench_gpu.py --json "$out/bench_gpu.json" "$@"
tail -12 "$out/bench_gpu.log"
