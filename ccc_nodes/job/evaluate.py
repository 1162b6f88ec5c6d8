"""``ccc evaluate``: score colorizations against ground truth (METHOD.md section 10).

    ccc evaluate --gt DIR (--pred DIR | --model REPO_OR_DIR) [--harmonize off|sam|classical]
                 [--sam CKPT] [--crop 256] [--size 224] [--out DIR]

Protocol: every ground-truth image (and its prediction) is resized so that its shorter
side is ``crop`` and centre-cropped to ``crop`` x ``crop`` (default 256); metrics are
computed on sRGB there. With ``--model`` the grey version of that crop is colorized (the
network sees it at ``--size``, as in ``ccc colorize``; its a*b* is joined with the crop's own L); with
``--harmonize`` a second row scores the same predictions after object-selective
harmonisation (METHOD.md section 9). With ``--pred`` each ground-truth image is paired
with the image of DIR that has the same relative path and name, or that name plus
``.png`` (what ``ccc colorize`` writes for ``x.gif``: ``x.gif.png``), or else the same
stem with any image suffix.

Grey ground truths (:func:`ccc_nodes.core.images.is_grey`: uint8 max |R - G| and max |G - B|
at most 3, the one rule of training, the Metrics node and the Space) and images whose
shorter side is under 32 px are not scored:
their class metrics mean nothing (one GT class makes CNR the number of predicted
classes). They are listed with the reason, as unreadable files and missing predictions are.

Writes ``metrics.json``, ``metrics.md`` (a Markdown table) and ``gallery.png`` (grey /
[masks] / prediction / [harmonised] / ground truth for a few images spread over the
set) into ``--out``. Streaming: memory does not grow with the set. Unreadable images
and missing predictions are skipped and listed. LPIPS and FID are ``n/a`` (with what to
install or where to place weights) when their pretrained networks are absent. Exit
status: 0 when images were scored, 1 when none could be, 2 for bad arguments.

Python::

    from ccc_nodes.job.evaluate import evaluate_folder
    result = evaluate_folder("val/", colorizer=Colorizer(), harmonization=Harmonization("classical"))
    result.rows     # {"CCC++": {...}, "CCC++ + harmonisation (classical)": {...}}
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ccc_nodes.core import report
from ccc_nodes.core.images import EVAL_SIZE, IMAGE_SUFFIXES, MAX_PIXELS, ImageError, eval_crop, is_grey, open_image
from ccc_nodes.core.metrics import (
    FID_MODES,
    GREY_RULE,
    ColorMetrics,
    MetricUnavailable,
    load_fid_features,
    load_lpips,
    markdown_table,
    metric_classes,
)
from ccc_nodes.core.settings import INPUT_SIZE, Harmonization
from ccc_nodes.steps.masks import grey_image, overlay

__all__ = ["EvalResult", "check_crop", "eval_crop", "evaluate_folder", "is_grey", "write_report"]

MIN_SIDE = 32  # images with a shorter side under this are not scored
MIN_CROP = 32  # the smallest evaluation view


def check_crop(crop: Any, name: str = "the evaluation crop") -> None:
    """Refuse an evaluation view that is not a multiple of 4 of at least 32 (class maps
    are taken at 1/4 of it)."""
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < MIN_CROP or crop % 4:
        raise ValueError(f"{name} must be a multiple of 4 of at least {MIN_CROP} "
                         f"(class maps are taken at 1/4 of it), got {crop!r}")


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


def images_in(folder: Path) -> list[Path]:
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
    gts = images_in(gt_dir)
    if pred_dir is None:
        return [(g, None) for g in gts], []
    preds = {f.relative_to(pred_dir): f for f in images_in(pred_dir)}
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


def read_crop(path: Path, size: int, max_pixels: int) -> tuple[torch.Tensor, bool]:
    """The evaluation crop of a file and whether it was upscaled; ImageError for
    unreadable files and images too small to score."""
    im = open_image(path, max_pixels)
    w, h = im.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{path}: too small to score ({w}x{h}; the shorter side must be at least {MIN_SIDE} px)")
    return eval_crop(im, size, max_pixels), min(w, h) < size


def _perceptual(lpips: bool | str, fid: bool | str, device: torch.device, notes: dict, fid_mode: str = FID_MODES[0]) -> tuple:
    nets = []
    fid_loader = functools.partial(load_fid_features, mode=fid_mode)
    for name, want, loader in (("lpips", lpips, load_lpips), ("fid", fid, fid_loader)):
        net = None
        if want is False:
            notes[name] = "not computed (turned off)"
        else:
            try:
                net = loader(want if isinstance(want, str) else None, device=device)
            except MetricUnavailable as e:
                notes[name] = f"n/a: {e}"
        nets.append(net)
    if nets[1] is not None:
        notes["fid"] = f"{fid_mode} Inception-v3 (--fid-mode; figures of the two modes are not comparable)"
    return tuple(nets)


@dataclass
class _Sample:
    """One scored image: its place in the set, ground-truth file, crop and prediction crop."""

    index: int
    path: Path
    gt: torch.Tensor  # (3, S, S) in [0, 1]
    pred: torch.Tensor | None  # the same, from --pred; None with a model

    @property
    def rgb(self) -> np.ndarray:
        return self.gt.permute(1, 2, 0).numpy()


@dataclass
class _Tally:
    """What the loop counts besides the metrics."""

    skipped: list[tuple[str, str]]
    greys: list[str] = field(default_factory=list)
    upscaled: int = 0
    changed: list[float] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)


def _read_samples(pairs: Sequence[tuple[Path, Path | None]], start: int, crop: int, max_pixels: int,
                  tally: _Tally) -> list[_Sample]:
    """The evaluation crops of ``pairs`` (numbered from ``start``); what cannot be scored
    goes into ``tally.skipped`` with the reason."""
    samples = []
    for k, (g, p) in enumerate(pairs, start):
        try:
            gt, up = read_crop(g, crop, max_pixels)
        except ImageError as e:
            tally.skipped.append((str(g), _why(e, g)))
            continue
        if is_grey(gt):  # nothing to score colours against (training skips these too)
            tally.greys.append(str(g))
            tally.skipped.append((str(g), f"grey ground truth ({GREY_RULE}): no colours to score against"))
            continue
        try:
            pred = read_crop(p, crop, max_pixels)[0] if p is not None else None
        except ImageError as e:
            tally.skipped.append((str(g), f"prediction {p}: {_why(e, p)}"))
            continue
        tally.upscaled += up
        samples.append(_Sample(k, g, gt, pred))
    return samples


def _picture(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def _colorized(samples: list[_Sample], colorizer, harmonization: Harmonization | None, sam, tally: _Tally,
               shown: set[int]) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, dict[int, torch.Tensor]]:
    """The model's job on the samples' grey: (plain RGBs, harmonised RGBs or None, mask
    overlays of the gallery's samples)."""
    results = colorizer.run([s.rgb for s in samples], harmonization=harmonization, sam=sam)
    plain = [r.prediction.rgb(r.decoding).cpu() for r in results]
    if harmonization is None:
        return plain, None, {}
    overlays = {}
    for s, r in zip(samples, results, strict=True):
        tally.changed.append(r.harmonized.changed)
        tally.sources.add(r.masks.source)
        if s.index in shown:
            overlays[s.index] = _picture(overlay(r.prediction, r.masks))
    return plain, [r.rgb.cpu() for r in results], overlays


@torch.no_grad()
def evaluate_folder(
    gt_dir: str | Path,
    pred_dir: str | Path | None = None,
    colorizer=None,
    harmonization: Harmonization | None = None,
    sam=None,
    crop: int = EVAL_SIZE,
    lpips: bool | str = True,
    fid: bool | str = True,
    fid_mode: str = FID_MODES[0],
    gallery: int = 6,
    limit: int | None = None,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
    model_size: int = INPUT_SIZE,
) -> EvalResult:
    """Score a folder of ground-truth images against predictions or a model.

    Arguments:
      gt_dir: the ground-truth colour images (searched recursively).
      pred_dir: predictions with the same relative paths and stems (any image suffix);
        or None with ``colorizer``.
      colorizer: a :class:`ccc_nodes.Colorizer` that colorizes each ground truth's grey.
      harmonization: :class:`~ccc_nodes.core.settings.Harmonization` to score a second row
        after harmonisation (only with ``colorizer``); SAM masks without ``sam`` fall
        back to classical ones and ``notes["masks"]`` says so.
      sam: a loaded SAM model (:func:`ccc_nodes.steps.masks.load_sam`).
      crop: the evaluation view (shorter side, then centre square): a multiple of 4, at least 32.
      lpips, fid: True to load the default networks, a path to load them from, False to
        leave the metric out.
      fid_mode: which Inception-v3 FID uses (:data:`ccc_nodes.core.metrics.FID_MODES`): the
        TensorFlow FID network, or torchvision's ImageNet one.
      gallery: how many images the gallery shows (spread over the set); 0 for none.
      limit: score only the first ``limit`` images.
      progress: show a progress bar.
      max_pixels: refuse larger images.
      model_size: the input size of the network behind ``pred_dir`` (with ``colorizer``:
        its own size): the grid ratio looks for that network's 8-cell grid at
        ``model_size / 4`` cells (:class:`ccc_nodes.core.metrics.ColorMetrics`).
    """
    from tqdm.auto import tqdm

    if (pred_dir is None) == (colorizer is None):
        raise ValueError("give exactly one of pred_dir (a folder of predictions) or colorizer (a model)")
    if harmonization is not None and colorizer is None:
        raise ValueError("harmonisation needs the model's class predictions: use --model, not --pred")
    check_crop(crop)
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

    # -- the metrics: one row per variant, the model's classes (else the default model's, as the Metrics node)
    notes: dict[str, str] = {}
    device = colorizer.device if colorizer is not None else torch.device("cpu")
    if fid_mode not in FID_MODES:
        raise ValueError(f"FID mode must be one of {FID_MODES}, got {fid_mode!r}")
    lp, fd = _perceptual(lpips, fid, device, notes, fid_mode)
    classes, notes["classes"] = metric_classes(colorizer.classes if colorizer is not None else None)
    label = "prediction" if colorizer is None else "CCC++"
    grid_at = colorizer.size if colorizer is not None else model_size
    metrics = {label: ColorMetrics(classes, lpips=lp, fid=fd, model_size=grid_at)}
    hlabel = None
    if harmonization is not None:
        if harmonization.masks == "sam" and sam is None:
            notes["masks"] = "SAM was asked for but no SAM checkpoint was given: classical masks were used"
            harmonization = replace(harmonization, masks="classical")
        hlabel = f"CCC++ + harmonisation ({'sam' if sam is not None and harmonization.masks != 'classical' else 'classical'})"
        metrics[hlabel] = ColorMetrics(classes, lpips=lp, fid=fd, model_size=grid_at)

    # -- the loop: read a chunk of crops, colorize their grey (or take the predictions), score
    n_gal = min(gallery, len(pairs))
    shown = {round(i * (len(pairs) - 1) / max(n_gal - 1, 1)) for i in range(n_gal)} if n_gal else set()
    gallery_rows: list[list[torch.Tensor]] = []
    tally = _Tally(skipped)
    batch = colorizer.batch_size if colorizer is not None else 8
    bar = tqdm(total=len(pairs), desc="evaluate", unit="img", disable=not progress)
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        samples = _read_samples(chunk, start, crop, max_pixels, tally)
        if samples:
            gts = torch.stack([s.gt for s in samples])
            overlays: dict[int, torch.Tensor] = {}
            if colorizer is None:
                rows = {label: [s.pred for s in samples]}
            else:
                plain, harmonised, overlays = _colorized(samples, colorizer, harmonization, sam, tally, shown)
                rows = {label: plain} | ({hlabel: harmonised} if harmonised is not None else {})
            rows = {name: torch.cat([x.view(-1, *x.shape[-3:]) for x in rgbs]) for name, rgbs in rows.items()}
            gt_feats = fd(gts.to(device)) if fd is not None else None
            for name, pred in rows.items():
                metrics[name].update(pred, gts, gt_features=gt_feats)
            for i, s in enumerate(samples):
                if s.index in shown:
                    grey = _picture(Image.fromarray(grey_image(s.rgb, None)))
                    gallery_rows.append([grey, *([overlays[s.index]] if s.index in overlays else []),
                                         *(rows[n][i] for n in rows), s.gt])
        bar.update(len(chunk))
    bar.close()

    heads = ["grey", *(["masks"] if hlabel else []), *(["prediction"] if colorizer is None else ["CCC++"]),
             *(["harmonised"] if hlabel else []), "ground truth"]
    return EvalResult(
        rows={name: m.compute() for name, m in metrics.items()},
        notes=notes | _tally_notes(tally, crop, harmonization if hlabel else None),
        skipped=tally.skipped,
        gallery=report.gallery(gallery_rows, heads) if gallery_rows else None,
        settings={"gt": str(gt_dir), "pred": str(pred_dir) if pred_dir else None, "crop": crop,
                  "harmonization": harmonization.as_dict() if hlabel else None, "images": len(pairs)},
    )


def _tally_notes(tally: _Tally, crop: int, harmonization: Harmonization | None) -> dict[str, str]:
    notes = {}
    if tally.greys:
        greys = tally.greys
        shown = ", ".join(Path(f).name for f in greys[:20]) + (f" and {len(greys) - 20} more" if len(greys) > 20 else "")
        notes["grey"] = (f"{len(greys)} grey ground truth{'s' if len(greys) > 1 else ''} not scored (no colours to "
                         f"score against; training skips grey photos too): {shown}")
    if tally.upscaled:
        n = tally.upscaled
        notes["upscaled"] = (f"{n} ground truth{'s' if n > 1 else ''} had a shorter side under {crop} px "
                             f"and {'were' if n > 1 else 'was'} upscaled")
    if harmonization is not None and tally.changed:
        notes["harmonisation"] = (
            f"masks from {', '.join(sorted(tally.sources))}; {100 * float(np.mean(tally.changed)):.2f}% of pixels "
            "recoloured on average; thresholds " + ", ".join(f"{k}={v}" for k, v in harmonization.thresholds.items())
        )
    return notes


def write_report(result: EvalResult, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md`` and ``gallery.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "md": out / "metrics.md"}
    report.write_json({"command": command, "settings": result.settings, "rows": result.rows, "notes": result.notes,
                "skipped": [{"file": f, "why": w} for f, w in result.skipped]}, paths["json"])
    lines = []
    if command:
        lines += ["```", command, "```", ""]
    n = max((int(r.get("images", 0)) for r in result.rows.values()), default=0)
    lines += [markdown_table(result.rows), "",
              f"{n} images, shorter side {result.settings.get('crop')} + centre crop; TAR and CCAR in %, "
              "CCAR (GT) is the ground truth's own class coverage; grid: the a*b* change across the lines of "
              "the network's 8-cell grid at 1/4 of its input over the change elsewhere (blocks give well over 1, "
              "natural images about 1; grid_gt in metrics.json is the ground truth's). Wrong colour, in % of the "
              "pixels of the set it counts (CIE Lab chroma C*, METHOD.md section 10): wrong hue, both C* >= 12 and "
              "hues over 60 degrees apart; false colour, truth C* < 6 painted C* >= 15; washed, truth C* >= 15 "
              "left C* < 6. ΔCF is per image, ΔCF (set) the literature's |mean CF - mean CF (GT)|; CF (abs) is "
              "DDColor's and CT2's colourfulness."]
    lines += [f"- {k}: {v}" for k, v in result.notes.items()]
    if result.skipped:
        lines += ["", f"Skipped {len(result.skipped)}:"] + [f"- {f}: {w}" for f, w in result.skipped]
    paths["md"].write_text("\n".join(lines) + "\n")
    if result.gallery is not None:
        paths["gallery"] = out / "gallery.png"
        result.gallery.save(paths["gallery"], optimize=True)
    return paths
