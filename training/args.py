"""The trainer's options: the parser, ``--config`` files, and every check that can be
made before any image is read.

Every option can come from a YAML or JSON ``--config`` file; the command line wins. A
resumed run may change only the options in :data:`RESUMABLE`; any other must equal the
checkpoint's, so it continues the same trajectory.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ccc_nodes.core.classes import PAPER_MIN_FRACTION, ColorClasses
from ccc_nodes.core.loss import REBALANCING
from ccc_nodes.core.modeling.ccc import DECODERS, PAPER_DECODER
from ccc_nodes.core.settings import PRECISIONS, check_size
from training.optim import EMA_DECAY
from training.pretrained import IMAGENET_PACKAGES

DESCRIPTION = "Train a CCC++ model: CPU, one GPU, or many under torchrun (DDP)."
# Options a resumed run may change; any other must equal the checkpoint's (same trajectory).
RESUMABLE = {"steps", "time_budget", "val", "eval_every", "eval_images", "sample_every", "log_every", "ckpt_every",
             "tensorboard", "progress", "workers", "data_mode", "memory_gb", "threads", "device", "resume", "config",
             "save_dtype", "name", "push_to_hub", "private", "compile", "stats_images"}


class TrainError(Exception):
    """A problem with the options or the data, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=DESCRIPTION,
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


def check_resume(state: dict, args: argparse.Namespace) -> None:
    """A resumed run continues the same trajectory: refuse changed options that would
    change it, naming each."""
    before = state.get("args", {})
    changed = [k for k, v in vars(args).items() if k not in RESUMABLE and k in before and before[k] != v]
    if changed:
        shown = "; ".join(f"--{k.replace('_', '-')} was {before[k]!r}, now {getattr(args, k)!r}" for k in changed)
        raise TrainError(f"--resume continues the checkpoint's run with its options: {shown}. "
                         "Use the checkpoint's values, or a new --out for a new run")


def command_line(argv: list[str] | None, world: int) -> str:
    """The command that started this run, for training.json and the card."""
    args = argv if argv is not None else sys.argv[1:]
    launcher = f"torchrun --nproc-per-node {world} -m training.train" if world > 1 else "python -m training.train"
    return f"{launcher} {shlex.join(args)}"
