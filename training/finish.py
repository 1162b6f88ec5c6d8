"""The end of a run: its throughput over all ranks, the model folder saved and read back
as users will, the final evaluation, training.json and the model card, the upload."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.hub import load_model
from ccc_nodes.core.modeling import CCCNet
from training import dist
from training.card import write_model_card
from training.checkpoint import RunState
from training.data import make_loader
from training.evaluate import evaluate
from training.log import STEADY_AFTER, Log
from training.setup import Data


def rank_report(d: dist.Dist, data: Data, state: RunState, model: torch.nn.Module) -> dict:
    """This rank's part of training.json (the parameter sum shows DDP kept the replicas equal)."""
    return {"rank": d.rank, "images": data.n_images, "seen": state.seen, "skipped": state.skipped,
            "skipped_ids": {k: len(v) for k, v in state.skipped_ids.items()},
            "param_sum": float(sum(p.detach().double().sum() for p in model.parameters()))}


def throughput(log: Log, state: RunState, ranks: list[dict], steady_rate: float | None) -> dict:
    """Print and return the run's steps, samples, seconds and images/s."""
    total_seen = sum(r["seen"] for r in ranks)
    train_s = max(state.elapsed, 1e-9)
    log.print(f"trained {state.step} steps, {total_seen} samples in {train_s:.0f} s ({total_seen / train_s:.0f} img/s"
              + (f"; {steady_rate:.0f} after the first {STEADY_AFTER} steps)" if steady_rate else ")"))
    return {"steps": state.step, "samples": total_seen, "train_seconds": round(train_s, 1),
            "img_per_s": round(total_seen / train_s, 1),
            "img_per_s_steady": None if steady_rate is None else round(steady_rate, 1)}


def summary(model: torch.nn.Module, classes: ColorClasses, data: Data, d: dist.Dist, ranks: list[dict],
            precision: str, resumed: bool) -> dict:
    """The run's facts for training.json: the model, its classes, the data (files skipped summed over the ranks)."""
    reasons = dict.fromkeys(k for r in ranks for k in (*r["skipped"], *r["skipped_ids"]))
    skipped = {k: sum(r["skipped"].get(k, 0) + r["skipped_ids"].get(k, 0) for r in ranks) for k in reasons}
    return dict(parameters=sum(p.numel() for p in model.parameters()), K=classes.K, num_bins=classes.num_bins,
                train_images=len(data.sources), skipped=sum(skipped.values()), skipped_detail=skipped,
                data_mode=data.mode, world_size=d.world, ranks=ranks, precision=precision, resumed=resumed)


def save_model(final: CCCNet, config: dict, args: argparse.Namespace, out: Path, device: torch.device) -> CCCNet:
    """Save the model folder (in --save-dtype) and return it read back as users will."""
    final.eval()
    to_save = final
    if args.save_dtype == "fp16":
        to_save = CCCNet(**config).half()
        to_save.load_state_dict(final.state_dict())
    to_save.save_pretrained(out)
    return load_model(out, device=device)


def final_evaluation(result: dict, model: CCCNet, val_sources: list, args: argparse.Namespace, precision: str,
                     log: Log, step: int) -> None:
    """Every val image through the saved model: ``result["val"]`` (none when no val image is usable)."""
    loader = make_loader(val_sources, args.store_size, 32, args.workers)
    val = evaluate(model, (x for x, _, _ in loader), args.size, precision)
    if not val.get("images"):
        log.print(f"val: no usable image in {args.val}; no val figures")
        return
    result["val"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in val.items()}
    log.print("val: " + ", ".join(f"{k} {v}" for k, v in result["val"].items()))
    log.scalars(step, "val", val)


def machine(device: torch.device) -> str:
    """The GPU's name, or the CPU's, for the card."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"


def write_record(out: Path, result: dict) -> None:
    """The run's record in the model folder: training.json and the model card (README.md)."""
    (out / "training.json").write_text(json.dumps(result, indent=1))
    write_model_card(out, result)


def push(out: Path, args: argparse.Namespace) -> int:
    """--push-to-hub: upload the model folder; the exit status (2 when the upload failed)."""
    from training.export import HubUploadError, push_to_hub

    try:
        print(f"pushed: {push_to_hub(out, args.push_to_hub, private=args.private)}", flush=True)
    except HubUploadError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0
