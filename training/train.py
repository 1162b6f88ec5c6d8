"""Train a CCC++ model (single process; CPU or one GPU).

    python -m training.train --data ../shared/data/train --val ../shared/data/val \
        --out runs/densenet --encoder densenet121 --time-budget 120

Reads as a story: load the images once, choose the colour classes from their
histogram (Eq. 12), build the network, train with class-rebalanced cross-entropy
(Eq. 13-16), evaluate on val, save a Hugging Face-format folder with a model card.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ccc_nodes.classes import PAPER_MIN_FRACTION, ColorClasses
from ccc_nodes.loss import REBALANCING, RebalancedLoss
from ccc_nodes.metrics import ColorMetrics
from ccc_nodes.modeling import CCCNet
from ccc_nodes.modeling.ccc import PAPER_DECODER
from ccc_nodes.pipeline import decode_ab, join_lab, pick_device
from training.card import write_model_card
from training.data import augment, class_histogram, lab_targets, list_sources, load_images
from training.pretrained import load_encoder_weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="training images: folder, .tar archive or .txt file list")
    p.add_argument("--val", help="validation images (folder, .tar or .txt); evaluated after training")
    p.add_argument("--out", required=True, help="output folder for the model (config.json, model.safetensors, README.md)")
    p.add_argument("--encoder", default="densenet121", help="timm backbone (paper: densenet121)")
    p.add_argument("--decoder-channels", default=",".join(map(str, PAPER_DECODER)), help="three widths (Table IV: 1024,512,512)")
    p.add_argument("--init", default="scratch", help="encoder start: scratch, imagenet, or a state-dict file")
    p.add_argument("--bin-size", type=int, default=6)
    p.add_argument("--min-fraction", type=float, default=PAPER_MIN_FRACTION, help="keep classes with at least this share of samples")
    p.add_argument("--rebalance", choices=REBALANCING, default="ccc")
    p.add_argument("--p", type=float, default=10.0, help="percentage of Eq. 15")
    p.add_argument("--size", type=int, default=224, help="training crop size (multiple of 32)")
    p.add_argument("--store-size", type=int, default=256, help="images are held in memory at this size")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=0, help="optimiser steps (0: until --time-budget)")
    p.add_argument("--time-budget", type=float, default=0, help="seconds of training (0: until --steps)")
    p.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    p.add_argument("--max-images", type=int, default=0, help="use at most this many training images (seeded sample)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=4, help="decoding processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dtype", choices=("fp32", "fp16"), default="fp32", help="dtype of the saved weights")
    p.add_argument("--name", default=None, help="model name for the card")
    args = p.parse_args(argv)
    if not args.steps and not args.time_budget:
        p.error("give --steps or --time-budget (or both: whichever ends first)")
    if args.size % 32:
        p.error("--size must be a multiple of 32")
    return args


@torch.no_grad()
def evaluate(model: CCCNet, images: torch.Tensor, size: int = 224, batch: int = 64, device=None) -> dict:
    """Val figures at ``size``: each uint8 image ``(3, S, S)`` resized, its L colorized
    (argmax decoding), compared with the original colours."""
    device = device or next(model.parameters()).device
    model.eval()
    metrics = ColorMetrics(model.classes)
    for i in range(0, images.shape[0], batch):
        gt = images[i : i + batch].to(device).float() / 255.0
        gt = torch.nn.functional.interpolate(gt, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        L, _ = lab_targets(gt, model.classes)
        with _autocast(device):
            logits = model(L).float()
        rgb = join_lab(L, decode_ab(logits, model.classes, "argmax"))
        metrics.update(rgb, gt)
    return metrics.compute()


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def lr_at(step: int, frac: float, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay over the run (``frac`` = share of it done)."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data, decoded once and held on the training device.
    sources = list_sources(args.data)
    if args.max_images and len(sources) > args.max_images:
        sources = sorted(random.Random(args.seed).sample(sources, args.max_images), key=lambda s: s.name)
    images, names, skipped = load_images(sources, size=args.store_size, workers=args.workers)
    print(f"train: {len(names)} images, {len(skipped)} skipped (corrupt or grey)", flush=True)
    if device.type == "cuda":
        images = images.to(device)

    # 2. Colour classes from this data's histogram (Eq. 12), never hard-coded.
    counts = class_histogram(images, args.bin_size, size=args.size, device=device)
    classes = ColorClasses.from_histogram(counts, args.bin_size, args.min_fraction)
    class_counts = torch.zeros(classes.K, dtype=torch.float64).index_add_(0, classes.lut, counts.double())
    print(f"classes: K = {classes.K} of {classes.num_bins} (min fraction {args.min_fraction:.3g})", flush=True)

    # 3. The network.
    widths = [int(c) for c in args.decoder_channels.split(",")]
    model = CCCNet(encoder=args.encoder, decoder_channels=widths, bin_size=args.bin_size, kept=classes.kept.tolist())
    init_desc = load_encoder_weights(model.encoder, args.encoder, args.init)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.encoder} ({init_desc}), decoder {widths}, {n_params / 1e6:.2f}M parameters", flush=True)

    # 4. Train.
    loss_fn = RebalancedLoss(args.rebalance, p=args.p, class_counts=class_counts, centers=classes.centers)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    model.train()
    step, seen, losses = 0, 0, []
    t0 = time.time()
    bar = tqdm(total=args.steps or None, desc="train", unit="step")
    while True:
        elapsed = time.time() - t0
        frac = max(step / args.steps if args.steps else 0.0, elapsed / args.time_budget if args.time_budget else 0.0)
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, frac, args.lr, args.warmup)
        idx = torch.randint(0, images.shape[0], (args.batch,), device=images.device, generator=gen if images.device == device else None)
        x = augment(images[idx].to(device, non_blocking=True), args.size, generator=gen)
        L, target = lab_targets(x, classes)
        if device.type == "cuda":
            L = L.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(L)
        loss = loss_fn(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += args.batch
        if step % 10 == 0 or step == 1:
            losses.append((step, loss.item()))
            bar.set_postfix(loss=f"{losses[-1][1]:.3f}", img_s=f"{seen / (time.time() - t0):.0f}")
        bar.update(1)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    print(f"trained {step} steps, {seen} samples in {train_s:.0f} s ({seen / train_s:.0f} img/s)", flush=True)

    # 5. Save (optionally in half precision), reload what was saved, and evaluate that.
    model.eval()
    save_model = model
    if args.save_dtype == "fp16":
        save_model = CCCNet(**model._hub_mixin_config).half()
        save_model.load_state_dict(model.state_dict())
    save_model.save_pretrained(out)
    reloaded = CCCNet.from_pretrained(str(out)).to(device).eval()
    result = {"steps": step, "samples": seen, "train_seconds": round(train_s, 1), "img_per_s": round(seen / train_s, 1),
              "parameters": n_params, "K": classes.K, "train_images": len(names), "skipped": len(skipped)}
    if args.val:
        val_images, val_names, _ = load_images(list_sources(args.val), size=args.store_size, workers=args.workers)
        result["val"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in evaluate(reloaded, val_images, args.size).items()}
        print("val: " + ", ".join(f"{k} {v}" for k, v in result["val"].items()), flush=True)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    result.update(machine=machine, wall_seconds=round(time.time() - t_start, 1), command="python -m training.train " + " ".join(argv if argv is not None else sys.argv[1:]),
                  args=vars(args), init=init_desc, loss_curve=losses)
    (out / "training.json").write_text(json.dumps(result, indent=1))
    write_model_card(out, result)
    print(f"saved {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
