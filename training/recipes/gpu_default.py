"""The prepared GPU run for a new embedded default model: pack here, train there, compare.

The device machine takes the working tree and a few carried folders, 64 MiB in all, and
one command of at most 10 minutes. So the run is prepared here, in two steps:

    # 1. here: pack what the device needs into .pack/gpu (ignored by git, carried):
    #    the one-channel ImageNet encoder (fp16), a val subset and as many training
    #    photos as fit beside the working tree in 64 MiB; writes .pack/gpu/config.json
    python -m training.recipes.gpu_default prepare ../shared/data/train ../shared/data/val .pack/gpu

    # 2. there, one command (carry .pack/gpu): about 7 minutes of training, val, table
    bash training/recipes/gpu_default.sh .pack/gpu "$OUT" 420

``gpu_default.sh`` trains with ``PACK_DIR/config.json``'s options and judges the run by the
rule for a new default (:mod:`training.recipes.default_rule`) against the current default on
the packed val subset; it leaves in OUT the model folder (``model/``), ``judge/table.md`` and
``train.log``. The decisive judgement is then made here, on the whole val set of original
files, against the rule's reference, beside the current default:

    python -m training.recipes.default_rule OUT/model ccc_nodes/default_model --val ../shared/data/val --out runs/judge-gpu
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from training.data import list_sources

MIB = 2**20
TRAVEL_LIMIT = 64 * MIB  # the working tree plus carried folders that travel to the device
RETURN_LIMIT = 16 * MIB  # the largest file that comes back from the device
MARGIN = 2 * MIB  # left free for what lands in the working tree before the run
# The candidate: the skip decoder on EfficientNet-Lite0 started from the current default's
# encoder (itself from ImageNet weights; it travels in the working tree anyway, so all the
# room goes to photos: about 2.5 times as many as beside Lite2's 8.9 MB ImageNet file),
# trained as the current default was (batch 128, lr 3e-4 constant after 100 warm-up steps,
# ccc p = 10, bf16) plus the weight average. `prepare` writes its config.
CANDIDATE = {"encoder": "efficientnet_lite0", "decoder": "skip", "decoder_channels": "512,256,256",
             "store_size": 224, "size": 224, "batch": 128, "lr": 3e-4, "warmup": 100, "schedule": "constant",
             "rebalance": "ccc", "p": 10.0, "workers": 16, "save_dtype": "fp16", "data_mode": "memory",
             "progress": False, "tensorboard": False, "log_every": 100, "ckpt_every": 1000}


def travelling_bytes(repo: Path) -> int:
    """Bytes of the working tree that travels: tracked files and untracked ones git does
    not ignore (carried folders come on top)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout
    total = 0
    for name in out.decode().split("\0"):
        path = repo / name
        if name and path.is_file():
            total += path.stat().st_size
    return total


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare(train: str, val: str, pack_dir: Path, *, encoder: str = CANDIDATE["encoder"], init: str = "default",
            decoder: str = CANDIDATE["decoder"], decoder_channels: str = CANDIDATE["decoder_channels"],
            room: int | None = None, val_images: int = 64, size: int = 224, quality: int = 70,
            val_quality: int = 90, fmt: str = "webp", seed: int = 0, progress: bool = True) -> dict:
    """Pack the device's data into ``pack_dir`` and write its trainer config; returns the
    manifest (also ``pack_dir/manifest.json``). ``init``: ``default`` (the embedded default
    model's encoder, already in the working tree), ``imagenet`` (packed as a one-channel
    fp16 file), ``scratch`` or a file. ``room``: bytes the pack may take (default: what
    64 MiB leaves beside the travelling working tree, less a margin)."""
    from ccc_nodes.core.modeling import CCCNet
    from training.pack import pack
    from training.pretrained import imagenet_encoder

    repo = Path(__file__).resolve().parents[2]
    widths = [int(c) for c in decoder_channels.split(",")]
    params = sum(p.numel() for p in CCCNet(encoder, widths, kept=range(700), decoder=decoder).parameters())
    if 2 * params > RETURN_LIMIT:  # fp16 weights; K is at most ~600 at the paper's fraction
        raise ValueError(f"{encoder} + {decoder} decoder {decoder_channels}: {params / 1e6:.1f}M parameters make "
                         f"a {2 * params / MIB:.0f} MiB fp16 file, over the {RETURN_LIMIT // MIB} MiB that come back")
    pack_dir.mkdir(parents=True, exist_ok=True)
    for old in ("train.tar", "val.tar", "init.safetensors", "config.json", "manifest.json"):
        (pack_dir / old).unlink(missing_ok=True)
    tree = travelling_bytes(repo)
    if room is None:
        room = TRAVEL_LIMIT - tree - MARGIN
    config = {**CANDIDATE, "encoder": encoder, "decoder": decoder, "decoder_channels": decoder_channels,
              "store_size": size, "size": size}
    rel = os.path.relpath(pack_dir.resolve(), repo) if pack_dir.resolve().is_relative_to(repo) else str(pack_dir)
    if init == "imagenet":
        from safetensors.torch import save_file

        enc = imagenet_encoder(encoder, features=decoder == "skip")
        sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in enc.state_dict().items()}
        save_file(sd, str(pack_dir / "init.safetensors"))
        config["init"] = f"{rel}/init.safetensors"
    elif init == "default":
        from ccc_nodes.core.hub import DEFAULT_MODEL_DIR

        default_encoder = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())["encoder"]
        if default_encoder != encoder:
            raise ValueError(f"--init default starts from the default model's {default_encoder} encoder, not {encoder}")
        config["init"] = os.path.relpath(DEFAULT_MODEL_DIR / "model.safetensors", repo)
    else:
        config["init"] = init
    val_sources = list_sources(val)
    random.Random(seed).shuffle(val_sources)
    _, n_val, _, _ = pack(val_sources[:val_images], pack_dir / "val.tar", size, val_quality,
                          max_mb=(room - _folder_bytes(pack_dir)) / 1e6, progress=progress, root=val, fmt=fmt)
    left = room - _folder_bytes(pack_dir)
    sources = list_sources(train)
    random.Random(seed).shuffle(sources)
    _, n_train, _, bad = pack(sources, pack_dir / "train.tar", size, quality, max_mb=left / 1e6,
                              progress=progress, root=train, fmt=fmt)
    if not n_train:
        raise ValueError(f"no training photo fits in the {left / 1e6:.1f} MB left beside the working tree")
    config.update(data=f"{rel}/train.tar", val=f"{rel}/val.tar", eval_images=n_val)
    (pack_dir / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    manifest = {"working_tree_bytes": tree, "room_bytes": room, "pack_bytes": _folder_bytes(pack_dir),
                "train_images": n_train, "train_available": len(sources), "unreadable": bad,
                "val_images": n_val, "val_available": len(list_sources(val)), "format": fmt, "quality": quality,
                "size": size, "candidate": config}
    (pack_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.recipes.gpu_default", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="pack the device's data and write its trainer config")
    a.add_argument("train", help="training photos (folder, tar, list)")
    a.add_argument("val", help="val photos")
    a.add_argument("pack_dir", help="where to write train.tar, val.tar, init.safetensors, config.json (e.g. .pack/gpu)")
    a.add_argument("--encoder", default=CANDIDATE["encoder"])
    a.add_argument("--decoder", default=CANDIDATE["decoder"])
    a.add_argument("--decoder-channels", default=CANDIDATE["decoder_channels"])
    a.add_argument("--init", default="default", help="default: the embedded default model's encoder (carried "
                   "free); imagenet: packed as a file (8.9 MB for efficientnet_lite2); scratch; or a file")
    a.add_argument("--room-mb", type=float, default=None, help="MB the pack may take (default: 64 MiB less the "
                                                               "travelling working tree, less 2 MiB)")
    a.add_argument("--val-images", type=int, default=64, help="val photos packed for the device's table")
    a.add_argument("--quality", type=int, default=70, help="quality of the packed training photos")
    a.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.cmd == "prepare":  # the only command; the judgement is default_rule's
            m = prepare(args.train, args.val, Path(args.pack_dir), encoder=args.encoder, init=args.init,
                        decoder=args.decoder, decoder_channels=args.decoder_channels,
                        room=None if args.room_mb is None else int(args.room_mb * 1e6), val_images=args.val_images,
                        quality=args.quality, progress=not args.no_progress)
            print(f"{args.pack_dir}: {m['train_images']} of {m['train_available']} training photos, "
                  f"{m['val_images']} val photos, {m['pack_bytes'] / 1e6:.1f} MB beside a working tree of "
                  f"{m['working_tree_bytes'] / 1e6:.1f} MB")
            print(f"device command (carry {args.pack_dir}): bash training/recipes/gpu_default.sh {args.pack_dir} \"$OUT\" 420")
    except (FileNotFoundError, ValueError, ImportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
