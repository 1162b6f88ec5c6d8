"""``ccc evaluate --hint-points``: the interactive-colorization protocol for colour hints.

For each ground-truth photo (the evaluation crop of METHOD.md section 10), points are
sampled uniformly at random (seeded, nested: the first N of the largest count), each
point's colour the ground truth's mean a*b* in a ``patch`` x ``patch`` square around it,
grown into a region as :func:`~ccc_nodes.steps.hints.grow_point` does, and applied at full
strength. Reported for each N: PSNR, SSIM and TAR against the ground truth, the mean
CIE76 dE between each hinted colour and the output inside its region (weight >= 0.5,
pixels a later hint takes left out), and the mean |L_out - L_in| (0 up to 8-bit rounding
and gamut clipping).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ccc_nodes.core import report
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.images import ImageError
from ccc_nodes.core.metrics import class_map, colorfulness, metric_classes, psnr, ssim
from ccc_nodes.core.prediction import Prediction, join_lab
from ccc_nodes.job.colorizer import Colorizer
from ccc_nodes.steps.hints import Hint, apply_hints, check_count, hint_regions

__all__ = ["HINT_POINTS", "evaluate_hints", "sample_hints", "write_hint_report"]

HINT_POINTS = (0, 1, 2, 5, 10, 20)
PATCH = 5


def sample_hints(gt: torch.Tensor, n: int, rng: np.random.Generator, patch: int = PATCH) -> list[Hint]:
    """``n`` point hints on a ground truth sRGB ``(3, S, S)``: uniform positions, each the
    mean a*b* of the ``patch`` square around it."""
    lab = rgb_to_lab(gt[None].float())[0]
    H, W = lab.shape[-2:]
    r = patch // 2
    hints = []
    for _ in range(n):
        y, x = int(rng.integers(r, H - r)), int(rng.integers(r, W - r))
        ab = lab[1:, y - r : y + r + 1, x - r : x + r + 1].mean(dim=(1, 2))
        hints.append(Hint(ab=(float(ab[0]), float(ab[1])), point=(x + 0.5, y + 0.5)))
    return hints


def _scores(out: torch.Tensor, gt: torch.Tensor, gt_classes: torch.Tensor, classes) -> dict[str, float]:
    """PSNR, SSIM, TAR (%, Eq. 21) and colourfulness of one output against its ground truth."""
    return {"psnr": float(psnr(out, gt)), "ssim": float(ssim(out, gt)),
            "tar": 100.0 * float((class_map(out, classes) == gt_classes).float().mean()), "cf": float(colorfulness(out))}


def _delta_e(out_lab: torch.Tensor, L: torch.Tensor, hints: Sequence[Hint], weights: Sequence[torch.Tensor]) -> list[float]:
    """Mean dE76 between each hint's colour (on the input's L) and the output in its region."""
    size = out_lab.shape[-2:]
    full = [F.interpolate(w[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0] >= 0.5
            for w in weights]
    errs = []
    for i, (hint, region) in enumerate(zip(hints, full, strict=True)):
        own = region.clone()
        for later in full[i + 1 :]:
            own &= ~later
        if own.any():
            got = out_lab[:, own]  # (3, P)
            want = torch.tensor([0.0, *hint.ab]).view(3, 1)
            got[0] -= L[0, 0][own]
            errs.append(float((got - want).norm(dim=0).mean()))
    return errs


def evaluate_hints(
    paths: Sequence[Path], colorizer: Colorizer, read_crop, counts: Sequence[int] = HINT_POINTS, seed: int = 0,
    gallery: int = 4, progress: bool = True,
) -> tuple[dict[str, dict[str, float]], list[tuple[str, str]], Image.Image | None]:
    """Score ``paths`` (ground truths, read by ``read_crop(path) -> (3, S, S)``) with N
    hints each, for each N of ``counts`` (at most :data:`~ccc_nodes.steps.hints.MAX_HINTS`, refused
    before any work) -> rows by N, skipped files, a gallery."""
    from tqdm.auto import tqdm

    counts = sorted(set(int(n) for n in counts))
    check_count(max(counts, default=0), "hint points: ")
    classes, _ = metric_classes(colorizer.classes)
    scores: dict[int, dict[str, list[float]]] = {n: {k: [] for k in ("psnr", "ssim", "tar", "cf")} for n in counts}
    errs: dict[int, list[float]] = {n: [] for n in counts}
    dl: dict[int, list[float]] = {n: [] for n in counts}
    skipped: list[tuple[str, str]] = []
    tiles: list[list[torch.Tensor]] = []
    shown = min(3, max(counts)) if max(counts) else 0
    for k, path in enumerate(tqdm(paths, desc="hints", unit="img", disable=not progress)):
        try:
            gt = read_crop(path)
        except ImageError as e:
            skipped.append((str(path), str(e).removeprefix(f"{path}: ")))
            continue
        pred: Prediction = colorizer.predict(gt.permute(1, 2, 0).numpy())[0]
        rng = np.random.default_rng([seed, k])
        pool = sample_hints(gt, max(counts), rng)
        regions = hint_regions(pred, pool)
        L_in = pred.L
        gt_classes = class_map(gt[None], classes)
        for n in counts:
            steered = apply_hints(pred, pool[:n], regions=regions[:n])
            out = steered.rgb(colorizer.decoding).clamp(0, 1)
            for name, value in _scores(out, gt[None], gt_classes, classes).items():
                scores[n][name].append(value)
            lab = rgb_to_lab(out)[0]
            errs[n] += _delta_e(lab, L_in, pool[:n], regions[:n])
            dl[n].append(float((lab[0] - L_in[0, 0]).abs().mean()))
        if len(tiles) < gallery and shown:
            grey = join_lab(pred.L, torch.zeros(1, 2, 1, 1))
            auto = pred.rgb(colorizer.decoding)
            three = apply_hints(pred, pool[:shown], regions=regions[:shown]).rgb(colorizer.decoding)
            tiles.append([grey[0], auto[0], _marked(three[0], pool[:shown]), gt])
    rows = {}
    for n in counts:
        rows[str(n)] = {k: float(np.mean(v)) if v else math.nan for k, v in scores[n].items()}
        rows[str(n)].update(delta_e=float(np.mean(errs[n])) if errs[n] else math.nan,
                            delta_l=float(np.mean(dl[n])) if dl[n] else math.nan, images=len(dl[n]))
    heads = ["grey", "automatic", f"{shown} hints", "ground truth"]
    return rows, skipped, report.gallery(tiles, heads, tile=192) if tiles else None


def _marked(rgb: torch.Tensor, hints: Sequence[Hint]) -> torch.Tensor:
    """Draw each hint's point as a small ring in its colour, on a copy of ``rgb`` (3, S, S)."""
    from ccc_nodes.core.color import lab_to_rgb

    im = Image.fromarray(np.round(rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for h in hints:
        c = lab_to_rgb(torch.tensor([60.0, *h.ab]).view(3, 1, 1))[:, 0, 0]
        x, y = h.point
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), outline="white", width=3)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=tuple(int(v * 255) for v in c))
    return torch.from_numpy(np.asarray(im) / 255.0).permute(2, 0, 1).float()


_FORMATS = {"ssim": "{:.4f}"}
_HEADS = {"psnr": "PSNR dB", "ssim": "SSIM", "tar": "TAR %", "cf": "CF", "delta_e": "dE in hinted regions",
          "delta_l": "mean abs(L out - L in)"}


def write_hint_report(rows: dict, out: Path, gallery: Image.Image | None, command: str | None = None) -> dict[str, Path]:
    """``hints.json``, ``hints.md``, ``hints_psnr.png`` (PSNR against N) and ``hints_gallery.png``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "hints.json", "md": out / "hints.md"}
    report.write_json({"rows": rows, "command": command}, paths["json"])
    table = report.markdown_table(rows, tuple(_HEADS), heads=_HEADS, formats=_FORMATS, corner="hint points", number="{:.2f}")
    paths["md"].write_text(table + "\n" + (f"\n`{command}`\n" if command else ""))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        pass
    else:
        fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
        ns = [int(n) for n in rows]
        ax.plot(ns, [rows[str(n)]["psnr"] for n in ns], "o-")
        ax.set_xlabel("hint points per image")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{max(int(r['images']) for r in rows.values())} photos, hints at full strength", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths["plot"] = out / "hints_psnr.png"
        fig.savefig(paths["plot"])
        plt.close(fig)
    if gallery is not None:
        paths["gallery"] = out / "hints_gallery.png"
        gallery.save(paths["gallery"])
    return paths
