#!/usr/bin/env bash
# Train the candidates for the embedded default model on one GPU, evaluate each on val,
# and keep the best (see pick_default.py). Data packed beforehand with training.pack:
#   python -m training.pack photos/train .pack/train.tar --size 224 --quality 72 --max-mb 47
#   python -m training.pack photos/val .pack/val.tar --keep
# Usage: bash training/recipes/default_candidates.sh PACK_DIR OUT_DIR [SECONDS]
set -euo pipefail
pack=$1; out=$2; secs=${3:-130}
common=(--data "$pack/train.tar" --val "$pack/val.tar" --store-size 224 --size 224 --batch 128
        --lr 3e-4 --warmup 100 --time-budget "$secs" --workers 16 --save-dtype fp16 --rebalance ccc --p 10
        --ema 0)  # trained before the weight average existed
python -m training.train "${common[@]}" --out "$out/densenet121-scratch" --encoder densenet121 --init scratch
python -m training.train "${common[@]}" --out "$out/effl0-imagenet" --encoder efficientnet_lite0 \
    --init "$pack/effl0_imagenet_1ch.safetensors"
python -m training.train "${common[@]}" --out "$out/effl0-imagenet-slim" --encoder efficientnet_lite0 \
    --init "$pack/effl0_imagenet_1ch.safetensors" --decoder-channels 512,256,256
python -m training.train "${common[@]}" --out "$out/effl0-imagenet-constant" --encoder efficientnet_lite0 \
    --init "$pack/effl0_imagenet_1ch.safetensors" --schedule constant --time-budget 150   # the embedded default
python -m training.recipes.pick_default "$out"/*/
