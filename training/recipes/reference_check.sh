#!/usr/bin/env bash
# The training issue's reference comparison, on one GPU: the paper's network (DenseNet-121
# from scratch + Table IV decoder) trained by this package for the reference's time budget,
# with ccc (p = 10) and with no rebalancing, each evaluated on val at 224 px and compared
# with its reference row (reference_check.py); then the throughput benchmark at batch 256.
# Data packed beforehand, as for default_candidates.sh:
#   python -m training.pack photos/train .pack/train.tar --size 224 --quality 72 --max-mb 47
#   python -m training.pack photos/val .pack/val.tar --keep
# Usage: bash training/recipes/reference_check.sh PACK_DIR OUT_DIR [SECONDS [EXTRA TRAIN FLAGS...]]
# Results: OUT_DIR/compare.md, OUT_DIR/bench.json, OUT_DIR/<run>/training.json and README.md.
# BENCH=0 skips the benchmark; BENCH_STEPS (default 40) sets its timed steps.
set -euo pipefail
pack=$1; out=$2; secs=${3:-110}; extra=("${@:4}")
mkdir -p "$out"
common=(--data "$pack/train.tar" --val "$pack/val.tar" --store-size 224 --size 224 --batch 128
        --encoder densenet121 --decoder-channels 1024,512,512 --init scratch --lr 3e-4 --warmup 100
        --schedule constant --time-budget "$secs" --workers 16 --save-dtype fp16 --p 10 --no-progress
        --ema 0 --resume)  # the plain network, no weight average; a rerun (e.g. after a cut-off) continues or re-reads a run
for mode in ccc none; do
    python -m training.train "${common[@]}" --rebalance "$mode" --out "$out/densenet121-$mode" "${extra[@]}"
done
status=0
python -m training.recipes.reference_check "$out/densenet121-ccc" "$out/densenet121-none" | tee "$out/compare.md" || status=$?
if [ "${BENCH:-1}" != 0 ]; then
    python benchmarks/training.py --data "$pack/train.tar" --encoder densenet121 --decoder-channels 1024,512,512 \
        --size 224 --store-size 224 --batch 256 --workers 16 --steps "${BENCH_STEPS:-40}" --warmup 10 | tee "$out/bench.json"
fi
exit $status
