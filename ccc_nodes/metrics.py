"""Colour metrics of CCC++ (METHOD.md section 10; paper Eq. 19-27).

All metrics take sRGB batches ``(B, 3, H, W)`` in [0, 1], prediction against ground
truth. Class-based metrics (TAR, CNR, CCAR) quantise each image's a*b*, area-averaged
to the model's output resolution (1/4), with the model's :class:`ColorClasses`.
:class:`ColorMetrics` accumulates over a stream of batches in constant memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .classes import ColorClasses
from .color import rgb_to_lab

__all__ = ["colorfulness", "psnr", "mse", "class_map", "ColorMetrics"]


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
    """Per-image PSNR in dB with peak 1 -> ``(B,)`` (identical images give +inf)."""
    return 10.0 * torch.log10(1.0 / mse(pred, gt))


def class_map(rgb: torch.Tensor, classes: ColorClasses, scale: int = 4) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` -> class map ``(B, H/scale, W/scale)`` of its a*b*."""
    ab = rgb_to_lab(rgb)[:, 1:]
    if scale > 1:
        ab = F.avg_pool2d(ab, scale)  # area average, as the training targets
    return classes.encode(ab)


class ColorMetrics:
    """Streaming MSE, PSNR, CF, delta-CF, TAR, CNR and CCAR over a set of images.

    Arguments:
      classes: the colour classes class maps are taken with (normally the model's).
      scale: class maps are taken at 1/scale of the image (the model's output scale).
    """

    def __init__(self, classes: ColorClasses, scale: int = 4):
        self.classes, self.scale = classes, scale
        self.n = 0
        self.sums = {"mse": 0.0, "psnr": 0.0, "cf": 0.0, "cf_gt": 0.0, "delta_cf": 0.0, "tar": 0.0, "cnr": 0.0}
        self.used_pred = torch.zeros(classes.K, dtype=torch.bool)
        self.used_gt = torch.zeros(classes.K, dtype=torch.bool)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch: pred and gt sRGB ``(B, 3, H, W)`` in [0, 1], same sizes."""
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
        self.sums["psnr"] += (10.0 * torch.log10(1.0 / e.clamp_min(1e-10))).sum().item()
        self.sums["cf"] += cf.sum().item()
        self.sums["cf_gt"] += cf_gt.sum().item()
        self.sums["delta_cf"] += (cf - cf_gt).abs().sum().item()
        self.sums["tar"] += (cp == cg).float().flatten(1).mean(dim=1).sum().item()  # Eq. 21
        self.n += pred.shape[0]

    def compute(self) -> dict[str, float]:
        """Means over all images seen; TAR in %, CCAR in % of K (Eq. 20, reconstructed)."""
        if self.n == 0:
            return {k: math.nan for k in ("mse", "psnr", "cf", "cf_gt", "delta_cf", "tar", "cnr", "ccar", "ccar_gt")}
        out = {k: v / self.n for k, v in self.sums.items()}
        out["tar"] *= 100.0
        out["ccar"] = 100.0 * self.used_pred.sum().item() / self.classes.K
        out["ccar_gt"] = 100.0 * self.used_gt.sum().item() / self.classes.K
        out["images"] = self.n
        return out
