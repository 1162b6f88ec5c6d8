"""sRGB <-> CIE L*a*b* (D65) in torch, matching ``skimage.color.rgb2lab`` / ``lab2rgb``.

Pure tensor functions with the shape contract ``(*, 3, H, W)``; they run batched on any
device and in any floating dtype (computation is promoted to at least float32).

Each conversion is the chain of its named steps::

    rgb_to_lab:  sRGB -srgb_to_linear-> linear RGB -linear_to_xyz-> XYZ -xyz_to_lab-> L*a*b*
    lab_to_rgb:  L*a*b* -lab_to_xyz-> XYZ -xyz_to_linear-> linear RGB -linear_to_srgb-> sRGB
    rgb_to_L:    sRGB -srgb_to_linear-> linear RGB -> Y (the matrix's middle row) -> L
"""

from __future__ import annotations

import functools

import torch

__all__ = ["lab_to_rgb", "linear_to_srgb", "rgb_to_L", "rgb_to_lab", "srgb_to_linear"]

# sRGB (D65) -> XYZ, the matrix scikit-image uses, and its inverse (computed once, in float64).
_XYZ_FROM_RGB = torch.tensor(
    (
        (0.412453, 0.357580, 0.180423),
        (0.212671, 0.715160, 0.072169),
        (0.019334, 0.119193, 0.950227),
    ),
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_EPS = 0.008856  # (6/29)^3, CIE threshold as scikit-image rounds it
_F_EPS = 0.2068966  # 6/29: the same threshold on f = t^(1/3)
_KAPPA = 7.787
_OFFSET = 16.0 / 116.0


@functools.lru_cache(maxsize=32)
def _constant(values: tuple | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A constant on ``device`` in ``dtype``, made once per (constant, device, dtype); an
    ordinary tensor even when first asked for under ``torch.inference_mode`` (autograd may
    save it later)."""
    with torch.inference_mode(False):
        return torch.as_tensor(values, dtype=torch.float64).to(device=device, dtype=dtype)


def _on(values: tuple | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return _constant(values, like.device, like.dtype)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _check(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"{name} must have shape (*, 3, H, W), got {tuple(image.shape)}")


# ------------------------------------------------------------------ the steps
def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function undone: gamma-encoded values in [0, 1] -> linear light."""
    return torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function: linear light -> gamma-encoded values (not clipped)."""
    return torch.where(x > 0.0031308, 1.055 * x.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055, 12.92 * x)


def _linear_to_xyz(linear: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", _on(_XYZ_FROM_RGB, linear), linear)


def _xyz_to_linear(xyz: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", _on(_RGB_FROM_XYZ, xyz), xyz)


def _f(t: torch.Tensor) -> torch.Tensor:
    """CIE f: XYZ relative to the white -> cube root, linear near black."""
    return torch.where(t > _EPS, t.clamp_min(1e-12) ** (1.0 / 3.0), _KAPPA * t + _OFFSET)


def _f_inverse(f: torch.Tensor) -> torch.Tensor:
    return torch.where(f > _F_EPS, f**3, (f - _OFFSET) / _KAPPA)


def _xyz_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    fx, fy, fz = _f(xyz / _on(_WHITE_D65, xyz).view(3, 1, 1)).unbind(-3)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def _lab_to_xyz(lab: torch.Tensor) -> torch.Tensor:
    L, a, b = lab.unbind(-3)
    fy = (L + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0.0)  # scikit-image clips negative Z the same way
    return _f_inverse(torch.stack((fx, fy, fz), dim=-3)) * _on(_WHITE_D65, lab).view(3, 1, 1)


# ------------------------------------------------------------------ conversions
def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape ``(*, 3, H, W)`` -> L*a*b*, same shape (L in [0, 100])."""
    _check(rgb, "rgb")
    x = rgb.to(_work_dtype(rgb)).clamp(0.0, 1.0)
    return _xyz_to_lab(_linear_to_xyz(srgb_to_linear(x)))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """L*a*b*, shape ``(*, 3, H, W)`` -> sRGB in [0, 1] (clipped to gamut), same shape."""
    _check(lab, "lab")
    return linear_to_srgb(_xyz_to_linear(_lab_to_xyz(lab.to(_work_dtype(lab))))).clamp(0.0, 1.0)


def rgb_to_L(rgb: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the CIE's name
    """sRGB ``(*, 3, H, W)`` -> lightness L ``(*, 1, H, W)`` in [0, 100].

    The L of :func:`rgb_to_lab` from luminance Y alone: a third of its work and memory,
    which is what counts on full-resolution photos."""
    _check(rgb, "rgb")
    linear = srgb_to_linear(rgb.to(_work_dtype(rgb)).clamp(0.0, 1.0))
    y = torch.einsum("j,...jhw->...hw", _on(_XYZ_FROM_RGB, linear)[1], linear).unsqueeze(-3)  # white Y = 1
    return 116.0 * _f(y) - 16.0
