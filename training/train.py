"""Train a CCC++ model: CPU, one GPU, or many under torchrun (DDP).

    python -m training.train --data ../shared/data/train --val ../shared/data/val --out runs/densenet
    python -m training.train --config training/configs/paper.yaml --data 'places/train-{000..127}.tar' --out runs/p
    torchrun --standalone --nproc-per-node 8 -m training.train --config training/configs/paper.yaml ...

Reads as a story: list the images (each rank its own shard), choose the colour classes
from their histogram (Eq. 12) or a classes file, build the network, train with
class-rebalanced cross-entropy (Eq. 13-16) - checkpointing as it goes, so the same
command with ``--resume`` continues a killed run on the same trajectory - evaluate on
val, and save a Hugging Face-format folder with a model card (optionally pushed to the Hub).
Every option can come from a YAML or JSON ``--config`` file; the command line wins.
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

import numpy as np
import torch

from ccc_nodes.classes import PAPER_MIN_FRACTION, ColorClasses
from ccc_nodes.loss import REBALANCING, RebalancedLoss
from ccc_nodes.modeling import CCCNet
from ccc_nodes.modeling.ccc import PAPER_DECODER
from ccc_nodes.pipeline import pick_device
from training import dist
from training.card import write_model_card
from training.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from training.data import EpochSampler, augment, class_histogram, lab_targets, list_sources, load_images, make_loader
from training.evaluate import autocast, evaluate, sample_grid
from training.pretrained import load_encoder_weights
from training.stats import dataset_histogram, load_classes

CHECKPOINT = "checkpoint.pt"
STEADY_AFTER = 20  # steps excluded from the steady-state images/s


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--config", help="YAML or JSON file of options (keys as below, - or _); the command line overrides it")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="training images: folder, .tar, .txt file list, or glob / {000..099} range of tar shards")
    g.add_argument("--val", help="validation images (same forms); evaluated during and after training")
    g.add_argument("--out", help="output folder: the model (config.json, model.safetensors, README.md), checkpoint.pt, tb/")
    g.add_argument("--data-mode", choices=("auto", "memory", "stream"), default="auto",
                   help="memory: decode once and hold; stream: decode every batch on --workers processes; "
                        "auto: memory when the decoded shard fits in --memory-gb")
    g.add_argument("--memory-gb", type=float, default=4.0, help="largest decoded shard held in memory by --data-mode auto")
    g.add_argument("--store-size", type=int, default=256, help="images are decoded to this square (shorter side, centre)")
    g.add_argument("--size", type=int, default=224, help="training crop size (multiple of 32)")
    g.add_argument("--max-images", type=int, default=0, help="use at most this many training images (seeded sample)")
    g.add_argument("--workers", type=int, default=4, help="decoding processes per rank")
    g = p.add_argument_group("classes")
    g.add_argument("--bin-size", type=int, default=6, help="a*b* bin size, 4..14 (Table II; paper 6)")
    g.add_argument("--classes", default="data",
                   help="data: kept set from the training data's histogram (Eq. 12); all: every G^2 bin (Fig. 3); "
                        "or a JSON file from python -m training.stats")
    g.add_argument("--min-fraction", type=float, default=PAPER_MIN_FRACTION, help="with --classes data: keep bins with at least this share of samples")
    g.add_argument("--stats-images", type=int, default=5000, help="with --classes data when streaming: histogram over this many images per rank")
    g = p.add_argument_group("model")
    g.add_argument("--encoder", default="densenet121", help="timm backbone (paper: densenet121)")
    g.add_argument("--decoder-channels", default=",".join(map(str, PAPER_DECODER)), help="three widths (Table IV: 1024,512,512)")
    g.add_argument("--init", default="scratch", help="encoder start: scratch, imagenet, or a state-dict file")
    g = p.add_argument_group("optimisation")
    g.add_argument("--rebalance", choices=REBALANCING, default="ccc", help="class rebalancing (Eq. 15; none; cic)")
    g.add_argument("--p", type=float, default=10.0, help="percentage p of Eq. 15 (paper: 10; 4 vivid, 16 softer)")
    g.add_argument("--batch", type=int, default=64, help="images per step per rank (paper: 64)")
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--betas", default="0.5,0.999", help="Adam betas (paper: 0.5,0.999)")
    g.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    g.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="learning rate after the warm-up")
    g.add_argument("--steps", type=int, default=0, help="optimiser steps (0: until --time-budget)")
    g.add_argument("--time-budget", type=float, default=0, help="seconds of training (0: until --steps)")
    g.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto", help="auto: bf16 autocast on GPU, fp32 on CPU")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model")
    g.add_argument("--device", default="auto")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default; 1 on a shared CPU)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("logging, checkpoints, export")
    g.add_argument("--log-every", type=int, default=10, help="steps between loss / class-weight records")
    g.add_argument("--eval-every", type=int, default=0, help="steps between val evaluations on --eval-images (0: only at the end)")
    g.add_argument("--eval-images", type=int, default=64, help="val images used during training (all at the end)")
    g.add_argument("--sample-every", type=int, default=0, help="steps between TensorBoard sample grids (0: only at the end)")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True, help="write TensorBoard logs to OUT/tb")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    g.add_argument("--ckpt-every", type=int, default=500, help="steps between checkpoints (and one at the end)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists (else start)")
    g.add_argument("--save-dtype", choices=("fp32", "fp16"), default="fp32", help="dtype of the saved weights")
    g.add_argument("--name", default=None, help="model name for the card")
    g.add_argument("--push-to-hub", metavar="REPO", help="after training, upload the model folder to this Hub repo")
    g.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    return p


def load_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """A YAML or JSON mapping of option names to values, checked against the parser."""
    text = Path(path).read_text()
    if path.endswith(".json"):
        cfg = json.loads(text)
    else:
        import yaml

        cfg = yaml.safe_load(text) or {}
    if not isinstance(cfg, dict):
        raise SystemExit(f"error: {path}: a config file holds one mapping of option: value")
    actions = {a.dest: a for a in parser._actions}
    out = {}
    for k, v in cfg.items():
        dest = k.replace("-", "_")
        if dest not in actions or dest in ("config", "help"):
            raise SystemExit(f"error: {path}: unknown option {k!r} (see python -m training.train --help)")
        if isinstance(v, list):
            v = ",".join(map(str, v))
        elif actions[dest].type is not None and v is not None and not isinstance(v, bool):
            try:
                v = actions[dest].type(str(v) if actions[dest].type is not float else v)
            except ValueError as e:
                raise SystemExit(f"error: {path}: {k}: {e}") from e
        if actions[dest].choices and v not in actions[dest].choices:
            raise SystemExit(f"error: {path}: {k} must be one of {', '.join(map(str, actions[dest].choices))}, got {v!r}")
        out[dest] = v
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    pre, _ = p.parse_known_args(argv)
    if pre.config:
        p.set_defaults(**load_config(pre.config, p))
    args = p.parse_args(argv)
    for need in ("data", "out"):
        if not getattr(args, need):
            p.error(f"--{need} is required (on the command line or in --config)")
    if not args.steps and not args.time_budget:
        p.error("give --steps or --time-budget (or both: whichever ends first)")
    if args.size % 32:
        p.error("--size must be a multiple of 32")
    return args


def lr_at(step: int, frac: float, base: float, warmup: int, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay over the run (``frac`` = share of it done) or constant.

    Over very short runs a constant rate gave the more colourful model (see the embedded
    default's model card); cosine is the default for full-length training."""
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    return base * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def _step_seed(seed: int, rank: int, step: int) -> int:
    # Augmentation randomness is a function of (seed, rank, step): a resumed run
    # redraws exactly the crops and flips the killed one would have drawn.
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def _freeze_unused(model: CCCNet, device: torch.device) -> int:
    """Turn off gradients of parameters the forward pass never touches (e.g. a timm
    backbone's classifier-side conv). DDP requires every trained parameter to get a
    gradient; doing it in every run keeps one code path. Returns how many."""
    was = model.training
    model.eval()
    model(torch.zeros(1, 1, 64, 64, device=device)).float().sum().backward()
    unused = [p for p in model.parameters() if p.grad is None]
    for p in model.parameters():
        p.grad = None
    for p in unused:
        p.requires_grad_(False)
    model.train(was)
    return len(unused)


class _Log:
    """Rank 0's outputs: stdout, TensorBoard (if installed and wanted)."""

    def __init__(self, out: Path, on: bool, tensorboard: bool):
        self.on, self.tb = on, None
        if on and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                print("TensorBoard logging off: pip install tensorboard (the 'train' extra)", flush=True)

    def print(self, msg: str) -> None:
        if self.on:
            print(msg, flush=True)

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        if self.tb:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def image(self, step: int, tag: str, img: torch.Tensor) -> None:
        if self.tb:
            self.tb.add_image(tag, img, step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    d, device_name = dist.setup(args.device)
    device = pick_device(device_name)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    random.seed(args.seed + d.rank)
    np.random.seed(args.seed + d.rank)
    torch.manual_seed(args.seed)  # same initial weights on every rank
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out, d.main, args.tensorboard)
    ckpt_path = out / CHECKPOINT
    state = load_checkpoint(ckpt_path) if args.resume and ckpt_path.is_file() else None
    if state:
        log.print(f"resuming from {ckpt_path} at step {state['step']}")

    # 1. Data: this rank's shard, held in memory or streamed through CPU decode workers.
    sources = list_sources(args.data)
    if args.max_images and len(sources) > args.max_images:
        sources = sorted(random.Random(args.seed).sample(sources, args.max_images), key=lambda s: s.name)
    shard = dist.shard(sources, d)
    mode = args.data_mode
    if mode == "auto":
        mode = "memory" if len(shard) * 3 * args.store_size**2 < args.memory_gb * 2**30 else "stream"
    skipped = {"corrupt": 0, "grey": 0}
    images = None
    if mode == "memory":
        images, _, skipped = load_images(shard, size=args.store_size, workers=args.workers, progress=args.progress and d.main)
        if device.type == "cuda":
            images = images.to(device)
        n_images = images.shape[0]
    else:
        n_images = len(shard)
    log.print(f"train: {len(sources)} images in {d.world} shard(s); this rank {n_images} ({mode}), "
              f"skipped {skipped['corrupt']} corrupt, {skipped['grey']} grey")

    # 2. Colour classes (Eq. 12): from the data's histogram (summed over ranks), a file, or all bins.
    if state:
        classes = ColorClasses.from_config(state["classes"])
        counts = state["counts"]
    elif args.classes == "data":
        if images is not None:
            counts = class_histogram(images, args.bin_size, size=224, device=device)
        else:
            counts, _ = dataset_histogram(shard[: args.stats_images], args.bin_size, args.workers, progress=args.progress and d.main)
        if d.enabled:
            counts = counts.to(device)
            torch.distributed.all_reduce(counts)
            counts = counts.cpu()
        classes = ColorClasses.from_histogram(counts, args.bin_size, args.min_fraction)
    else:
        classes, counts = load_classes(args.classes, args.bin_size)
        if counts is None and args.rebalance == "cic":  # cic needs whole-data class frequencies
            counts = class_histogram(images, args.bin_size, device=device) if images is not None else \
                dataset_histogram(shard[: args.stats_images], args.bin_size, args.workers, progress=False)[0]
    class_counts = None if counts is None else \
        torch.zeros(classes.K, dtype=torch.float64).index_add_(0, classes.lut, counts.double())
    log.print(f"classes: K = {classes.K} of {classes.num_bins} ({args.classes})")

    # 3. The network (Tables III-IV).
    widths = [int(c) for c in str(args.decoder_channels).split(",")]
    model = CCCNet(encoder=args.encoder, decoder_channels=widths, bin_size=classes.bin_size, kept=classes.kept.tolist())
    init_desc = load_encoder_weights(model.encoder, args.encoder, args.init)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    n_params = sum(p.numel() for p in model.parameters())
    log.print(f"model: {args.encoder} ({init_desc}), decoder {widths}, {n_params / 1e6:.2f}M parameters, "
              f"{precision} on {device}" + (f", DDP x{d.world}" if d.enabled else ""))
    frozen = _freeze_unused(model, device)
    if frozen:
        log.print(f"frozen {frozen} encoder tensors the features never use (timm head layers)")
    loss_fn = RebalancedLoss(args.rebalance, p=args.p, class_counts=class_counts, centers=classes.centers)
    betas = tuple(float(b) for b in str(args.betas).split(","))
    # fused on GPU: one kernel over all parameter tensors (373 for the paper network)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=betas,
                           fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    step, seen, elapsed, losses = 0, 0, 0.0, []
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, seen, elapsed, losses = state["step"], state["seen"], state["elapsed"], state["losses"]
        skipped = state["skipped"]
        set_rng_state(state["rng"][d.rank] if d.rank < len(state["rng"]) else state["rng"][0])
    train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if d.enabled else model
    forward = torch.compile(train_model) if args.compile else train_model

    # Val: a few images in memory for evaluations and sample grids during training.
    val_sources = list_sources(args.val) if args.val else []
    val_cache = load_images(val_sources[: args.eval_images], args.store_size, workers=0, progress=False)[0] if val_sources and d.main else None
    samples = (val_cache if val_cache is not None else images[:4].cpu() if images is not None else None)

    def checkpoint() -> None:
        rngs = d.gather(rng_state())
        if d.main:
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                         "step": step, "sampler": {"batches": step, "batch": args.batch, "images": n_images},
                         "seen": seen, "elapsed": elapsed, "losses": losses, "skipped": skipped, "rng": rngs,
                         "classes": classes.to_config(), "counts": counts, "args": vars(args)}, ckpt_path)

    # 4. Train. The sampler starts at the checkpoint's batch; augmentation is seeded per step.
    sampler = EpochSampler(n_images, args.batch, seed=args.seed * 1_000 + d.rank, start=step)
    if images is not None:
        batches = ((images[idx], 0, 0) for idx in sampler.on(images.device))
    else:
        batches = iter(make_loader(shard, args.store_size, args.batch, args.workers, sampler, pin=device.type == "cuda"))
    gen = torch.Generator(device=device)
    model.train()
    from tqdm.auto import tqdm

    bar = tqdm(total=args.steps or None, initial=step, desc="train", unit="step", disable=not (args.progress and d.main))
    t0, seen0 = time.time() - elapsed, seen
    t_rate = time.time()
    step0, steady = step, None  # (time, samples) once the first STEADY_AFTER steps are behind
    while True:
        elapsed = time.time() - t0
        frac = max(step / args.steps if args.steps else 0.0, elapsed / args.time_budget if args.time_budget else 0.0)
        if d.any(frac >= 1.0, device) if args.time_budget else frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, frac, args.lr, args.warmup, args.schedule)
        x, n_corrupt, n_grey = next(batches)
        skipped["corrupt"] += n_corrupt
        skipped["grey"] += n_grey
        if x.shape[0] == 0:
            continue  # every image of this batch was unusable
        gen.manual_seed(_step_seed(args.seed, d.rank, step))
        x = augment(x.to(device, non_blocking=True), args.size, generator=gen)
        L, target = lab_targets(x, classes)
        if device.type == "cuda":
            L = L.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = forward(L)
        loss = loss_fn(logits, target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        step += 1
        seen += x.shape[0] * d.world
        bar.update(1)
        if step - step0 == STEADY_AFTER:
            if device.type == "cuda":
                torch.cuda.synchronize()
            steady = (time.time(), seen)
        if d.main and (step % args.log_every == 0 or step == 1):
            w = loss_fn.weights(target, classes.K)[torch.bincount(target.flatten(), minlength=classes.K) > 0]
            rate = (seen - seen0) / max(time.time() - t_rate, 1e-9)
            losses.append((step, loss.item()))
            bar.set_postfix(loss=f"{losses[-1][1]:.3f}", img_s=f"{rate:.0f}")
            log.scalars(step, "train", {"loss": losses[-1][1], "lr": opt.param_groups[0]["lr"], "img_per_s": rate,
                                        "weight_min": w.min().item(), "weight_max": w.max().item()})
        if d.main and val_cache is not None and args.eval_every and step % args.eval_every == 0:
            log.scalars(step, "val", evaluate(model, val_cache.split(32), args.size, precision))
        if d.main and samples is not None and args.sample_every and step % args.sample_every == 0:
            log.image(step, "samples/grey-prediction-truth", sample_grid(model, samples[:4], args.size, precision))
        if step % args.ckpt_every == 0:
            elapsed = time.time() - t0
            checkpoint()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.time() - t0
    checkpoint()
    ranks = d.gather({"rank": d.rank, "images": n_images, "skipped": skipped,
                      "param_sum": float(sum(p.detach().double().sum() for p in model.parameters()))})
    train_s = max(elapsed, 1e-9)
    # steady: the rate after the first steps (cuDNN autotuning, compilation, allocator warm-up)
    steady_rate = (seen - steady[1]) / max(t0 + elapsed - steady[0], 1e-9) if steady and seen > steady[1] else None
    log.print(f"trained {step} steps, {seen} samples in {train_s:.0f} s ({seen / train_s:.0f} img/s"
              + (f"; {steady_rate:.0f} after the first {STEADY_AFTER} steps)" if steady_rate else ")"))
    if not d.main:
        d.close()
        return 0

    # 5. Save (optionally in half precision), reload what was saved, and evaluate that.
    model.eval()
    save_model = model
    if args.save_dtype == "fp16":
        save_model = CCCNet(**model._hub_mixin_config).half()
        save_model.load_state_dict(model.state_dict())
    save_model.save_pretrained(out)
    reloaded = CCCNet.from_pretrained(str(out)).to(device).eval()
    result = {"steps": step, "samples": seen, "train_seconds": round(train_s, 1), "img_per_s": round(seen / train_s, 1),
              "img_per_s_steady": None if steady_rate is None else round(steady_rate, 1),
              "parameters": n_params, "K": classes.K, "num_bins": classes.num_bins, "train_images": len(sources),
              "skipped": skipped["corrupt"] + skipped["grey"], "skipped_detail": skipped, "data_mode": mode,
              "world_size": d.world, "ranks": ranks, "precision": precision}
    if val_sources:
        loader = make_loader(val_sources, args.store_size, 32, args.workers)
        val = evaluate(reloaded, (x for x, _, _ in loader), args.size, precision)
        result["val"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in val.items()}
        log.print("val: " + ", ".join(f"{k} {v}" for k, v in result["val"].items()))
        log.scalars(step, "val", val)
    if samples is not None:
        log.image(step, "samples/grey-prediction-truth", sample_grid(reloaded, samples[:4], args.size, precision))
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    result.update(machine=machine, wall_seconds=round(time.time() - t_start, 1),
                  command="python -m training.train " + " ".join(argv if argv is not None else sys.argv[1:]),
                  args=vars(args), init=init_desc, loss_curve=losses)
    (out / "training.json").write_text(json.dumps(result, indent=1))
    write_model_card(out, result)
    log.close()
    log.print(f"saved {out}")
    d.close()
    if args.push_to_hub:
        from training.export import HubUploadError, push_to_hub

        try:
            log.print(f"pushed: {push_to_hub(out, args.push_to_hub, private=args.private)}")
        except HubUploadError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
