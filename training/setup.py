"""Building a run, in the order the trainer does it: processes, device and seeds; the
output folder and the checkpoint to resume; the images, this rank's shard and the colour
classes; the network; the val images kept in memory."""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.images import IMAGE_SUFFIXES
from ccc_nodes.core.modeling import CCCNet
from ccc_nodes.core.prediction import pick_device
from training import dist
from training.args import TrainError, check_resume
from training.checkpoint import load_checkpoint
from training.data import class_histogram, drop_dull, list_sources, load_images
from training.log import Log
from training.pretrained import load_init_weights
from training.stats import dataset_histogram
from training.stop import Progress

CHECKPOINT = "checkpoint.pt"


def start(args: argparse.Namespace) -> tuple[dist.Dist, torch.device]:
    """Threads, the process group when torchrun started us, the device, the seeds."""
    if args.threads:
        torch.set_num_threads(args.threads)
    d, device_name = dist.setup(args.device)
    device = pick_device(device_name)
    random.seed(args.seed + d.rank)
    np.random.seed(args.seed + d.rank)
    torch.manual_seed(args.seed)  # same initial weights on every rank
    return d, device


def open_run(args: argparse.Namespace, d: dist.Dist) -> tuple[Path, Path, dict | None]:
    """The output folder, its checkpoint path, and the checkpoint with --resume (None: a fresh run).
    An existing checkpoint is never overwritten without --resume; a resumed run keeps its options."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.is_file() and not args.resume:
        raise TrainError(f"{ckpt_path} holds a run already: add --resume to continue it, or choose another --out")
    Progress.reset(ckpt_path)
    ckpt = load_checkpoint(ckpt_path) if args.resume and ckpt_path.is_file() else None
    if args.resume and ckpt is None and d.main:
        print(f"--resume: no checkpoint at {ckpt_path}; starting a fresh run", file=sys.stderr, flush=True)
    if ckpt is not None:
        Progress.saved = ckpt["step"]
        check_resume(ckpt, args)
    return out, ckpt_path, ckpt


def list_images(args: argparse.Namespace) -> tuple[list, list]:
    """The training and val files; none found is an error."""
    sources = list_sources(args.data)
    if not sources:
        raise TrainError(f"--data {args.data}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    val_sources = list_sources(args.val) if args.val else []
    if args.val and not val_sources:
        raise TrainError(f"--val {args.val}: no images found")
    return sources, val_sources


@dataclass
class Data:
    """This rank's training images: decoded into ``images`` (memory mode) or streamed from ``shard``."""

    sources: list  # every rank's files (a seeded --max-images sample)
    shard: list  # this rank's
    mode: str  # memory or stream
    images: torch.Tensor | None
    n_images: int
    skipped: dict[str, int]  # memory mode: the files that did not decode, counted once


def load_shard(args: argparse.Namespace, d: dist.Dist, device: torch.device, sources: list, log: Log) -> Data:
    """This rank's share of the files (of a seeded --max-images sample), decoded and held
    (on the GPU when there is one) or left to stream, per --data-mode."""
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
    data = Data(sources, shard, mode, images, images.shape[0] if images is not None else len(shard), skipped)
    log.print(f"train: {len(sources)} images in {d.world} shard(s); this rank {data.n_images} ({mode}), "
              f"skipped {skipped['corrupt']} corrupt, {skipped['grey']} grey"
              + (f", {skipped['dull']} under colourfulness {args.min_colorfulness:g}" if "dull" in skipped else ""))
    return data


def colour_classes(args: argparse.Namespace, d: dist.Dist, device: torch.device, data: Data, ckpt: dict | None,
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


def class_counts(classes: ColorClasses, counts: torch.Tensor | None) -> torch.Tensor | None:
    """G^2 bin counts folded onto the K classes (the loss's class frequencies)."""
    if counts is None:
        return None
    return torch.zeros(classes.K, dtype=torch.float64).index_add_(0, classes.lut, counts.double())


def model_config(args: argparse.Namespace, classes: ColorClasses) -> dict:
    """The network's configuration (Tables III-IV) with the run's colour classes: what config.json holds."""
    return {"encoder": args.encoder, "decoder": args.decoder, "bin_size": classes.bin_size,
            "decoder_channels": [int(c) for c in str(args.decoder_channels).split(",")], "kept": classes.kept.tolist()}


def build_model(config: dict, args: argparse.Namespace, device: torch.device, d: dist.Dist, precision: str,
                log: Log) -> tuple[CCCNet, str]:
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
    frozen = freeze_unused(model, device)
    if frozen:
        log.print(f"frozen {frozen} encoder tensors the features never use (timm head layers)")
    return model, init_desc


def freeze_unused(model: CCCNet, device: torch.device) -> int:
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


def wrap(model: torch.nn.Module, args: argparse.Namespace, device: torch.device, d: dist.Dist,
         log: Log) -> torch.nn.Module:
    """What the training step calls: the model, under DDP and torch.compile when asked."""
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if not args.compile:
        return model
    log.print("torch.compile: the first steps compile the model (minutes on a CPU)")
    return torch.compile(model)


def val_cache(args: argparse.Namespace, d: dist.Dist, val_sources: list,
              data: Data) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Rank 0's first --eval-images val images (None without val), and the pictures of the
    sample grids: those, else the first training images held in memory (else None)."""
    val_cache = load_images(val_sources[: args.eval_images], args.store_size, workers=0, progress=False)[0] \
        if val_sources and d.main else None
    samples = val_cache if val_cache is not None else data.images[:4].cpu() if data.images is not None else None
    return val_cache, samples
