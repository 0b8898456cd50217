#!/bin/bash
# A/B of the CUDA kernels: the working tree (B) against an earlier commit's csrc/ (A), built side by
# side in one device call, so that both timings come from the same machine and the same minutes.
#
#   here:           bash tools/kernel_ab.sh prepare REF     # REF's csrc/ into .ab/base/csrc (git-ignored)
#   on the GPU:     bash tools/kernel_ab.sh run OUT [N]     # device tool: carry [".ab"]
#
# `run` builds A (a copy of the tree with .ab/base/csrc) and B (the tree) in parallel with
# `setup.py build_ext --inplace` (cdssm/meta_kernels linked to meta_kernels/, which the package
# maps there when installed), then:
#   scan_bitwise.py --save in A, --compare in B (exit 1 there: some output or gradient differs in
#   some bit, which is expected only of a change meant to alter the arithmetic);
#   N rounds (default 2) of bench_scan_gpu.py --pairs 1 --repeats 10 --l2-rows --profile, A then B,
#   so that drift of the machine shows as a spread within each tree, not as a difference.
# Each log goes to OUT/ab.tgz (one file: the device tool returns at most 8); the scan times and
# per-kernel times of every run are printed. Steps run under time limits that fit one call.
set -u
cmd=${1:?usage: kernel_ab.sh prepare REF | run OUT [N]}
cd "$(dirname "$0")/.."
case "$cmd" in
prepare)
  ref=${2:?prepare: name the base commit, e.g. HEAD}
  git rev-parse --verify --quiet "$ref^{commit}" >/dev/null || { echo "prepare: $ref is not a commit" >&2; exit 2; }
  rm -rf .ab/base && mkdir -p .ab/base
  git archive "$ref" csrc | tar -x -C .ab/base
  git rev-parse "$ref" > .ab/base/REF
  echo "A = $(cat .ab/base/REF) ($ref): .ab/base/csrc; carry [\".ab\"] and run: bash tools/kernel_ab.sh run \$OUT"
  ;;
run)
  out=${2:?run: name the output folder (\$OUT on the GPU machine)}
  rounds=${3:-2}
  [ -d .ab/base/csrc ] || { echo "run: no .ab/base/csrc: run 'tools/kernel_ab.sh prepare REF' here and carry .ab" >&2; exit 2; }
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
  start=$(date +%s); logs=$(mktemp -d); base=$(mktemp -d)/A; tree=$(pwd)
  trap 'tar czf "$out/ab.tgz" -C "$logs" .' EXIT
  t() { echo "[$(( $(date +%s) - start ))s] $*"; }
  mkdir -p "$base" && cp -r cdssm meta_kernels tools tests setup.py pyproject.toml README.md "$base"/
  rm -rf "$base/csrc" && cp -r .ab/base/csrc "$base/csrc"
  for root in "$tree" "$base"; do [ -e "$root/cdssm/meta_kernels" ] || ln -s ../meta_kernels "$root/cdssm/meta_kernels"; done
  (cd "$base" && MAX_JOBS=8 timeout 400 python3 setup.py build_ext --inplace > "$logs/build_A.log" 2>&1; echo "build A rc=$?") &
  MAX_JOBS=8 timeout 400 python3 setup.py build_ext --inplace > "$logs/build_B.log" 2>&1; echo "build B rc=$?"
  wait; t "built A ($(cat .ab/base/REF 2>/dev/null | cut -c1-10)) and B (the tree)"
  in_A() { (cd "$base" && PYTHONPATH="$base" timeout "$@"); }
  in_B() { PYTHONPATH="$tree" timeout "$@"; }
  in_A 90 python3 tools/scan_bitwise.py --save "$logs/bitwise_A.pt" > "$logs/bitwise_A.log" 2>&1
  in_B 90 python3 tools/scan_bitwise.py --compare "$logs/bitwise_A.pt" > "$logs/bitwise_B.log" 2>&1
  t "scan_bitwise rc=$? (0: bit-identical)"; tail -1 "$logs/bitwise_B.log"; rm -f "$logs/bitwise_A.pt"
  for i in $(seq "$rounds"); do
    for side in A B; do
      "in_$side" 90 python3 tools/bench_scan_gpu.py --pairs 1 --repeats 10 --l2-rows --profile > "$logs/scan_${side}$i.log" 2>&1
      echo "== $side, round $i (B T H D P, fwd and fwd+bwd ms, % of roofline; kernel ms at the largest T)"
      grep -E "^ *[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+( +[0-9.]+)?$|_kernel" "$logs/scan_${side}$i.log" | cut -c1-80
    done
  done
  t done
  ;;
*)
  echo "usage: kernel_ab.sh prepare REF | run OUT [N]" >&2; exit 2
  ;;
esac
