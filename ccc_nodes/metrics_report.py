"""The metrics as a Markdown table: column order, headings and number formats, one place
for ``ccc evaluate``'s report and the Metrics node. :mod:`ccc_nodes.metrics` re-exports
:data:`METRIC_NAMES` and :func:`markdown_table`."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["METRIC_NAMES", "markdown_table"]

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


def markdown_table(rows: dict[str, dict[str, float]], names: Sequence[str] = METRIC_NAMES) -> str:
    """``{row label: metrics}`` -> a Markdown table, one column per metric in ``names``;
    a metric a row lacks (or NaN) is written ``n/a``."""

    def cell(m: dict, k: str) -> str:
        v = m.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        return _FORMATS.get(k, "{:.4g}").format(v)

    head = "| | " + " | ".join(_HEADS.get(k, k) for k in names) + " |"
    rule = "|---|" + "---:|" * len(names)
    body = [f"| {label} | " + " | ".join(cell(m, k) for k in names) + " |" for label, m in rows.items()]
    return "\n".join([head, rule, *body])
