"""Colour metrics of CCC++ (METHOD.md section 10; paper Eq. 19-27).

All metrics take sRGB batches ``(B, 3, H, W)`` in [0, 1], prediction against ground
truth. Class-based metrics (TAR, CNR, CCAR) quantise each image's a*b*, area-averaged
to the model's output resolution (1/4), with the model's :class:`ColorClasses`.

One pair of images::

    compare(pred, gt, classes)                  # {"mse": .., "psnr": .., "ssim": .., ...}

A whole set, streaming in constant memory (LPIPS and FID only when their networks are
given; :func:`load_lpips` / :func:`load_fid_features` load the real ones and raise
:class:`MetricUnavailable` with what to install or where to put the weights)::

    m = ColorMetrics(classes, lpips=load_lpips(), fid=load_fid_features())
    for pred, gt in batches:
        m.update(pred, gt)
    m.compute()          # keys: mse psnr ssim uiqi cf cf_gt delta_cf tar cnr ccar ccar_gt grid grid_gt images [lpips] [fid]

Class maps are taken with the model's classes when there is a model, else with the
embedded default model's (:func:`metric_classes`, read from its ``config.json`` without
building the network), so ``ccc evaluate --pred`` and the Metrics node agree.

PSNR has one convention everywhere: peak 1, and MSE floored at 1e-10, so identical
images give :data:`PSNR_MAX` = 100 dB rather than infinity (a set's mean stays finite).

Implemented here and tested against scikit-image or hand-computed cases: MSE, PSNR,
SSIM (Gaussian window 11, sigma 1.5, as ``skimage.metrics.structural_similarity`` with
``gaussian_weights=True``), UIQI (Wang & Bovik 2002, 8x8 sliding window), colourfulness
(Hasler & Suesstrunk 2003), TAR, CNR, CCAR, the Frechet distance of feature sets (FID,
Heusel et al. 2017) and the grid ratio (:func:`grid_ratio`: how blocky a colorization is
at model resolution; this project's).

A grey reference (:func:`ccc_nodes.core.images.is_grey`) has no colours to score against, one
rule for the Metrics node (:func:`score_each`) and ``ccc evaluate``: a set's figures leave
it out and the report names it (:data:`GREY_RULE`); a row of its own keeps its pixel
metrics with :data:`GREY_REFERENCE_NA` n/a.

The rest lives beside this module, and every name is re-exported here: the networks of
LPIPS and FID (and their loaders) in :mod:`ccc_nodes.core.perceptual`, the Markdown table in
:mod:`ccc_nodes.core.report`.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ccc_nodes.core.classes import OUTPUT_SCALE, ColorClasses, ab_at_output, classes_at_output
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.images import GREY_TOLERANCE, is_grey, to_rgb
from ccc_nodes.core.perceptual import (
    FID_MODES,
    LPIPS,
    InceptionFeatures,
    MetricUnavailable,
    TapFeatures,
    load_fid_features,
    load_lpips,
)
from ccc_nodes.core.report import METRIC_NAMES, markdown_table

__all__ = [
    "FALSE_COLOR",
    "FID_MODES",
    "GREY_REFERENCE_NA",
    "GREY_RULE",
    "GREY_TOLERANCE",
    "GRID_PERIOD",
    "LPIPS",
    "METRIC_NAMES",
    "PSNR_MAX",
    "WASHED",
    "WRONG_COLORS",
    "WRONG_HUE",
    "ColorMetrics",
    "FeatureStats",
    "InceptionFeatures",
    "MetricUnavailable",
    "TapFeatures",
    "WrongColor",
    "class_map",
    "colorfulness",
    "colorfulness_abs",
    "compare",
    "frechet_distance",
    "grid_profile",
    "grid_ratio",
    "grid_sums",
    "is_grey",
    "load_fid_features",
    "load_lpips",
    "markdown_table",
    "metric_classes",
    "mse",
    "psnr",
    "score_each",
    "ssim",
    "uiqi",
    "wrong_color_counts",
]

# Cells of the 1/4-resolution output per cell of a stride-32 encoder (32 / 4): Table IV's
# decoder paints each encoder cell as a GRID_PERIOD x GRID_PERIOD block.
GRID_PERIOD = 8
# a*b* units added to both means of the grid ratio: a flat map (no change anywhere) gives 1.
GRID_EPS = 1e-3


# PSNR of identical images: MSE is floored at 1e-10 (peak 1), i.e. 100 dB.
PSNR_MAX = 100.0
# A grey reference (ccc_nodes.core.images.is_grey) has no colours to score against: a set's
# figures leave it out (score_each, ccc evaluate), and a row of its own has these n/a: one
# reference class, so CNR would count the predicted classes and TAR means nothing.
GREY_REFERENCE_NA = ("cnr", "tar")
GREY_RULE = f"|R - G| and |G - B| at most {GREY_TOLERANCE} levels everywhere"  # is_grey in words



@dataclass(frozen=True)
class WrongColor:
    """A measure of wrong colour in CIE Lab (METHOD.md section 10): the share of the pixels
    where the truth's chroma C* = sqrt(a*^2 + b*^2) meets ``truth`` that the output gets wrong.

    Attributes:
      name: the key in the metrics (``wrong_hue``, ``false_color``, ``washed``).
      truth: (at least, below) on the truth's chroma: which pixels are counted.
      output: (at least, below) on the output's chroma, for the pixels that can be wrong.
      hue: with a value, a counted pixel is wrong when both chromas qualify and the hue
        angles differ by more than ``hue`` degrees; None: when the output's chroma qualifies.
    """

    name: str
    truth: tuple[float | None, float | None]
    output: tuple[float | None, float | None]
    hue: float | None = None


# Both coloured (C* >= 12) with hues more than 60 degrees apart; colour painted where the
# truth is neutral (C* < 6 -> >= 15); colour lost where the truth is coloured (>= 15 -> < 6).
WRONG_HUE = WrongColor("wrong_hue", truth=(12.0, None), output=(12.0, None), hue=60.0)
FALSE_COLOR = WrongColor("false_color", truth=(None, 6.0), output=(15.0, None))
WASHED = WrongColor("washed", truth=(15.0, None), output=(None, 6.0))
WRONG_COLORS = (WRONG_HUE, FALSE_COLOR, WASHED)


def _within(c: torch.Tensor, bounds: tuple[float | None, float | None]) -> torch.Tensor:
    lo, hi = bounds
    ok = torch.ones_like(c, dtype=torch.bool)
    if lo is not None:
        ok &= c >= lo
    if hi is not None:
        ok &= c < hi
    return ok


def wrong_color_counts(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image of sRGB batches ``(B, 3, H, W)``: ``{name: (B, 2)}`` with, for each
    measure of :data:`WRONG_COLORS`, the pixels it counts (the truth's condition) and,
    among them, the wrong ones. ``100 * wrong / counted`` is the measure in %."""
    lab_p, lab_g = rgb_to_lab(pred.float()), rgb_to_lab(gt.float())
    cp, cg = lab_p[:, 1:].norm(dim=1), lab_g[:, 1:].norm(dim=1)
    out = {}
    for m in WRONG_COLORS:
        counted = _within(cg, m.truth)
        if m.hue is None:
            wrong = counted & _within(cp, m.output)
        else:
            counted &= _within(cp, m.output)
            hp = torch.atan2(lab_p[:, 2], lab_p[:, 1])
            hg = torch.atan2(lab_g[:, 2], lab_g[:, 1])
            d = torch.rad2deg((hp - hg).abs())
            wrong = counted & (torch.minimum(d, 360.0 - d) > m.hue)
        out[m.name] = torch.stack([counted.flatten(1).sum(1), wrong.flatten(1).sum(1)], dim=1).double()
    return out


# ------------------------------------------------------------------ per-image metrics
def _opponents(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = rgb.float() * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)


def _hasler(rg: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    std = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return std + 0.3 * mean


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness of each image, on 0..255 RGB -> ``(B,)``:
    rg = R - G, yb = (R + G) / 2 - B, CF = sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)."""
    return _hasler(*_opponents(rgb))


def colorfulness_abs(rgb: torch.Tensor) -> torch.Tensor:
    """The colourfulness DDColor and CT2 report -> ``(B,)``: :func:`colorfulness` of the
    absolute opponent channels |R - G| and |(R + G) / 2 - B| (the widely copied OpenCV
    tutorial's form). Larger than :func:`colorfulness` wherever rg or yb change sign."""
    rg, yb = _opponents(rgb)
    return _hasler(rg.abs(), yb.abs())


def mse(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error on RGB in [0, 1] -> ``(B,)``."""
    return ((pred.float() - gt.float()) ** 2).flatten(1).mean(dim=1)


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB with peak 1 -> ``(B,)``. MSE is floored at 1e-10, so identical
    images give :data:`PSNR_MAX` (100 dB), never +inf: the one convention of this
    package (:class:`ColorMetrics` calls this function)."""
    return 10.0 * torch.log10(1.0 / mse(pred, gt).clamp_min(10.0 ** (-PSNR_MAX / 10.0)))


def _window_stats(x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor):
    """Local means, variances and covariance of ``(B, C, H, W)`` under a separable
    window ``kernel`` (1-D, sums to 1), only where the window fits ('valid')."""
    b, c, h, w = x.shape
    t = torch.stack((x, y, x * x, y * y, x * y)).reshape(5 * b * c, 1, h, w)
    k = kernel.to(t.dtype)
    t = F.conv2d(F.conv2d(t, k.view(1, 1, -1, 1)), k.view(1, 1, 1, -1))
    mx, my, xx, yy, xy = t.view(5, b, c, *t.shape[-2:]).unbind(0)
    return mx, my, xx - mx * mx, yy - my * my, xy - mx * my


def ssim(pred: torch.Tensor, gt: torch.Tensor, sigma: float = 1.5, win: int = 11) -> torch.Tensor:
    """Per-image SSIM of RGB in [0, 1] (Wang et al. 2004) -> ``(B,)``.

    Gaussian window ``win`` x ``win`` (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1,
    channels averaged, borders where the window does not fit left out: the same as
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False, data_range=1, channel_axis=-1)``. Images smaller than
    the window use the largest odd window that fits.
    """
    x, y = pred.float(), gt.float()  # float32: SSIM's constants dwarf its rounding
    win = min(win, (min(x.shape[-2:]) - 1) // 2 * 2 + 1)
    r = torch.arange(win, dtype=torch.float64, device=x.device) - (win - 1) / 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    mx, my, vx, vy, cxy = _window_stats(x, y, k / k.sum())
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1).float()


def uiqi(pred: torch.Tensor, gt: torch.Tensor, win: int = 8) -> torch.Tensor:
    """Per-image Universal Image Quality Index (Wang & Bovik 2002) -> ``(B,)``.

    Q = 4 s_xy m_x m_y / ((s_x^2 + s_y^2)(m_x^2 + m_y^2)) over every ``win`` x ``win``
    window (uniform, step 1), averaged over windows and channels. Windows where a
    denominator vanishes follow the authors' reference code: flat windows give
    2 m_x m_y / (m_x^2 + m_y^2), all-zero windows give 1. Images smaller than the
    window use one of their size.
    """
    x, y = pred.double(), gt.double()
    win = min(win, *x.shape[-2:])
    b, c, h, w = x.shape
    t = F.avg_pool2d(torch.stack((x, y, x * x, y * y, x * y)).reshape(5 * b, c, h, w), win, stride=1)
    mx, my, xx, yy, xy = t.view(5, b, c, *t.shape[-2:]).unbind(0)
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    vx, vy = vx.clamp_min(0), vy.clamp_min(0)  # rounding can make a flat window's variance -1e-17
    d_var, d_mean = vx + vy, mx**2 + my**2
    flat = d_var < 1e-12
    q = torch.ones_like(mx)
    full = ~flat & (d_mean > 0)
    q[full] = (4 * cxy * mx * my)[full] / (d_var * d_mean)[full]
    only_mean = flat & (d_mean > 0)
    q[only_mean] = (2 * mx * my)[only_mean] / d_mean[only_mean]
    return q.flatten(1).mean(dim=1).float()


@functools.lru_cache(maxsize=1)
def _default_classes() -> ColorClasses:
    from ccc_nodes.core.hub import DEFAULT_MODEL_DIR

    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    return ColorClasses.from_config(config)


def metric_classes(classes: ColorClasses | None = None) -> tuple[ColorClasses, str]:
    """The colour classes that class metrics (TAR, CNR, CCAR) are taken with, and a note
    saying which: a model's own ``classes`` when given; else the embedded default
    model's (read from its ``config.json``, the network is not built); all 1296 bins of
    size 6 only if that file cannot be read."""
    if classes is not None:
        return classes, f"class maps (TAR, CNR, CCAR) use the model's classes (K = {classes.K})"
    try:
        default = _default_classes()
    except (OSError, ValueError, KeyError, TypeError) as e:
        return ColorClasses(6), f"class maps (TAR, CNR, CCAR) use all 1296 bins (s = 6): the default model's config could not be read ({e})"
    return default, f"class maps (TAR, CNR, CCAR) use the embedded default model's classes (K = {default.K})"


def grid_sums(ab: torch.Tensor, period: int = GRID_PERIOD) -> torch.Tensor:
    """a*b* ``(B, 2, h, w)`` -> ``(B, 4)``: the sum and the number of the neighbour changes
    |d a*b*| (Euclidean, horizontal and vertical) that cross a line of the ``period``-cell
    grid (between cells ``i - 1`` and ``i`` with ``i % period == 0``), then the same for
    all other neighbour pairs. Float64 sums, for streaming over a set."""
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"ab must have shape (B, 2, h, w), got {tuple(ab.shape)}")
    h, w = ab.shape[-2:]
    if max(h, w) <= period:
        raise ValueError(f"an a*b* map of {h}x{w} cells crosses no line of a {period}-cell grid")
    x = ab.double()
    out = torch.zeros(ab.shape[0], 4, dtype=torch.float64, device=ab.device)
    for d, n, shape in ((x[..., :, 1:] - x[..., :, :-1], w, (1, 1, -1)), (x[..., 1:, :] - x[..., :-1, :], h, (1, -1, 1))):
        mag = d.pow(2).sum(dim=1).sqrt()  # (B, h', w')
        on = (torch.arange(1, n, device=ab.device) % period == 0).view(shape).expand_as(mag)  # pair (i - 1, i), i on a line
        out[:, 0] += (mag * on).flatten(1).sum(1)
        out[:, 1] += on[0].sum()
        out[:, 2] += (mag * ~on).flatten(1).sum(1)
        out[:, 3] += (~on[0]).sum()
    return out


def grid_profile(ab: torch.Tensor, period: int = GRID_PERIOD) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the colour changes of a*b* maps ``(B, 2, h, w)`` sit in the grid period: the
    sums and counts ``(period,)`` of |d a*b*| over the neighbour pairs ``(i - 1, i)``
    (horizontal and vertical) by ``i % period``. Entry 0 is the grid lines of
    :func:`grid_sums`; a decoder ending in a nearest x2 upsampling leaves the odd entries 0."""
    x = ab.double()
    sums = torch.zeros(period, dtype=torch.float64)
    counts = torch.zeros(period, dtype=torch.float64)
    for d in (x[..., :, 1:] - x[..., :, :-1], (x[..., 1:, :] - x[..., :-1, :]).transpose(-1, -2)):
        mag = d.pow(2).sum(dim=1).sqrt().cpu()  # (B, rows, pairs): pair (i - 1, i) at index i - 1
        pos = torch.arange(1, mag.shape[-1] + 1) % period
        sums.index_add_(0, pos, mag.sum(dim=(0, 1)))
        counts.index_add_(0, pos, torch.full((mag.shape[-1],), float(mag.shape[0] * mag.shape[1]), dtype=torch.float64))
    return sums, counts


def _ratio(sums: torch.Tensor) -> torch.Tensor:
    on, n_on, off, n_off = sums.unbind(-1)
    return ((on / n_on + GRID_EPS) / (off / n_off + GRID_EPS)).float()


def grid_ratio(ab: torch.Tensor, period: int = GRID_PERIOD) -> torch.Tensor:
    """Blockiness of a*b* maps at model resolution ``(B, 2, h, w)`` -> ``(B,)``.

    The mean |d a*b*| across the lines of a ``period``-cell grid over the mean elsewhere.
    Table IV's decoder paints every cell of the stride-32 encoder as an 8x8 block of its
    1/4 output, so its colour changes sit on that grid (ratio well above 1); a natural
    image, or a decoder that follows edges, gives about 1. ``GRID_EPS`` is added to both
    means, so a flat map gives 1.
    """
    return _ratio(grid_sums(ab, period))


def _grid_ab(rgb: torch.Tensor, scale: int, cells: int | None) -> torch.Tensor:
    """The a*b* of sRGB images at model resolution: area-averaged by ``scale``, or
    resized to ``cells`` x ``cells`` (the network's square output) when given."""
    lab = rgb_to_lab(rgb)
    if cells is not None:
        return F.interpolate(lab[:, 1:], size=(cells, cells), mode="bilinear", antialias=True, align_corners=False)
    return ab_at_output(lab, scale)


def class_map(rgb: torch.Tensor, classes: ColorClasses, scale: int = OUTPUT_SCALE) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` -> class map ``(B, H/scale, W/scale)`` of its a*b*, area-averaged
    as the training targets (:func:`ccc_nodes.core.classes.classes_at_output`)."""
    return classes_at_output(rgb_to_lab(rgb), classes, scale)


# ------------------------------------------------------------------ FID
class FeatureStats:
    """Streaming mean and covariance of feature vectors (float64 sums; memory O(D^2))."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, feats: torch.Tensor) -> None:
        """Add features ``(N, D)``."""
        f = feats.detach().double().flatten(1).cpu()
        if self.sum is None:
            self.sum, self.outer = torch.zeros(f.shape[1], dtype=torch.float64), torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        self.sum += f.sum(dim=0)
        self.outer += f.T @ f
        self.n += f.shape[0]

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(D,)`` and unbiased covariance ``(D, D)``; needs at least 2 vectors."""
        if self.n < 2 or self.sum is None or self.outer is None:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Frechet distance of two Gaussians:
    ``|mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2))``.

    tr((cov1 cov2)^(1/2)) is the sum of the square roots of the eigenvalues of cov1 cov2
    (real and >= 0 for covariances; rounding noise is clipped).
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    eig = torch.linalg.eigvals(cov1 @ cov2)
    tr_sqrt = eig.real.clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt)


# ------------------------------------------------------------------ streaming set metrics
class ColorMetrics:
    """Streaming MSE, PSNR, SSIM, UIQI, CF, delta-CF, TAR, CNR, CCAR, the grid ratio (and
    LPIPS, FID when their networks are given) over a set of images, in constant memory.

    Arguments:
      classes: the colour classes class maps are taken with (normally the model's).
      scale: class maps are taken at 1/scale of the image (the model's output scale).
      lpips: an :class:`LPIPS` (e.g. :func:`load_lpips`), or None to leave LPIPS out.
      fid: a feature network ``(B, 3, H, W) -> (B, D)`` (e.g. :func:`load_fid_features`),
        or None to leave FID out.
      model_size: the square input size of the network that made the predictions, when
        it differs from the images' (``ccc evaluate`` scores 256 px crops of a 224 px
        network): the grid ratio is taken on a*b* resized to ``model_size / scale``
        cells, where the network's grid lies. None: the images are the network's input.
    """

    _MEANS = ("mse", "psnr", "ssim", "uiqi", "cf", "cf_gt", "delta_cf", "cf_abs", "cf_abs_gt", "tar", "cnr")

    def __init__(self, classes: ColorClasses, scale: int = OUTPUT_SCALE, lpips: nn.Module | None = None, fid: nn.Module | None = None,
                 model_size: int | None = None):
        self.classes, self.scale, self.lpips, self.fid = classes, scale, lpips, fid
        self.grid_cells = None if model_size is None else model_size // scale
        self.grid = {"grid": torch.zeros(4, dtype=torch.float64), "grid_gt": torch.zeros(4, dtype=torch.float64)}
        self.n = 0
        self.sums = {k: 0.0 for k in self._MEANS + (("lpips",) if lpips is not None else ())}
        self.wrong = {m.name: torch.zeros(2, dtype=torch.float64) for m in WRONG_COLORS}  # pixels counted, wrong
        self.used_pred = torch.zeros(classes.K, dtype=torch.bool)
        self.used_gt = torch.zeros(classes.K, dtype=torch.bool)
        self.fid_pred, self.fid_gt = FeatureStats(), FeatureStats()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor, gt_features: torch.Tensor | None = None) -> None:
        """Add a batch: pred and gt sRGB ``(B, 3, H, W)`` in [0, 1], same sizes.
        ``gt_features``: the FID features of gt, when the caller already has them
        (several predictions scored against one ground truth)."""
        if pred.shape != gt.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
        pred, gt = pred.float().clamp(0, 1), gt.float().clamp(0, 1)
        e = mse(pred, gt)
        cf, cf_gt = colorfulness(pred), colorfulness(gt)
        cp, cg = class_map(pred, self.classes, self.scale), class_map(gt, self.classes, self.scale)
        for i in range(pred.shape[0]):
            up = torch.unique(cp[i])
            ug = torch.unique(cg[i])
            self.sums["cnr"] += up.numel() / ug.numel()  # Eq. 19
            self.used_pred[up.cpu()] = True
            self.used_gt[ug.cpu()] = True
        self.sums["mse"] += e.sum().item()
        self.sums["psnr"] += psnr(pred, gt).sum().item()
        self.sums["ssim"] += ssim(pred, gt).sum().item()
        self.sums["uiqi"] += uiqi(pred, gt).sum().item()
        self.sums["cf"] += cf.sum().item()
        self.sums["cf_gt"] += cf_gt.sum().item()
        self.sums["delta_cf"] += (cf - cf_gt).abs().sum().item()
        self.sums["cf_abs"] += colorfulness_abs(pred).sum().item()
        self.sums["cf_abs_gt"] += colorfulness_abs(gt).sum().item()
        for name, counts in wrong_color_counts(pred, gt).items():
            self.wrong[name] += counts.sum(0).cpu()
        self.sums["tar"] += (cp == cg).float().flatten(1).mean(dim=1).sum().item()  # Eq. 21
        cells = self.grid_cells or max(pred.shape[-2:]) // self.scale
        if cells > GRID_PERIOD:  # smaller images cross no grid line: the ratio stays n/a
            for key, rgb in (("grid", pred), ("grid_gt", gt)):
                self.grid[key] += grid_sums(_grid_ab(rgb, self.scale, self.grid_cells)).sum(0).cpu()
        if self.lpips is not None:
            dev = self.lpips.shift.device
            self.sums["lpips"] += self.lpips(pred.to(dev), gt.to(dev)).sum().item()
        if self.fid is not None:
            dev = next(iter(self.fid.parameters()), torch.empty(0)).device
            self.fid_pred.update(self.fid(pred.to(dev)))
            self.fid_gt.update(self.fid(gt.to(dev)) if gt_features is None else gt_features)
        self.n += pred.shape[0]

    def compute(self) -> dict[str, float]:
        """Means over all images seen; TAR in %, CCAR in % of K (Eq. 20, reconstructed);
        FID over the whole set (NaN with fewer than 2 images); the grid ratio of the
        prediction (``grid``) and of the ground truth (``grid_gt``) over the whole set: the
        mean change on grid lines of all images over the mean change elsewhere."""
        if self.n == 0:
            out = {k: math.nan for k in self.sums}
            out.update(ccar=math.nan, ccar_gt=math.nan, images=0)
        else:
            out = {k: v / self.n for k, v in self.sums.items()}
            out["tar"] *= 100.0
            out["ccar"] = 100.0 * self.used_pred.sum().item() / self.classes.K
            out["ccar_gt"] = 100.0 * self.used_gt.sum().item() / self.classes.K
            out["images"] = self.n
        # set-level delta-CF, the literature's: |mean CF of the outputs - mean CF of the truths|
        out["delta_cf_set"] = abs(out["cf"] - out["cf_gt"])
        out["delta_cf_abs"] = abs(out["cf_abs"] - out["cf_abs_gt"])
        for name, (counted, wrong) in self.wrong.items():  # pixel shares, pooled over the set
            out[name] = 100.0 * wrong.item() / counted.item() if counted > 0 else math.nan
        for key, sums in self.grid.items():
            out[key] = _ratio(sums).item() if sums[1] > 0 else math.nan
        if self.fid is not None:
            out["fid"] = frechet_distance(*self.fid_pred.mean_cov(), *self.fid_gt.mean_cov()) if self.n >= 2 else math.nan
        return out


def _batch(image: Any) -> torch.Tensor:
    """A batch ``(B, 3, H, W)`` as it is; any one image (a path, PIL, numpy, torch
    ``(C, H, W)``, as :func:`ccc_nodes.core.images.to_rgb` takes) -> ``(1, 3, H, W)`` in [0, 1]."""
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        return image
    rgb, _ = to_rgb(image)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def compare(pred: Any, gt: Any, classes: ColorClasses, scale: int = OUTPUT_SCALE, lpips: nn.Module | None = None) -> dict[str, float]:
    """All per-image metrics of one pair (or the mean over a batch): sRGB batches ``(B, 3, H, W)``
    in [0, 1], or one image each in any form a user has (a PIL image, a path, numpy
    ``(H, W, 3)``, torch ``(3, H, W)``). CCAR is then the share of K that this image uses."""
    pred, gt = _batch(pred), _batch(gt)
    m = ColorMetrics(classes, scale, lpips=lpips)
    m.update(pred, gt)
    return m.compute()


def score_each(pred: torch.Tensor, gt: torch.Tensor, classes: ColorClasses, scale: int = OUTPUT_SCALE
               ) -> tuple[list[dict[str, float]], dict[str, float] | None, list[int]]:
    """Each pair of a batch ``(B, 3, H, W)`` scored on its own, and the set of the pairs
    whose reference has colours -> (one row per pair, the set's row or None when every
    reference is grey, the indices of the grey references). A grey reference's row keeps
    its pixel metrics and has :data:`GREY_REFERENCE_NA` NaN (n/a); the set leaves it out,
    as ``ccc evaluate`` does."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    rows, grey, total = [], [], ColorMetrics(classes, scale)
    for i in range(pred.shape[0]):
        one = ColorMetrics(classes, scale)
        one.update(pred[i : i + 1], gt[i : i + 1])
        row = one.compute()
        if is_grey(gt[i]):
            grey.append(i)
            row.update(dict.fromkeys(GREY_REFERENCE_NA, math.nan))
        else:
            total.update(pred[i : i + 1], gt[i : i + 1])
        rows.append(row)
    return rows, total.compute() if total.n else None, grey
