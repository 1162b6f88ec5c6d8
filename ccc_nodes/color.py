"""sRGB <-> CIE L*a*b* (D65) in torch, matching ``skimage.color.rgb2lab`` / ``lab2rgb``.

Pure tensor functions with the shape contract ``(*, 3, H, W)``; they run batched on any
device and in any floating dtype (computation is promoted to at least float32).
"""

from __future__ import annotations

import torch

__all__ = ["lab_to_rgb", "rgb_to_L", "rgb_to_lab"]

# sRGB (D65) -> XYZ, the matrix scikit-image uses.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_EPS = 0.008856  # (6/29)^3, CIE threshold as scikit-image rounds it
_KAPPA = 7.787


def _mat(image: torch.Tensor, inverse: bool) -> torch.Tensor:
    m = torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64)
    if inverse:
        m = torch.linalg.inv(m)
    return m.to(device=image.device, dtype=image.dtype)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _check(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"{name} must have shape (*, 3, H, W), got {tuple(image.shape)}")


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape ``(*, 3, H, W)`` -> L*a*b*, same shape (L in [0, 100])."""
    _check(rgb, "rgb")
    x = rgb.to(_work_dtype(rgb)).clamp(0.0, 1.0)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = torch.einsum("ij,...jhw->...ihw", _mat(linear, inverse=False), linear)
    white = torch.tensor(_WHITE_D65, device=x.device, dtype=x.dtype).view(3, 1, 1)
    t = xyz / white
    f = torch.where(t > _EPS, t.clamp_min(1e-12) ** (1.0 / 3.0), _KAPPA * t + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    L = 116.0 * fy - 16.0
    a = 500.0 * (fx - fy)
    b = 200.0 * (fy - fz)
    return torch.stack((L, a, b), dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """L*a*b*, shape ``(*, 3, H, W)`` -> sRGB in [0, 1] (clipped to gamut), same shape."""
    _check(lab, "lab")
    x = lab.to(_work_dtype(lab))
    L, a, b = x.unbind(-3)
    fy = (L + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0.0)  # scikit-image clips negative Z the same way
    f = torch.stack((fx, fy, fz), dim=-3)
    t = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / _KAPPA)
    white = torch.tensor(_WHITE_D65, device=x.device, dtype=x.dtype).view(3, 1, 1)
    xyz = t * white
    linear = torch.einsum("ij,...jhw->...ihw", _mat(xyz, inverse=True), xyz)
    srgb = torch.where(
        linear > 0.0031308, 1.055 * linear.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055, 12.92 * linear
    )
    return srgb.clamp(0.0, 1.0)


def rgb_to_L(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(*, 3, H, W)`` -> lightness L ``(*, 1, H, W)`` in [0, 100].

    The L of :func:`rgb_to_lab` from luminance Y alone: a third of its work and memory,
    which is what counts on full-resolution photos."""
    _check(rgb, "rgb")
    x = rgb.to(_work_dtype(rgb)).clamp(0.0, 1.0)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    y = torch.einsum("j,...jhw->...hw", _mat(linear, inverse=False)[1], linear).unsqueeze(-3)  # white Y = 1
    fy = torch.where(y > _EPS, y.clamp_min(1e-12) ** (1.0 / 3.0), _KAPPA * y + 16.0 / 116.0)
    return 116.0 * fy - 16.0
