#!/usr/bin/env bash
# The prepared GPU run for a new default model (see gpu_default.py, which packs PACK_DIR):
# train the candidate of PACK_DIR/config.json for SECONDS of training, judge it by the rule
# for a new default (default_rule.py) against the current default on the packed val subset,
# and leave in OUT_DIR: model/ (the model folder, weights in fp16), judge/ (table.md,
# judge.json) and train.log.
# Extra arguments go to the trainer last, e.g. the tiny CPU check of tests/test_gpu_recipe.py.
# Usage: bash training/recipes/gpu_default.sh PACK_DIR OUT_DIR [SECONDS [TRAIN FLAGS...]]
# PYTHON (default python3) is the interpreter; RUN_DIR (default a new temporary folder)
# holds the run with its checkpoint, which does not come back.
set -euo pipefail
pack=$1; out=$2; secs=${3:-420}; extra=("${@:4}")
py=${PYTHON:-python3}
run=${RUN_DIR:-$(mktemp -d)/run}
mkdir -p "$out/model"
export PYTHONUNBUFFERED=1
"$py" -m training.train --config "$pack/config.json" --out "$run" --time-budget "$secs" "${extra[@]}" 2>&1 \
    | tee "$out/train.log"
cp "$run/config.json" "$run/model.safetensors" "$run/README.md" "$run/training.json" "$out/model/"
val=$(mktemp -d)
tar -xf "$pack/val.tar" -C "$val"
"$py" -m training.recipes.default_rule "$out/model" --val "$val" --out "$out/judge" \
    --reference ccc_nodes/default_model --no-progress
