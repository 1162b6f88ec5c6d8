#!/usr/bin/env bash
# The prepared GPU run of issue 16 item 5 (benchmarks/gpu_bulk.py says what it measures):
# one command, under 9 minutes on one H200, from the checkout's root. Leaves
# OUT_DIR/gpu_bulk.json, OUT_DIR/gpu_bulk.md and OUT_DIR/gpu_bulk.log.
# Usage: bash benchmarks/gpu_bulk.sh OUT_DIR [--smoke] [--images N] [--workers N]
#   --smoke: the same steps at a tiny size, on the CPU too (the check before a lent GPU).
# PYTHON (default python3) is the interpreter.
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu_bulk.sh OUT_DIR [--smoke]}; shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"${PYTHON:-python3}" benchmarks/gpu_bulk.py --out "$out" "$@" 2>&1 | tee "$out/gpu_bulk.log"
