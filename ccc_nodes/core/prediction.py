"""The primitives of inference: grey image -> L -> network -> colour classes -> a*b* -> RGB
(METHOD.md s. 8).

The flow in one screen, after richzhang/colorization:

    L_full = lightness(image)                    # full resolution, never thrown away
    logits = model(resize(L_full, size))         # (B, K, size/4, size/4)
    ab     = decode_ab(logits, classes, decoding) # argmax bin centre or annealed mean
    rgb    = join_lab(L_full, ab)                # ab upsampled to full size, Lab -> sRGB

Each step is a plain function; a :class:`Prediction` holds one image's L and logits.
The steps above (hints, harmonisation, temporal carrying) change predictions; the job
(:class:`~ccc_nodes.job.colorizer.Colorizer`) composes them.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.color import lab_to_rgb, rgb_to_L
from ccc_nodes.core.settings import CONFIDENT_FULL, CONFIDENT_SECTORS, PRECISIONS, Decoding

__all__ = [
    "STRIP_PIXELS",
    "Prediction",
    "autocast",
    "class_map_rgb",
    "decode_ab",
    "join_lab",
    "lightness",
    "pick_device",
    "resize_L",
    "resolve_precision",
    "to_output",
]


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA, else MPS, else CPU; anything else is passed to torch."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was asked for but torch sees no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' was asked for but this torch build or machine has no MPS (Apple GPU)")
    elif dev.type != "cpu":
        raise ValueError(f"device type {dev.type!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return dev


def resolve_precision(device: torch.device, precision: str = "auto", *, training: bool = False) -> str:
    """The one rule of what each of :data:`PRECISIONS` runs as on ``device``: ``"fp32"``,
    ``"bf16"`` or ``"fp16"`` (autocast). ``"auto"`` is bf16 on a CUDA GPU that has it, else
    fp16 there, fp16 on MPS, fp32 on the CPU; fp16 never runs on the CPU (torch has no
    fast fp16 there): fp32. ``training``: fp16 only on CUDA, where the trainer's gradient
    scaler keeps small fp16 gradients from vanishing; elsewhere fp32. A resolved value
    resolves to itself."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = {"cuda": "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16",
                     "mps": "fp16"}.get(device.type, "fp32")
    if precision == "fp16" and (device.type == "cpu" or (training and device.type != "cuda")):
        return "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (:func:`resolve_precision`'s rule)."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# Full-resolution colour conversions run in strips of about this many pixels, so their
# float temporaries stay bounded (tens of MB) however large the photo.
STRIP_PIXELS = 1 << 22


def _strips(H: int, W: int, strip_pixels: int) -> range:
    return range(0, H, max(1, strip_pixels // max(W, 1)))


def lightness(rgb: np.ndarray | torch.Tensor, strip_pixels: int = STRIP_PIXELS) -> torch.Tensor:
    """RGB ``(H, W, 3)`` in [0, 1] -> L ``(1, 1, H, W)`` in [0, 100] (float32)."""
    t = torch.as_tensor(rgb, dtype=torch.float32).permute(2, 0, 1)[None]
    H, W = t.shape[-2:]
    L = torch.empty(1, 1, H, W, dtype=torch.float32, device=t.device)
    rows = _strips(H, W, strip_pixels)
    for y in rows:
        L[..., y : y + rows.step, :] = rgb_to_L(t[..., y : y + rows.step, :])
    return L


def resize_L(L: torch.Tensor, size: int) -> torch.Tensor:
    """L ``(B, 1, H, W)`` -> ``(B, 1, size, size)`` (the network sees a square)."""
    if L.shape[-2:] == (size, size):
        return L
    return F.interpolate(L, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def decode_ab(logits: torch.Tensor, classes: ColorClasses, decoding: Decoding | str | None = None) -> torch.Tensor:
    """logits ``(B, K, h, w)`` -> a*b* ``(B, 2, h, w)``, by ``decoding`` (a
    :class:`~ccc_nodes.core.settings.Decoding`, a mode name, or None for the default).

    ``argmax``: the bin centre of the most probable class (Eq. 17-18).
    ``annealed-mean``: the mean of the class centres under softmax(logits / T)
    (Zhang et al. 2016).
    ``confident``: the argmax centre scaled by min(1, q / CONFIDENT_FULL), q the
    probability of the classes whose hue lies in the argmax class's 30-degree sector or the
    two beside it (neutral classes, C* < 6, agree with no hue; a neutral argmax is kept).
    """
    decoding = Decoding.of(decoding)
    if decoding.mode == "argmax":
        return classes.decode(logits.argmax(dim=1))
    if decoding.mode == "confident":
        return _confident_ab(logits, classes)
    probs = torch.softmax(logits.float() / decoding.temperature, dim=1)
    return torch.einsum("bkhw,kc->bchw", probs, classes.centers.to(logits.device))


def _hue_sectors(centers: torch.Tensor, n: int = CONFIDENT_SECTORS) -> torch.Tensor:
    """Each class's hue sector ``0..n-1`` of 360 / n degrees, or ``n`` for a neutral class (C* < 6)."""
    hue = torch.atan2(centers[:, 1], centers[:, 0])  # -pi..pi
    sector = ((hue + math.pi) / (2 * math.pi) * n).floor().long() % n
    return torch.where(centers.norm(dim=1) < 6.0, n, sector)


def _confident_ab(logits: torch.Tensor, classes: ColorClasses) -> torch.Tensor:
    probs = torch.softmax(logits.float(), dim=1)
    best = probs.argmax(dim=1)  # (B, h, w)
    centers = classes.centers.to(logits.device)
    sector = _hue_sectors(centers)
    n = CONFIDENT_SECTORS
    mass = torch.einsum("bkhw,ks->bshw", probs, F.one_hot(sector, n + 1).to(probs.dtype))[:, :n]
    near = mass + mass.roll(1, dims=1) + mass.roll(-1, dims=1)  # the sector and its two neighbours
    own = sector[best]  # (B, h, w)
    q = near.gather(1, own.clamp_max(n - 1)[:, None])[:, 0]
    scale = torch.where(own == n, 1.0, (q / CONFIDENT_FULL).clamp(max=1.0))
    return centers[best].movedim(-1, 1) * scale[:, None]


def _bilinear_taps(n_in: int, n_out: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source taps and weights of ``F.interpolate(mode="bilinear", align_corners=False)``
    along one axis, for the output positions ``index``."""
    src = ((index.to(torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    return i0, (i0 + 1).clamp_max(n_in - 1), src - i0


def _upsample_rows(ab: torch.Tensor, size: tuple[int, int], y0: int, y1: int) -> torch.Tensor:
    """Rows ``y0:y1`` of ``ab`` bilinearly upsampled to ``size``, without the rest."""
    (h, w), (H, W) = ab.shape[-2:], size
    r0, r1, wy = _bilinear_taps(h, H, torch.arange(y0, y1, device=ab.device))
    rows = ab[..., r0, :] * (1 - wy)[:, None] + ab[..., r1, :] * wy[:, None]
    c0, c1, wx = _bilinear_taps(w, W, torch.arange(W, device=ab.device))
    return rows[..., c0] * (1 - wx) + rows[..., c1] * wx


def join_lab(L: torch.Tensor, ab: torch.Tensor, strip_pixels: int = STRIP_PIXELS) -> torch.Tensor:
    """Full-resolution L ``(B, 1, H, W)`` + low-resolution ab ``(B, 2, h, w)`` -> sRGB
    ``(B, 3, H, W)`` in [0, 1]: ab is upsampled bilinearly, L is kept as it was (Lab -> sRGB
    clips colours outside the gamut). Large images go in strips of ``strip_pixels``."""
    L = L.float()
    ab = ab.to(L.device, torch.float32)
    H, W = L.shape[-2:]
    rows = _strips(H, W, strip_pixels)
    if len(rows) == 1:
        if ab.shape[-2:] != (H, W):
            ab = F.interpolate(ab, size=(H, W), mode="bilinear", align_corners=False)
        return lab_to_rgb(torch.cat((L, ab), dim=1))
    out = torch.empty(L.shape[0], 3, H, W, dtype=torch.float32, device=L.device)
    for y in rows:
        y1 = min(y + rows.step, H)
        out[..., y:y1, :] = lab_to_rgb(torch.cat((L[..., y:y1, :], _upsample_rows(ab, (H, W), y, y1)), dim=1))
    return out


def class_map_rgb(
    class_map: torch.Tensor, classes: ColorClasses, size: tuple[int, int] | None = None, lightness: float = 65.0
) -> torch.Tensor:
    """A picture of a class map: each class ``(B, h, w)`` shown as its bin centre a*b*
    (Eq. 10-11) at a constant L, nearest-upsampled to ``size`` -> sRGB ``(B, 3, H, W)``."""
    ab = classes.decode(class_map).float()
    if size is not None and tuple(size) != tuple(ab.shape[-2:]):
        ab = F.interpolate(ab, size=tuple(size), mode="nearest")
    return lab_to_rgb(torch.cat((torch.full_like(ab[:, :1], lightness), ab), dim=1))


@dataclass
class Prediction:
    """What the network says about one image.

    Attributes:
      L: full-resolution lightness ``(1, 1, H, W)`` (CPU).
      logits: class logits at model resolution ``(1, K, h, w)`` (float32, CPU).
      classes: the model's :class:`ColorClasses`.
      alpha: the input's alpha channel ``(H, W)`` if it had one.
    """

    L: torch.Tensor
    logits: torch.Tensor
    classes: ColorClasses
    alpha: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the input."""
        return tuple(self.L.shape[-2:])  # type: ignore[return-value]

    @property
    def probs(self) -> torch.Tensor:
        """Class probabilities ``(1, K, h, w)``."""
        return torch.softmax(self.logits, dim=1)

    @property
    def class_map(self) -> torch.Tensor:
        """Most probable class per pixel ``(1, h, w)``."""
        return self.logits.argmax(dim=1)

    def ab(self, decoding: Decoding | str | None = None) -> torch.Tensor:
        """a*b* ``(1, 2, h, w)`` decoded by ``decoding`` (:func:`decode_ab`)."""
        return decode_ab(self.logits, self.classes, decoding)

    def rgb(self, decoding: Decoding | str | None = None) -> torch.Tensor:
        """Colorized sRGB ``(1, 3, H, W)`` in [0, 1] at the input's full size."""
        return join_lab(self.L, self.ab(decoding))

    @property
    def shown_class_map(self) -> torch.Tensor:
        """The class map to show: the most probable class (harmonised predictions show theirs)."""
        return self.class_map


def to_output(rgb: torch.Tensor, like: Any, alpha: np.ndarray | None) -> Any:
    """sRGB ``(1, 3, H, W)`` -> the kind of object the caller gave."""
    if isinstance(like, torch.Tensor):
        return rgb[0].cpu()
    hwc = rgb[0].permute(1, 2, 0).cpu()

    def quantised(top: int, dtype: torch.dtype) -> np.ndarray:  # one float temporary, not three
        return (hwc * top).round_().to(dtype).contiguous().numpy()

    if isinstance(like, np.ndarray):
        if like.dtype == np.uint8:
            return quantised(255, torch.uint8)
        if like.dtype == np.uint16:
            return quantised(65535, torch.int32).astype(np.uint16)
        return hwc.contiguous().numpy()
    out = Image.fromarray(quantised(255, torch.uint8), "RGB")
    if alpha is not None:
        out.putalpha(Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L"))
    return out
