"""The pieces of every report, in one place: the metrics' column order, headings and number
formats, Markdown tables, JSON without NaN, and galleries of image tiles. ``ccc evaluate``
(:mod:`ccc_nodes.job.evaluate`), its colour-hint protocol (:mod:`ccc_nodes.job.hint_eval`)
and the Metrics node read them; :mod:`ccc_nodes.core.metrics` re-exports
:data:`METRIC_NAMES` and :func:`markdown_table`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["METRIC_NAMES", "gallery", "markdown_table", "write_json"]

# Order of the columns in tables (Table VI's order, then colourfulness, the grid ratio and the
# measures of wrong colour). ``cf_abs_gt`` and ``delta_cf_abs`` (DDColor's and CT2's forms) are in
# metrics.json.
METRIC_NAMES = ("mse", "psnr", "ssim", "lpips", "uiqi", "fid", "cnr", "ccar", "ccar_gt", "tar", "cf", "cf_gt", "delta_cf",
                "delta_cf_set", "cf_abs", "grid", "wrong_hue", "false_color", "washed")

_HEADS = {"mse": "MSE", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "uiqi": "UIQI", "fid": "FID", "cnr": "CNR",
          "ccar": "CCAR", "ccar_gt": "CCAR (GT)", "tar": "TAR", "cf": "CF", "cf_gt": "CF (GT)", "delta_cf": "ΔCF",
          "grid": "grid", "grid_gt": "grid (GT)", "delta_cf_set": "ΔCF (set)", "cf_abs": "CF (abs)",
          "cf_abs_gt": "CF (abs, GT)", "delta_cf_abs": "ΔCF (abs, set)", "wrong_hue": "wrong hue %",
          "false_color": "false colour %", "washed": "washed %"}
_FORMATS = {"mse": "{:.4f}", "psnr": "{:.2f}", "ssim": "{:.4f}", "lpips": "{:.4f}", "uiqi": "{:.4f}", "fid": "{:.2f}",
            "cnr": "{:.4f}", "ccar": "{:.2f}", "ccar_gt": "{:.2f}", "tar": "{:.2f}", "cf": "{:.2f}", "cf_gt": "{:.2f}",
            "delta_cf": "{:.2f}", "grid": "{:.2f}", "grid_gt": "{:.2f}", "delta_cf_set": "{:.2f}", "cf_abs": "{:.2f}",
            "cf_abs_gt": "{:.2f}", "delta_cf_abs": "{:.2f}", "wrong_hue": "{:.2f}", "false_color": "{:.2f}",
            "washed": "{:.2f}"}


def markdown_table(rows: Mapping[str, Mapping[str, float]], names: Sequence[str] = METRIC_NAMES, *,
                   heads: Mapping[str, str] = _HEADS, formats: Mapping[str, str] = _FORMATS,
                   corner: str = "", number: str = "{:.4g}") -> str:
    """``{row label: metrics}`` -> a Markdown table, one column per metric in ``names``
    (headed by ``heads``, written with ``formats``, else ``number``); a metric a row lacks
    (or NaN) is written ``n/a``. ``corner`` heads the labels' column."""

    def cell(m: Mapping, k: str) -> str:
        v = m.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        return formats.get(k, number).format(v)

    head = f"| {corner} | " if corner else "| | "
    head += " | ".join(heads.get(k, k) for k in names) + " |"
    rule = "|---|" + "---:|" * len(names)
    body = [f"| {label} | " + " | ".join(cell(m, k) for k in names) + " |" for label, m in rows.items()]
    return "\n".join([head, rule, *body])


def _finite(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def write_json(data: Any, path: Path) -> Path:
    """``data`` as indented JSON; NaN and infinities (not JSON) are written ``null``."""
    path.write_text(json.dumps(_finite(data), indent=1) + "\n")
    return path


def gallery(rows: Sequence[Sequence[Any]], heads: Sequence[str], tile: int = 128) -> Image.Image:
    """Rows of ``(3, S, S)`` tiles in [0, 1] (torch tensors) -> one picture, a header line
    naming the columns."""
    head_h = 18
    pic = Image.new("RGB", (tile * len(heads), head_h + tile * len(rows)), "white")
    draw = ImageDraw.Draw(pic)
    for j, name in enumerate(heads):
        draw.text((j * tile + 4, 3), name, fill="black")
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            arr = np.round(t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            pic.paste(Image.fromarray(arr).resize((tile, tile), Image.BILINEAR), (j * tile, head_h + i * tile))
    return pic
