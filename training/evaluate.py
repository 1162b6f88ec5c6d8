"""Evaluate a CCC++ model on a val set (during training, after it, or on its own).

    python -m training.evaluate runs/mymodel --val ../shared/data/val --size 224

Each val image (shorter side to ``--store-size``, centre square) is resized to
``--size``, its L colorized (argmax decoding, Eq. 17-18) and compared with the original
colours by :class:`ccc_nodes.core.metrics.ColorMetrics` (METHOD.md section 10). Also reports
the quantisation deviation of the model's classes on the same pixels (Table II), and with
``--grid-profile`` where the a*b* changes of the decoded class map (model resolution,
before any upsampling) sit in the 8-cell period of a stride-32 encoder
(:func:`ccc_nodes.core.metrics.grid_profile`).

Precision is :func:`ccc_nodes.core.prediction.resolve_precision`'s: ``auto`` runs as it runs
for users of the model; during training the trainer passes the precision it trains in.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from ccc_nodes.core.classes import ab_at_output
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.metrics import ColorMetrics, grid_profile
from ccc_nodes.core.modeling import CCCNet
from ccc_nodes.core.prediction import autocast, decode_ab, join_lab, pick_device
from ccc_nodes.core.settings import check_size
from training.data import lab_targets, list_sources, make_loader

__all__ = ["autocast", "evaluate", "sample_grid"]


def _resize(images: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    x = images.to(device).float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x


@torch.no_grad()
def colorize(model: CCCNet, rgb: torch.Tensor, precision: str = "auto") -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` -> the model's colorization of its L ``(B, 3, H, W)``."""
    L = rgb_to_lab(rgb)[:, :1]
    with autocast(rgb.device, precision):
        logits = model(L).float()
    return join_lab(L, decode_ab(logits, model.classes, "argmax"))


@torch.no_grad()
def evaluate(model: CCCNet, batches: Iterable[torch.Tensor], size: int = 224, precision: str = "auto",
             profile: bool = False) -> dict:
    """Val figures over uint8 batches ``(B, 3, S, S)``: ColorMetrics' keys plus
    ``dev_mean`` / ``dev_max``, the a*b* deviation (per channel) of the ground truth from
    its own class centre - Table II's deviation, with dropped bins folded. With
    ``profile``: ``grid_profile``, the mean |d a*b*| of the decoded class maps by position
    in the 8-cell period (entry 0: the grid lines)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    metrics = ColorMetrics(model.classes)
    dev_sum, dev_n, dev_max = 0.0, 0, 0.0
    prof = None
    for images in batches:
        if images.shape[0] == 0:
            continue
        gt = _resize(images, size, device)
        metrics.update(colorize(model, gt, precision), gt)
        if profile:
            with autocast(device, precision):
                logits = model(rgb_to_lab(gt)[:, :1]).float()
            sums = grid_profile(model.classes.decode(logits.argmax(1)))
            prof = sums if prof is None else (prof[0] + sums[0], prof[1] + sums[1])
        _, target = lab_targets(gt, model.classes)
        ab = ab_at_output(rgb_to_lab(gt))
        d = (ab - model.classes.decode(target)).abs()
        dev_sum, dev_n, dev_max = dev_sum + d.sum().item(), dev_n + d.numel(), max(dev_max, d.max().item())
    model.train(was_training)
    out = metrics.compute()
    out.update(dev_mean=dev_sum / max(dev_n, 1), dev_max=dev_max)
    if prof is not None:
        out["grid_profile"] = [round(v, 3) for v in (prof[0] / prof[1]).tolist()]
    return out


@torch.no_grad()
def sample_grid(model: CCCNet, images: torch.Tensor, size: int, precision: str = "auto") -> torch.Tensor:
    """uint8 ``(n, 3, S, S)`` -> one picture ``(3, 3*size, n*size)`` in [0, 1]: rows
    grey input, prediction, ground truth."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gt = _resize(images, size, device)
    pred = colorize(model, gt, precision)
    grey = rgb_to_lab(gt)[:, :1].div(100).clamp(0, 1).expand(-1, 3, -1, -1)
    model.train(was_training)
    rows = [torch.cat(list(x), dim=-1) for x in (grey, pred, gt)]
    return torch.cat(rows, dim=-2).cpu()


def _error(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def missing_model_folder(arg: str) -> str | None:
    """The message for a model argument that names a local folder which does not exist
    (:func:`ccc_nodes.core.hub.missing_local_folder`), else None - the argument is ``default``,
    an existing path, or a Hub repo id."""
    from ccc_nodes.core.hub import missing_local_folder

    missing = missing_local_folder(arg)
    if missing is None:
        return None
    closest = missing[1]
    return f"model folder {arg} does not exist" + (f"; did you mean {closest}?" if closest else "")


def main(argv: list[str] | None = None) -> int:
    from ccc_nodes.core.hub import ModelLoadError, load_model

    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model folder, Hub repo id, or 'default'")
    p.add_argument("--val", required=True, help="val images: folder, .tar, .txt list or glob of shards")
    p.add_argument("--size", type=int, default=224, help="evaluation size (positive multiple of 32)")
    p.add_argument("--store-size", type=int, default=256, help="images are decoded at this size first")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (0: in this process)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--grid-profile", action="store_true",
                   help="also give the mean a*b* change of the decoded class maps by position in the 8-cell grid period")
    a = p.parse_args(argv)
    try:
        check_size(a.size, "--size")
    except ValueError as e:
        return _error(str(e))
    if a.store_size < 1 or a.batch < 1 or a.workers < 0:
        return _error("--store-size and --batch must be at least 1, --workers not negative")
    missing = missing_model_folder(a.model)
    if missing:
        return _error(missing)
    if a.json:
        try:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return _error(f"--json {a.json}: cannot create its folder ({e})")
    try:
        sources = list_sources(a.val)
    except (FileNotFoundError, OSError) as e:
        return _error(f"--val: {e}")
    try:
        model = load_model(a.model, device=pick_device(a.device))
    except (ModelLoadError, ValueError) as e:
        return _error(str(e))
    skipped = {"corrupt": 0, "grey": 0}

    def batches() -> Iterable[torch.Tensor]:
        for x, corrupt, grey in make_loader(sources, a.store_size, a.batch, a.workers):
            skipped["corrupt"] += len(corrupt)
            skipped["grey"] += len(grey)
            yield x

    result = evaluate(model, batches(), a.size, profile=a.grid_profile) if sources else {"images": 0}
    if not result.get("images"):
        why = f"{len(sources)} files: {skipped['corrupt']} unreadable, {skipped['grey']} grey" if sources else "no image files"
        return _error(f"no usable val images in {a.val} ({why})", 1)
    # strict JSON: a figure that could not be computed is null, never NaN
    figures = {k: (round(v, 4) if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in result.items()}
    text = json.dumps(figures, indent=1, allow_nan=False)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
