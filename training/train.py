"""Train a CCC++ model: CPU, one GPU, or many under torchrun (DDP).

    python -m training.train --data photos/train --val photos/val --out runs/densenet --time-budget 3600
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
import os
import platform
import random
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ccc_nodes.classes import PAPER_MIN_FRACTION, ColorClasses
from ccc_nodes.hub import ModelLoadError, load_model
from ccc_nodes.images import IMAGE_SUFFIXES
from ccc_nodes.loss import REBALANCING, RebalancedLoss
from ccc_nodes.modeling import CCCNet
from ccc_nodes.modeling.ccc import DECODERS, PAPER_DECODER
from ccc_nodes.pipeline import autocast, pick_device, resolve_precision
from ccc_nodes.settings import PRECISIONS, check_size
from training import dist
from training.card import write_model_card
from training.checkpoint import RunState, load_checkpoint
from training.data import (
    EpochSampler,
    augment,
    class_histogram,
    drop_dull,
    lab_targets,
    list_sources,
    load_images,
    make_loader,
)
from training.evaluate import evaluate, sample_grid
from training.pretrained import IMAGENET_PACKAGES, load_init_weights
from training.stats import dataset_histogram, load_classes

CHECKPOINT = "checkpoint.pt"
STEADY_AFTER = 20  # steps excluded from the steady-state images/s
STOP_CHECK_EVERY = 10  # DDP: steps between the ranks' agreement on stopping (a host sync)
MAX_EMPTY_BATCHES = 100  # consecutive batches without one usable image: the data is unusable
EMA_DECAY = 0.999  # --ema default: at most 0.999, reached after ~10k steps of the 3/4-power warm-up
EMA_WARMUP_POWER = 3 / 4  # decay at step t: 1 - (1 + t)^-3/4 (0.98 at step 200, 0.998 at 4k)
# Options a resumed run may change; any other must equal the checkpoint's (same trajectory).
RESUMABLE = {"steps", "time_budget", "val", "eval_every", "eval_images", "sample_every", "log_every", "ckpt_every",
             "tensorboard", "progress", "workers", "data_mode", "memory_gb", "threads", "device", "resume", "config",
             "save_dtype", "name", "push_to_hub", "private", "compile", "stats_images"}


class TrainError(Exception):
    """A problem with the options or the data, reported as one line."""


class _Progress:
    """How far the run got, for what main() says when a second Ctrl-C aborts it."""

    started = False  # the training loop has begun
    saved: int | None = None  # the step of the last checkpoint on disk
    ckpt: Path | None = None

    @classmethod
    def reset(cls, ckpt: Path) -> None:
        cls.started, cls.saved, cls.ckpt = False, None, ckpt

    @classmethod
    def interrupted(cls) -> str:
        if not cls.started:
            return "interrupted before training started; nothing was saved"
        if cls.saved is None:
            return "interrupted during training, before its first checkpoint: nothing was saved"
        return (f"interrupted during training; the last checkpoint (step {cls.saved}) is {cls.ckpt}: "
                "the same command with --resume continues from it")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--config", help="YAML or JSON file of options (keys as below, - or _); the command line overrides it")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="required: training images: folder, .tar, .txt file list, or glob / {000..099} "
                                  "range of tar shards")
    g.add_argument("--val", help="validation images (same forms); evaluated during and after training")
    g.add_argument("--out", help="required: output folder: the model (config.json, model.safetensors, README.md), "
                                 "checkpoint.pt, tb/")
    g.add_argument("--data-mode", choices=("auto", "memory", "stream"), default="auto",
                   help="memory: decode once and hold; stream: decode every batch on --workers processes; "
                        "auto: memory when the decoded shard fits in --memory-gb")
    g.add_argument("--memory-gb", type=float, default=4.0, help="largest decoded shard held in memory by --data-mode auto")
    g.add_argument("--store-size", type=int, default=256, help="images are decoded to this square (shorter side, centre)")
    g.add_argument("--size", type=int, default=224, help="training crop size (multiple of 32)")
    g.add_argument("--max-images", type=int, default=0, help="use at most this many training images (seeded sample)")
    g.add_argument("--workers", type=int, default=4, help="decoding processes per rank")
    g.add_argument("--min-colorfulness", type=float, default=0.0,
                   help="leave out training photos whose colourfulness (Hasler-Suesstrunk, at --store-size) is under "
                        "this (BigColor and DDColor: 15); 0: keep all; memory data mode")
    g = p.add_argument_group("classes")
    g.add_argument("--bin-size", type=int, default=6, help="a*b* bin size, 4..14 (Table II; paper 6)")
    g.add_argument("--classes", default="data",
                   help="data: kept set from the training data's histogram (Eq. 12); all: every G^2 bin (Fig. 3); "
                        "or a JSON file from python -m training.stats")
    g.add_argument("--min-fraction", type=float, default=PAPER_MIN_FRACTION, help="with --classes data: keep bins with at least this share of samples")
    g.add_argument("--stats-images", type=int, default=5000,
                   help="with --classes data when streaming: histogram over a seeded sample of this many images per rank")
    g = p.add_argument_group("model")
    g.add_argument("--encoder", default="densenet121", help="timm backbone (paper: densenet121)")
    g.add_argument("--decoder", choices=DECODERS, default="table4",
                   help="table4: the paper's (nearest x2 three times, no skips); skip: bilinear x2 with the encoder's "
                        "stride-16/-8/-4 features joined in (no 8x8 blocks)")
    g.add_argument("--decoder-channels", default=",".join(map(str, PAPER_DECODER)), help="three widths (Table IV: 1024,512,512)")
    g.add_argument("--init", default="scratch", help="encoder start: scratch, imagenet (efficientnet_lite0/1/2, from "
                                                     "PyPI packages), or a state-dict file; or a model folder of "
                                                     "this run's options: the whole model (fine-tuning)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--rebalance", choices=REBALANCING, default="ccc", help="class rebalancing (Eq. 15; none; cic)")
    g.add_argument("--p", type=float, default=10.0, help="percentage p of Eq. 15 (paper: 10; 4 vivid, 16 softer)")
    g.add_argument("--batch", type=int, default=64, help="images per step per rank (paper: 64)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (the paper's was lost; METHOD.md s. 11)")
    g.add_argument("--betas", default="0.5,0.999", help="Adam betas (paper: 0.5,0.999)")
    g.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    g.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="learning rate after the warm-up")
    g.add_argument("--ema", type=float, default=EMA_DECAY,
                   help="decay of the exponential moving average of the weights, which is the model saved and "
                        "evaluated (warmed up: min(EMA, 1 - (1 + step)^-3/4)); 0: no average, the last weights")
    g.add_argument("--steps", type=int, default=0, help="optimiser steps (0: until --time-budget)")
    g.add_argument("--time-budget", type=float, default=0, help="seconds of training (0: until --steps)")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast dtype. auto: bf16 on a CUDA GPU that has it, else fp16 (with loss scaling); fp32 on "
                        "CPU and MPS. fp16 runs on CUDA only (elsewhere fp32)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model")
    g.add_argument("--device", default="auto", help="auto (CUDA if there is one), cpu, cuda, cuda:N; under "
                                                     "torchrun each rank takes its local GPU")
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
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt if it exists (else start); without it an existing checkpoint "
                        "is never overwritten")
    g.add_argument("--save-dtype", choices=("fp32", "fp16"), default="fp32", help="dtype of the saved weights")
    g.add_argument("--name", default=None, help="model name for the card")
    g.add_argument("--push-to-hub", metavar="REPO", help="after training, upload the model folder to this Hub repo")
    g.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    return p


def load_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """A YAML or JSON mapping of option names to values, checked against the parser."""
    if not Path(path).is_file():
        raise TrainError(f"--config {path}: no such file")
    text = Path(path).read_text()
    if path.endswith(".json"):
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as e:
            raise TrainError(f"{path}: not valid JSON ({e})") from e
    else:
        import yaml

        try:
            cfg = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise TrainError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(cfg, dict):
        raise TrainError(f"{path}: a config file holds one mapping of option: value")
    actions = {a.dest: a for a in parser._actions}
    out = {}
    for k, v in cfg.items():
        dest = k.replace("-", "_")
        if dest not in actions or dest in ("config", "help"):
            raise TrainError(f"{path}: unknown option {k!r} (see python -m training.train --help)")
        if isinstance(v, list):
            v = ",".join(map(str, v))
        elif actions[dest].type is not None and v is not None and not isinstance(v, bool):
            try:
                v = actions[dest].type(str(v) if actions[dest].type is not float else v)
            except ValueError as e:
                raise TrainError(f"{path}: {k}: {e}") from e
        if actions[dest].choices and v not in actions[dest].choices:
            raise TrainError(f"{path}: {k} must be one of {', '.join(map(str, actions[dest].choices))}, got {v!r}")
        out[dest] = v
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    pre, _ = p.parse_known_args(argv)
    if pre.config:
        try:
            p.set_defaults(**load_config(pre.config, p))
        except TrainError as e:
            p.error(str(e))
    args = p.parse_args(argv)
    for need in ("data", "out"):
        if not getattr(args, need):
            p.error(f"--{need} is required (on the command line or in --config)")
    if not args.steps and not args.time_budget:
        p.error("give --steps or --time-budget (or both: whichever ends first)")
    for problem in _option_problems(args):
        p.error(problem)
    return args


def _option_problems(args: argparse.Namespace) -> list[str]:
    """Everything about the options that can be checked before any image is read."""
    problems = []
    try:
        check_size(args.size, "--size")
    except ValueError as e:
        problems.append(str(e))
    for name in ("batch", "log_every", "ckpt_every", "store_size"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("steps", "time_budget", "eval_every", "sample_every", "max_images", "workers", "warmup", "threads"):
        if getattr(args, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    if args.lr <= 0 or args.p <= 0:
        problems.append("--lr and --p must be positive")
    if not 0 <= args.ema < 1:
        problems.append(f"--ema must be in [0, 1) (0: off), got {args.ema}")
    try:
        betas = [float(b) for b in str(args.betas).split(",")]
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError
    except ValueError:
        problems.append(f"--betas takes two numbers in [0, 1) like 0.5,0.999, got {args.betas!r}")
    try:
        widths = [int(c) for c in str(args.decoder_channels).split(",")]
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError
    except ValueError:
        problems.append(f"--decoder-channels takes three widths like 1024,512,512, got {args.decoder_channels!r}")
    try:
        ColorClasses(args.bin_size)
    except ValueError as e:
        problems.append(f"--bin-size: {e}")
    import timm

    if not timm.is_model(args.encoder):
        problems.append(f"--encoder {args.encoder!r} is not a timm model name (e.g. densenet121, efficientnet_lite0)")
    if args.init == "imagenet" and args.encoder not in IMAGENET_PACKAGES:
        problems.append(f"--init imagenet is available for {', '.join(IMAGENET_PACKAGES)} only; for {args.encoder} "
                        "use scratch or a state-dict file")
    elif args.init not in ("scratch", "imagenet") and not Path(args.init).exists():
        problems.append(f"--init {args.init!r}: use scratch, imagenet, a state-dict file or a model folder that exists")
    if args.classes not in ("data", "all") and not Path(args.classes).is_file():
        problems.append(f"--classes {args.classes!r}: give data, all or a JSON file from python -m training.stats")
    return problems


def lr_at(step: int, frac: float, base: float, warmup: int, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay over the run (``frac`` = share of it done) or constant.

    Over very short runs a constant rate gave the more colourful model (see the embedded
    default's model card); cosine is the default for full-length training."""
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    return base * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def weight_average(model: torch.nn.Module, decay: float):
    """timm's ``ModelEmaV3`` of ``model`` (parameters and buffers) with the warm-up
    ``min(decay, 1 - (1 + t)^-3/4)`` at step t, so short runs average over their last
    steps rather than their start; None when ``decay`` is 0."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)


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


class _Stop:
    """Ctrl-C / SIGTERM during training: finish the step, checkpoint, exit 128 + signal.
    A second signal stops at once (the handlers are the defaults again)."""

    def __init__(self, log: _Log):
        self.signum: int | None = None
        self.log = log
        self.installed = False

    def __enter__(self) -> _Stop:
        import threading

        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            self.old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            self.installed = True
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self._restore()
        self.log.print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                       "(again to abort without one)")

    def _restore(self) -> None:
        if self.installed:
            for sig, old in self.old.items():
                signal.signal(sig, old)
            self.installed = False

    def __exit__(self, *exc) -> None:
        self._restore()


def _check_resume(state: dict, args: argparse.Namespace) -> None:
    """A resumed run continues the same trajectory: refuse changed options that would
    change it, naming each."""
    before = state.get("args", {})
    changed = [k for k, v in vars(args).items() if k not in RESUMABLE and k in before and before[k] != v]
    if changed:
        shown = "; ".join(f"--{k.replace('_', '-')} was {before[k]!r}, now {getattr(args, k)!r}" for k in changed)
        raise TrainError(f"--resume continues the checkpoint's run with its options: {shown}. "
                         "Use the checkpoint's values, or a new --out for a new run")


def _command(argv: list[str] | None, world: int) -> str:
    args = argv if argv is not None else sys.argv[1:]
    launcher = f"torchrun --nproc-per-node {world} -m training.train" if world > 1 else "python -m training.train"
    return f"{launcher} {shlex.join(args)}"


def main(argv: list[str] | None = None) -> int:
    """The command: options and data problems are one-line errors (exit 2), Ctrl-C before
    training starts exits 130; ``CCC_DEBUG=1`` shows tracebacks instead."""
    args = parse_args(argv)
    try:
        return train(args, argv)
    except (TrainError, FileNotFoundError, ValueError, ModelLoadError) as e:
        if os.environ.get("CCC_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("CCC_DEBUG"):
            raise
        print(f"\n{_Progress.interrupted()}", file=sys.stderr, flush=True)
        return 130


def train(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """The run, top to bottom; each phase's details are the functions after this one."""
    t_start = time.time()

    # Setup: processes (torchrun), device, precision, seeds; the output folder and the checkpoint to resume.
    d, device = _setup(args)
    precision = resolve_precision(device, args.precision, training=True)
    out, ckpt_path, ckpt = _open_run(args, d)
    log = _Log(out, d.main, args.tensorboard)
    if ckpt:
        log.print(f"resuming from {ckpt_path} at step {ckpt['step']}")

    # Data: list the files (a wrong path or classes file fails before any decoding), then this
    # rank's shard, held in memory or streamed through CPU decode workers.
    sources, val_sources = _list_images(args)
    file_classes = load_classes(args.classes, args.bin_size) if args.classes != "data" and not ckpt else None
    data = _load_shard(args, d, device, sources, log)

    # Colour classes (Eq. 12): the checkpoint's, the data's histogram (summed over ranks), a file, or all bins.
    classes, counts = _colour_classes(args, d, device, data, ckpt, file_classes)
    log.print(f"classes: K = {classes.K} of {classes.num_bins} ({args.classes})")

    # Model (Tables III-IV), class-rebalanced loss (Eq. 13-16), Adam; the run state, resumed from the checkpoint.
    config = {"encoder": args.encoder, "decoder": args.decoder, "bin_size": classes.bin_size,
              "decoder_channels": [int(c) for c in str(args.decoder_channels).split(",")], "kept": classes.kept.tolist()}
    model, init_desc = _build_model(config, args, device, d, precision, log)
    loss_fn = RebalancedLoss(args.rebalance, p=args.p, class_counts=_class_counts(classes, counts), centers=classes.centers)
    state = RunState(model, _adam(model, args, device), torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
                     weight_average(model, args.ema), classes, counts, skipped=data.skipped)
    if ckpt and not state.restore(ckpt, d.rank):
        log.print("the checkpoint holds no weight average: it starts from the resumed weights")
    opt, scaler, ema = state.optimizer, state.scaler, state.ema
    final = ema.module if ema is not None else model  # what is evaluated, shown and saved
    forward = _wrap(model, args, device, d, log)

    # Val: a few images in memory for evaluations and sample grids during training.
    val_cache, samples = _val_cache(args, d, val_sources, data)

    # Train: the sampler starts where the checkpoint left it; augmentation is seeded per step.
    batches = _batches(args, d, data, state.drawn, device)
    gen = torch.Generator(device=device)
    model.train()
    bar = _progress_bar(args, d, state.step)
    t0 = time.time() - state.elapsed
    speed = _Speed(state, d.world)
    with _Stop(log) as stop:
        _Progress.started = True
        while True:
            # Stop at --steps, --time-budget or a signal; the learning rate for how far the run is.
            state.elapsed = time.time() - t0
            frac = max(state.step / args.steps if args.steps else 0.0,
                       state.elapsed / args.time_budget if args.time_budget else 0.0)
            if _all_done(frac >= 1.0 or stop.signum is not None, args, d, device, state.step):
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(state.step, frac, args.lr, args.warmup, args.schedule)
            # Batch: the next one with a usable image, augmented with this step's seed; L in, classes out.
            x = _draw(batches, state, args)
            L, target = _inputs(x, args, classes, device, gen, _step_seed(args.seed, d.rank, state.step))
            # Forward, backward, optimiser step, then the weight average.
            with autocast(device, precision):
                logits = forward(L)
            loss = loss_fn(logits, target)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            state.step += 1
            if ema is not None:
                ema.update(model, step=state.step)
            state.seen += L.shape[0]
            bar.update(1)
            speed.stepped(state, device)
            # Log, evaluate, sample, checkpoint: each every so many steps.
            if d.main and (state.step % args.log_every == 0 or state.step == 1):
                weights = loss_fn.weights(target, classes.K)[torch.bincount(target.flatten(), minlength=classes.K) > 0]
                _log_step(log, bar, args, state, loss.item(), weights, speed.rate(state), t0)
            if d.main and val_cache is not None and args.eval_every and state.step % args.eval_every == 0:
                log.scalars(state.step, "val", evaluate(final, val_cache.split(32), args.size, precision))
            if d.main and samples is not None and args.sample_every and state.step % args.sample_every == 0:
                log.image(state.step, "samples/grey-prediction-truth", sample_grid(final, samples[:4], args.size, precision))
            if state.step % args.ckpt_every == 0:
                state.elapsed = time.time() - t0
                _checkpoint(state, ckpt_path, d, args)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        state.elapsed = time.time() - t0
        if state.step != _Progress.saved or not ckpt_path.is_file():
            _checkpoint(state, ckpt_path, d, args)

    # Report the throughput over all ranks; a signal ends the run here (exit 128 + its number).
    interrupted = d.any(stop.signum is not None, device) if d.enabled else stop.signum is not None
    ranks = d.gather(_rank_report(d, data, state, model))
    result = _throughput(log, state, ranks, speed.steady_rate(state, t0 + state.elapsed))
    if interrupted:
        return _stopped(stop.signum or signal.SIGTERM, state.step, ckpt_path, d, log)
    if not d.main:
        d.close()
        return 0

    # Save (optionally in half precision), read back what was saved as users will, evaluate that, write the card.
    reloaded = _save_model(final, config, args, out, device)
    reasons = dict.fromkeys(k for r in ranks for k in (*r["skipped"], *r["skipped_ids"]))
    skipped = {k: sum(r["skipped"].get(k, 0) + r["skipped_ids"].get(k, 0) for r in ranks) for k in reasons}
    result.update(parameters=sum(p.numel() for p in model.parameters()), K=classes.K, num_bins=classes.num_bins,
                  train_images=len(data.sources), skipped=sum(skipped.values()), skipped_detail=skipped,
                  data_mode=data.mode, world_size=d.world, ranks=ranks, precision=precision, resumed=ckpt is not None)
    if val_sources:
        _final_evaluation(result, reloaded, val_sources, args, precision, log, state.step)
    if samples is not None:
        log.image(state.step, "samples/grey-prediction-truth", sample_grid(reloaded, samples[:4], args.size, precision))
    result.update(machine=_machine(device), wall_seconds=round(time.time() - t_start, 1),
                  command=_command(argv, d.world), args=vars(args), init=init_desc, loss_curve=state.losses)
    (out / "training.json").write_text(json.dumps(result, indent=1))
    write_model_card(out, result)
    log.close()
    log.print(f"saved {out}")
    d.close()
    return _push(out, args) if args.push_to_hub else 0


# The phases of train(), in its order.


def _setup(args: argparse.Namespace) -> tuple[dist.Dist, torch.device]:
    """Threads, the process group when torchrun started us, the device, the seeds."""
    if args.threads:
        torch.set_num_threads(args.threads)
    d, device_name = dist.setup(args.device)
    device = pick_device(device_name)
    random.seed(args.seed + d.rank)
    np.random.seed(args.seed + d.rank)
    torch.manual_seed(args.seed)  # same initial weights on every rank
    return d, device


def _open_run(args: argparse.Namespace, d: dist.Dist) -> tuple[Path, Path, dict | None]:
    """The output folder, its checkpoint path, and the checkpoint with --resume (None: a fresh run).
    An existing checkpoint is never overwritten without --resume; a resumed run keeps its options."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.is_file() and not args.resume:
        raise TrainError(f"{ckpt_path} holds a run already: add --resume to continue it, or choose another --out")
    _Progress.reset(ckpt_path)
    ckpt = load_checkpoint(ckpt_path) if args.resume and ckpt_path.is_file() else None
    if args.resume and ckpt is None and d.main:
        print(f"--resume: no checkpoint at {ckpt_path}; starting a fresh run", file=sys.stderr, flush=True)
    if ckpt is not None:
        _Progress.saved = ckpt["step"]
        _check_resume(ckpt, args)
    return out, ckpt_path, ckpt


def _list_images(args: argparse.Namespace) -> tuple[list, list]:
    """The training and val files; none found is an error."""
    sources = list_sources(args.data)
    if not sources:
        raise TrainError(f"--data {args.data}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    val_sources = list_sources(args.val) if args.val else []
    if args.val and not val_sources:
        raise TrainError(f"--val {args.val}: no images found")
    return sources, val_sources


@dataclass
class _Data:
    """This rank's training images: decoded into ``images`` (memory mode) or streamed from ``shard``."""

    sources: list  # every rank's files (a seeded --max-images sample)
    shard: list  # this rank's
    mode: str  # memory or stream
    images: torch.Tensor | None
    n_images: int
    skipped: dict[str, int]  # memory mode: the files that did not decode, counted once


def _load_shard(args: argparse.Namespace, d: dist.Dist, device: torch.device, sources: list, log: _Log) -> _Data:
    if args.max_images and len(sources) > args.max_images:
        sources = sorted(random.Random(args.seed).sample(sources, args.max_images), key=lambda s: s.name)
    shard = dist.shard(sources, d)
    if not shard:
        raise TrainError(f"{len(sources)} images for {d.world} ranks: every rank needs at least one")
    mode = args.data_mode
    if mode == "auto":
        mode = "memory" if len(shard) * 3 * args.store_size**2 < args.memory_gb * 2**30 else "stream"
    images, skipped = None, {"corrupt": 0, "grey": 0}
    if args.min_colorfulness > 0 and mode != "memory":
        raise TrainError(f"--min-colorfulness needs the photos in memory (--data-mode memory); this shard is {mode}")
    if mode == "memory":
        if not args.progress:
            log.print(f"decoding {len(shard)} images ...")
        images, _, skipped = load_images(shard, size=args.store_size, workers=args.workers,
                                         progress=args.progress and d.main)
        if args.min_colorfulness > 0:
            images, skipped["dull"] = drop_dull(images, args.min_colorfulness)
            if not images.shape[0]:
                raise TrainError(f"--data {args.data}: no photo has a colourfulness of at least {args.min_colorfulness:g}")
        if device.type == "cuda":
            images = images.to(device)
    data = _Data(sources, shard, mode, images, images.shape[0] if images is not None else len(shard), skipped)
    log.print(f"train: {len(sources)} images in {d.world} shard(s); this rank {data.n_images} ({mode}), "
              f"skipped {skipped['corrupt']} corrupt, {skipped['grey']} grey"
              + (f", {skipped['dull']} under colourfulness {args.min_colorfulness:g}" if "dull" in skipped else ""))
    return data


def _colour_classes(args: argparse.Namespace, d: dist.Dist, device: torch.device, data: _Data, ckpt: dict | None,
                    file_classes: tuple | None) -> tuple[ColorClasses, torch.Tensor | None]:
    """The classes and the G^2 bin counts they came from (None when no data was counted)."""

    def data_histogram() -> torch.Tensor:
        """G^2 counts of this rank's images: all of them in memory, else a seeded sample of
        --stats-images (not the first files of the sorted list: often a few class folders)."""
        if data.images is not None:
            return class_histogram(data.images, args.bin_size, size=224, device=device)
        sample = random.Random(args.seed + d.rank).sample(data.shard, min(args.stats_images, len(data.shard)))
        return dataset_histogram(sample, args.bin_size, args.workers, progress=args.progress and d.main)[0]

    if ckpt:
        return ColorClasses.from_config(ckpt["classes"]), ckpt["counts"]
    if args.classes == "data":
        counts = data_histogram()
        if d.enabled:
            counts = counts.to(device)
            torch.distributed.all_reduce(counts)
            counts = counts.cpu()
        if counts.sum() == 0:
            raise TrainError(f"--data {args.data}: no usable colour images to count classes over")
        return ColorClasses.from_histogram(counts, args.bin_size, args.min_fraction), counts
    classes, counts = file_classes
    if counts is None and args.rebalance == "cic":  # cic needs whole-data class frequencies
        counts = data_histogram()
    return classes, counts


def _class_counts(classes: ColorClasses, counts: torch.Tensor | None) -> torch.Tensor | None:
    """G^2 bin counts folded onto the K classes (the loss's class frequencies)."""
    if counts is None:
        return None
    return torch.zeros(classes.K, dtype=torch.float64).index_add_(0, classes.lut, counts.double())


def _build_model(config: dict, args: argparse.Namespace, device: torch.device, d: dist.Dist, precision: str,
                 log: _Log) -> tuple[CCCNet, str]:
    """The network with its encoder start (--init), on the device; returns it and that start's description."""
    model = CCCNet(**config)
    init_desc = load_init_weights(model, args.init)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    n_params = sum(p.numel() for p in model.parameters())
    log.print(f"model: {args.encoder} ({init_desc}), {args.decoder} decoder {config['decoder_channels']}, "
              f"{n_params / 1e6:.2f}M parameters, {precision} on {device}" + (f", DDP x{d.world}" if d.enabled else ""))
    frozen = _freeze_unused(model, device)
    if frozen:
        log.print(f"frozen {frozen} encoder tensors the features never use (timm head layers)")
    return model, init_desc


def _adam(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> torch.optim.Adam:
    # fused on GPU: one kernel over all parameter tensors (373 for the paper network)
    betas = tuple(float(b) for b in str(args.betas).split(","))
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=betas,
                            fused=device.type == "cuda")


def _wrap(model: torch.nn.Module, args: argparse.Namespace, device: torch.device, d: dist.Dist,
          log: _Log) -> torch.nn.Module:
    """What the training step calls: the model, under DDP and torch.compile when asked."""
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if not args.compile:
        return model
    log.print("torch.compile: the first steps compile the model (minutes on a CPU)")
    return torch.compile(model)


def _val_cache(args: argparse.Namespace, d: dist.Dist, val_sources: list,
               data: _Data) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Rank 0's first --eval-images val images (None without val), and the pictures of the
    sample grids: those, else the first training images held in memory (else None)."""
    val_cache = load_images(val_sources[: args.eval_images], args.store_size, workers=0, progress=False)[0] \
        if val_sources and d.main else None
    samples = val_cache if val_cache is not None else data.images[:4].cpu() if data.images is not None else None
    return val_cache, samples


def _batches(args: argparse.Namespace, d: dist.Dist, data: _Data, drawn: int, device: torch.device):
    """Endless ``(uint8 images, corrupt ids, grey ids)`` from the sampler's position ``drawn``."""
    sampler = EpochSampler(data.n_images, args.batch, seed=args.seed * 1_000 + d.rank, start=drawn)
    if data.images is not None:
        return ((data.images[idx], [], []) for idx in sampler.on(data.images.device))
    return iter(make_loader(data.shard, args.store_size, args.batch, args.workers, sampler, pin=device.type == "cuda"))


def _progress_bar(args: argparse.Namespace, d: dist.Dist, step: int):
    from tqdm.auto import tqdm

    return tqdm(total=args.steps or None, initial=step, desc="train", unit="step", disable=not (args.progress and d.main))


def _all_done(done: bool, args: argparse.Namespace, d: dist.Dist, device: torch.device, step: int) -> bool:
    """Under DDP time and signals are per process: the ranks agree every STOP_CHECK_EVERY steps
    (a host sync) and at --steps, so all stop at the same step."""
    if not d.enabled:
        return done
    last = bool(args.steps) and step >= args.steps  # the same step on every rank
    return d.any(done, device) if last or step % STOP_CHECK_EVERY == 0 else False


def _draw(batches, state: RunState, args: argparse.Namespace) -> torch.Tensor:
    """The next batch holding a usable image (the skipped files recorded); too many empty ones is an error."""
    for _ in range(MAX_EMPTY_BATCHES + 1):
        x, corrupt, grey = next(batches)
        state.drawn += 1
        state.skipped_ids["corrupt"].update(corrupt)
        state.skipped_ids["grey"].update(grey)
        if x.shape[0]:
            return x
    ids = state.skipped_ids
    raise TrainError(f"{MAX_EMPTY_BATCHES} batches in a row held no usable image ({len(ids['corrupt'])} corrupt, "
                     f"{len(ids['grey'])} grey files so far): check --data {args.data}")


def _inputs(x: torch.Tensor, args: argparse.Namespace, classes: ColorClasses, device: torch.device,
            gen: torch.Generator, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> the network's input L and the class targets, after the random crop
    and flip drawn from ``seed`` (the step's: a resumed run draws exactly the same)."""
    gen.manual_seed(seed)
    L, target = lab_targets(augment(x.to(device, non_blocking=True), args.size, generator=gen), classes)
    if device.type == "cuda":
        L = L.contiguous(memory_format=torch.channels_last)
    return L, target


class _Speed:
    """Images/s over all ranks since this process began training, and the steady rate: after
    its first STEADY_AFTER steps (cuDNN autotuning, compilation, allocator warm-up)."""

    def __init__(self, state: RunState, world: int):
        self.t, self.seen, self.step, self.world = time.time(), state.seen, state.step, world
        self.steady: tuple[float, int] | None = None  # (time, samples) once the first steps are behind

    def stepped(self, state: RunState, device: torch.device) -> None:
        if state.step - self.step == STEADY_AFTER:
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.steady = (time.time(), state.seen)

    def rate(self, state: RunState) -> float:
        return (state.seen - self.seen) * self.world / max(time.time() - self.t, 1e-9)

    def steady_rate(self, state: RunState, end: float) -> float | None:
        if self.steady is None or state.seen <= self.steady[1]:
            return None
        return (state.seen - self.steady[1]) * self.world / max(end - self.steady[0], 1e-9)


def _log_step(log: _Log, bar, args: argparse.Namespace, state: RunState, loss: float, weights: torch.Tensor,
              rate: float, t0: float) -> None:
    """Record the loss; show it (progress bar or a line) and write it to TensorBoard with the
    range of the rebalancing weights of the classes in the batch."""
    state.losses.append((state.step, loss))
    lr = state.optimizer.param_groups[0]["lr"]
    bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}")
    if not args.progress:
        log.print(f"step {state.step}{f'/{args.steps}' if args.steps else ''}  loss {loss:.4f}  "
                  f"lr {lr:.2e}  {rate:.1f} img/s  {time.time() - t0:.0f} s")
    log.scalars(state.step, "train", {"loss": loss, "lr": lr, "img_per_s": rate,
                                      "weight_min": weights.min().item(), "weight_max": weights.max().item()})


def _checkpoint(state: RunState, path: Path, d: dist.Dist, args: argparse.Namespace) -> None:
    state.save(path, d, vars(args))
    _Progress.saved = state.step


def _stopped(signum: int, step: int, ckpt_path: Path, d: dist.Dist, log: _Log) -> int:
    log.print(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {ckpt_path} saved: "
              "the same command with --resume continues the run")
    d.close()
    log.close()
    return 128 + signum


def _rank_report(d: dist.Dist, data: _Data, state: RunState, model: torch.nn.Module) -> dict:
    """This rank's part of training.json (the parameter sum shows DDP kept the replicas equal)."""
    return {"rank": d.rank, "images": data.n_images, "seen": state.seen, "skipped": state.skipped,
            "skipped_ids": {k: len(v) for k, v in state.skipped_ids.items()},
            "param_sum": float(sum(p.detach().double().sum() for p in model.parameters()))}


def _throughput(log: _Log, state: RunState, ranks: list[dict], steady_rate: float | None) -> dict:
    """Print and return the run's steps, samples, seconds and images/s."""
    total_seen = sum(r["seen"] for r in ranks)
    train_s = max(state.elapsed, 1e-9)
    log.print(f"trained {state.step} steps, {total_seen} samples in {train_s:.0f} s ({total_seen / train_s:.0f} img/s"
              + (f"; {steady_rate:.0f} after the first {STEADY_AFTER} steps)" if steady_rate else ")"))
    return {"steps": state.step, "samples": total_seen, "train_seconds": round(train_s, 1),
            "img_per_s": round(total_seen / train_s, 1),
            "img_per_s_steady": None if steady_rate is None else round(steady_rate, 1)}


def _save_model(final: CCCNet, config: dict, args: argparse.Namespace, out: Path, device: torch.device) -> CCCNet:
    """Save the model folder (in --save-dtype) and return it read back as users will."""
    final.eval()
    save_model = final
    if args.save_dtype == "fp16":
        save_model = CCCNet(**config).half()
        save_model.load_state_dict(final.state_dict())
    save_model.save_pretrained(out)
    return load_model(out, device=device)


def _final_evaluation(result: dict, model: CCCNet, val_sources: list, args: argparse.Namespace, precision: str,
                      log: _Log, step: int) -> None:
    """Every val image through the saved model: ``result["val"]`` (none when no val image is usable)."""
    loader = make_loader(val_sources, args.store_size, 32, args.workers)
    val = evaluate(model, (x for x, _, _ in loader), args.size, precision)
    if not val.get("images"):
        log.print(f"val: no usable image in {args.val}; no val figures")
        return
    result["val"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in val.items()}
    log.print("val: " + ", ".join(f"{k} {v}" for k, v in result["val"].items()))
    log.scalars(step, "val", val)


def _machine(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"


def _push(out: Path, args: argparse.Namespace) -> int:
    from training.export import HubUploadError, push_to_hub

    try:
        print(f"pushed: {push_to_hub(out, args.push_to_hub, private=args.private)}", flush=True)
    except HubUploadError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
