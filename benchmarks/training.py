"""Training throughput: the full step with the real data pipeline against the model alone.

    python benchmarks/training.py --data ../shared/data/train --encoder efficientnet_lite0 --size 128 --batch 16

In one process, on one device:

1. model-only: forward, rebalanced loss and Adam step on synthetic tensors already on
   the device (L and class targets made once) - the ceiling;
2. full: ``python -m training.train`` itself (streaming data: CPU decode workers,
   transfer, random resized crop and flip, Lab and class targets on the device, then the
   same step): images/s over ``--steps`` steps, from two runs (``--warmup`` and
   ``--warmup + --steps`` steps) so the first steps' start-up is subtracted;
3. model-only again, so drift in a shared machine's load shows;
4. the data pipeline alone (no model): the most the loader can feed.

Prints the rates and ``ratio = full / mean(model-only)`` (target: >= 0.90). Without
``--data`` a folder of JPEGs is generated from scikit-image's sample photos.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.loss import RebalancedLoss
from ccc_nodes.core.modeling import CCCNet
from ccc_nodes.core.prediction import pick_device, resolve_precision
from training.evaluate import autocast


def synthetic_rate(a, device: torch.device, precision: str) -> float:
    """Images/s of the bare training step on tensors already on the device."""
    torch.manual_seed(0)
    classes = ColorClasses(6)  # all 1296 bins, as the trainer with --classes all
    model = CCCNet(a.encoder, [int(c) for c in a.decoder_channels.split(",")], kept=classes.kept.tolist(),
                   decoder=a.decoder).to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if a.compile else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    loss_fn = RebalancedLoss("ccc", p=10)
    L = torch.rand(a.batch, 1, a.size, a.size, device=device) * 100
    target = torch.randint(0, classes.K, (a.batch, a.size // 4, a.size // 4), device=device)

    def step():
        with autocast(device, precision):
            logits = forward(L)
        loss = loss_fn(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return a.batch * a.steps / (time.perf_counter() - t)


def full_rate(a, data: str, out: Path) -> float:
    """Images/s of the trainer itself over ``warmup + steps`` steps, minus its first
    ``warmup`` steps (worker start-up, allocator warm-up)."""
    from training import train

    # --ema 0: the model-only step has no weight average either, so the ratio is the data pipeline's
    common = ["--data", data, "--encoder", a.encoder, "--decoder", a.decoder, "--decoder-channels", a.decoder_channels,
              "--ema", "0", "--size", str(a.size),
              "--store-size", str(a.store_size), "--batch", str(a.batch), "--workers", str(a.workers),
              "--data-mode", a.data_mode, "--device", a.device, "--threads", str(a.threads), "--no-progress", "--no-tensorboard",
              "--ckpt-every", "1000000", "--log-every", "1000000", "--classes", "all"]
    if a.compile:
        common.append("--compile")
    rates = []
    for steps in (a.warmup, a.warmup + a.steps):
        run = out / f"run{steps}"
        train.main([*common, "--out", str(run), "--steps", str(steps)])
        r = json.loads((run / "training.json").read_text())
        rates.append((r["samples"], r["train_seconds"]))
    (n0, t0), (n1, t1) = rates
    return (n1 - n0) / max(t1 - t0, 1e-9)


def pipeline_rate(a, data: str, device: torch.device) -> float:
    """Images/s of the data pipeline alone (decode workers, transfer, crop/flip, Lab and
    targets), no model: what the loader can feed at most."""
    from training.data import EpochSampler, augment, lab_targets, list_sources, make_loader

    classes = ColorClasses(6)
    sources = list_sources(data)
    loader = iter(make_loader(sources, a.store_size, a.batch, a.workers, EpochSampler(len(sources), a.batch),
                              pin=device.type == "cuda"))
    n = 0
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t, n = time.perf_counter(), 0
        x, _, _ = next(loader)
        lab_targets(augment(x.to(device, non_blocking=True), a.size), classes)
        n += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def make_photos(folder: Path, n: int) -> str:
    import numpy as np
    from PIL import Image
    from skimage import data

    src = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = src[i % len(src)]
        s = min(im.shape[:2]) // 2
        y, x = rng.integers(0, im.shape[0] - s), rng.integers(0, im.shape[1] - s)
        Image.fromarray(im[y : y + s, x : x + s]).save(folder / f"{i:04d}.jpg", quality=90)
    return str(folder)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="training images (default: generated JPEGs)")
    p.add_argument("--encoder", default="efficientnet_lite0")
    p.add_argument("--decoder", default="table4", choices=("table4", "skip"))
    p.add_argument("--decoder-channels", default="256,128,128")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--store-size", type=int, default=144)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-mode", choices=("stream", "memory"), default="stream")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    precision = resolve_precision(device, "auto", training=True)  # the trainer's
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data or make_photos(Path(tmp) / "photos", a.batch * (a.steps + a.warmup) * 2)
        model_a = synthetic_rate(a, device, precision)
        full = full_rate(a, data, Path(tmp))
        model_b = synthetic_rate(a, device, precision)
        pipeline = pipeline_rate(a, data, device)
    model_only = (model_a + model_b) / 2
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "encoder": a.encoder, "size": a.size, "batch": a.batch,
              "workers": a.workers, "data_mode": a.data_mode, "model_only_img_s": [round(model_a, 2), round(model_b, 2)],
              "full_img_s": round(full, 2), "ratio": round(full / model_only, 3),
              "pipeline_only_img_s": round(pipeline, 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
