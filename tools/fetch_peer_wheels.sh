#!/usr/bin/env bash
# The peer rows of tools/bench_scan_gpu.py and tools/bench_gpu.py (--peers) need
# flash-linear-attention (fla); the GPU machine has no network, so its pinned wheels (pure
# Python + Triton) are fetched here into .whl/ at the repository root (git-ignored), which the
# device tool's `carry` takes along, and installed there with
#   python3 -m pip install --no-deps --no-index .whl/*.whl
# fla.layers also imports transformers (>= 5.6.2, < 6), which the GPU machine has.
# Idempotent: pip keeps the wheels already in .whl/.
#   usage: tools/fetch_peer_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(fla-core==0.6.0 flash-linear-attention==0.6.0 einops==0.8.2)
python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d .whl "${WHEELS[@]}"
ls -l .whl
