"""Colour hints: steer the network's class distribution with a colour on a region, or
with a reference palette for the whole image (METHOD.md section 11, this project's
extension).

A hint never paints pixels. It changes the class logits at model resolution before
decoding, so lightness, texture and shading stay the model's and every later step
(harmonisation, decoding, the full-resolution join) runs as usual::

    pred = Colorizer().predict(image)[0]
    hints = [Hint.at(120, 80, "#c0392b"),                 # a point, grown into its object
             Hint.on(mask, "#2e86c1", strength=0.7)]      # a region the caller gives
    steered = apply_hints(pred, hints, reference=palette_prior(ref_image, pred.classes))
    steered.rgb()

Local hint (colour c, region weight w(x) in [0, 1], strength s in [0, 1]), with
``alpha = s * w(x)`` and the class centres mu_k::

    logits'_k(x) = (1 - alpha) * logits_k(x) + alpha * log q_k,   log q_k = -|mu_k - c|^2 / (2 sigma^2)

a log-linear pool of the model's distribution with a Gaussian around the hinted colour:
``s = 0`` changes nothing; ``s = 1`` makes the region's most probable class the kept class
nearest to c. Global hint (a reference image's or palette's class histogram h, smoothed
over a*b* with the same Gaussian), for every pixel::

    logits'_k(x) = logits_k(x) + s * log(h_k + eps)

A point hint is grown into a region: the object mask under it when masks are given (the
smallest mask holding the point), else an affinity on L - the geodesic distance from the
point, each step costing ``|dL|`` beyond a noise floor plus a small spatial term, on the lightness blurred and
scaled to a longer side of :data:`GROW_SIDE`; ``w = exp(-(D / reach)^2 / 2)``.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.images import to_rgb
from ccc_nodes.core.prediction import Prediction
from ccc_nodes.core.settings import MAX_HINTS  # its home: plain Python, so `ccc --help` states it without torch
from ccc_nodes.steps.harmonize import HarmonizedPrediction, harmonize, masks_fit

__all__ = [
    "AB_LIMIT",
    "HINT_DEFAULTS",
    "MAX_HINTS",
    "GlobalHint",
    "Hint",
    "HintError",
    "HintTable",
    "apply_hints",
    "check_count",
    "check_fits",
    "format_hint",
    "grow_point",
    "grow_points",
    "hint_regions",
    "hint_table",
    "hints_for",
    "load_hints",
    "palette_prior",
    "parse_color",
    "parse_hint",
    "parse_hints",
    "read_reference",
    "steering",
    "unmatched_names",
]

# The one home of the hint defaults; nodes, CLI and Space read them from here.
HINT_DEFAULTS = {
    "strength": 1.0,  # local hints: 0 = no effect, 1 = the region takes the hinted colour
    "reference_strength": 1.0,  # global hint weight on log(h + eps)
    "sigma": 6.0,  # width of the colour Gaussian in a*b* units (one bin of the paper's grid)
    "reach": 10.0,  # point growth: geodesic distance (in L units) where the weight is exp(-1/2)
    "eps": 1e-3,  # floor of the reference histogram
}
GROW_SIDE = 64  # longer side of the grid a point is grown on (the logits' side is 56 at 224 px)
_STEP_COST = 12.0 / GROW_SIDE  # crossing the whole grid on flat L costs 12 L units
_NOISE = 0.5  # steps of L below this (after the blur) are free: noise and gentle shading
# a* and b* of a hinted colour lie in -AB_LIMIT..AB_LIMIT, CIE Lab's usual range (sRGB reaches
# about -86..98 and -108..95); beyond it, or NaN, a hint would pull the whole image to the grid's edge.
AB_LIMIT = 128.0


class HintError(ValueError):
    """A hint could not be read; the message says which and why."""


_shown = reprlib.Repr()  # a value in a message: short, whatever its size or depth
_shown.maxstring, _shown.maxother, _shown.maxlevel, _shown.maxlist, _shown.maxdict = 40, 40, 2, 4, 4


def _number(value: Any, what: str) -> float:
    """A finite number from ``value`` (a number, or text of one) -> float; HintError naming
    ``what`` and the value otherwise (lists, null, NaN, infinities, booleans)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise HintError(f"{what} {_shown.repr(value)} is not a number") from None
    if not math.isfinite(number):
        raise HintError(f"{what} {_shown.repr(value)} is not a finite number")
    return number


def _ab(a: Any, b: Any) -> tuple[float, float]:
    """A hinted a*b*, finite and within +-:data:`AB_LIMIT`."""
    a, b = _number(a, "a*"), _number(b, "b*")
    if abs(a) > AB_LIMIT or abs(b) > AB_LIMIT:
        raise HintError(f"colour a*={a:g}, b*={b:g}: a* and b* must lie in -{AB_LIMIT:g}..{AB_LIMIT:g}")
    return a, b


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    """The two items of ``value``; HintError ``what`` otherwise."""
    try:
        a, b = value
    except (TypeError, ValueError):
        raise HintError(f"{what}, got {_shown.repr(value)}") from None
    return a, b


def check_count(n: int, where: str = "") -> None:
    """HintError (prefixed by ``where``) when one image would take more than :data:`MAX_HINTS` hints."""
    if n > MAX_HINTS:
        raise HintError(f"{where}{n:,} colour hints for one image; at most {MAX_HINTS} are taken (MAX_HINTS)")


# ------------------------------------------------------------------ colours
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_color(color: Any) -> tuple[float, float]:
    """``"#RRGGBB"`` / ``"RRGGBB"``, an (r, g, b) of 0..255 ints or 0..1 floats, or
    ``{"a": .., "b": ..}`` (each within +-:data:`AB_LIMIT`) -> the colour's a*b* (its own
    lightness is ignored: the image's L is kept). Anything else is a HintError in words."""
    if isinstance(color, dict) and {"a", "b"} <= set(color):
        return _ab(color["a"], color["b"])
    if isinstance(color, str):
        m = _HEX.match(color.strip())
        if not m:
            raise HintError(f"colour {_shown.repr(color)}: give #RRGGBB (e.g. #c0392b)")
        rgb = [int(m.group(1)[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    elif isinstance(color, Sequence) and len(color) == 3:
        vals = [_number(v, "colour channel") for v in color]
        is_byte = any(v > 1 for v in vals) or all(isinstance(v, (int, np.integer)) for v in color)
        rgb = [v / 255 for v in vals] if is_byte else vals
        if not all(0 <= v <= 1 for v in rgb):
            raise HintError(f"colour {tuple(color)}: channels must lie in 0..255 (or 0..1)")
    else:
        raise HintError(f"colour {_shown.repr(color)}: give #RRGGBB, (r, g, b) or {{'a': .., 'b': ..}}")
    lab = rgb_to_lab(torch.tensor(rgb, dtype=torch.float64).view(3, 1, 1))
    return float(lab[1]), float(lab[2])


# ------------------------------------------------------------------ hints
@dataclass(frozen=True)
class Hint:
    """A colour on a region of one image.

    Attributes:
      ab: the hinted a*b*.
      mask: region weights ``(H, W)`` in [0, 1] at any resolution with the image's
        aspect ratio (ComfyUI MASK, SAM mask, painted mask); or ``None`` with ``point``.
      point: ``(x, y)`` in the input's pixels, grown into its object (module docstring).
      strength: 0..1.
    """

    ab: tuple[float, float]
    mask: torch.Tensor | None = None
    point: tuple[float, float] | None = None
    strength: float = HINT_DEFAULTS["strength"]

    def __post_init__(self) -> None:
        # Every number checked here, so a hint from any interface is finite and in range.
        if (self.mask is None) == (self.point is None):
            raise HintError("a hint needs exactly one of a mask or a point")
        object.__setattr__(self, "ab", _ab(*_pair(self.ab, "a hint's colour must be its (a*, b*)")))
        strength = _number(self.strength, "hint strength")
        if not 0.0 <= strength <= 1.0:
            raise HintError(f"hint strength must lie in 0..1, got {strength:g}")
        object.__setattr__(self, "strength", strength)
        if self.point is not None:
            x, y = _pair(self.point, "a hint point must be (x, y)")
            object.__setattr__(self, "point", (_number(x, "x"), _number(y, "y")))
        if self.mask is not None:
            m = torch.as_tensor(self.mask)
            if m.dim() == 3 and m.shape[0] == 1:
                m = m[0]
            if m.dim() != 2 or min(m.shape) < 1:
                raise HintError(f"a hint mask must be (H, W), got {tuple(m.shape)}")
            m = m.float()
            if not bool(torch.isfinite(m).all()):
                raise HintError("a hint mask holds NaN or infinite weights; give weights in 0..1")
            object.__setattr__(self, "mask", m.clamp(0, 1))

    @classmethod
    def at(cls, x: float, y: float, color: Any, strength: float = HINT_DEFAULTS["strength"]) -> Hint:
        """A point hint at pixel ``(x, y)`` of the input."""
        return cls(ab=parse_color(color), point=(_number(x, "x"), _number(y, "y")), strength=strength)

    @classmethod
    def on(cls, mask: Any, color: Any, strength: float = HINT_DEFAULTS["strength"]) -> Hint:
        """A hint on a region (weights in [0, 1])."""
        return cls(ab=parse_color(color), mask=torch.as_tensor(np.asarray(mask, dtype=np.float32)), strength=strength)


@dataclass(frozen=True)
class GlobalHint:
    """A log-prior over the K classes for the whole image (:func:`palette_prior`)."""

    log_prior: torch.Tensor  # (K,)
    strength: float = HINT_DEFAULTS["reference_strength"]

    def __post_init__(self) -> None:
        strength = _number(self.strength, "reference strength")
        if not 0.0 <= strength <= 4.0:
            raise HintError(f"reference strength must lie in 0..4, got {strength:g}")
        object.__setattr__(self, "strength", strength)


def _gaussian(classes: ColorClasses, ab: torch.Tensor, sigma: float) -> torch.Tensor:
    """-|mu_k - ab|^2 / (2 sigma^2) for a*b* ``(N, 2)`` -> ``(N, K)``."""
    d2 = torch.cdist(ab.double(), classes.centers.double()) ** 2
    return (-d2 / (2 * sigma**2)).float()


REFERENCE_SIDE = 64  # a reference's colours are counted at this longer side


def _small(reference: Any) -> Any:
    """A reference image file or PIL image shrunk to :data:`REFERENCE_SIDE` before it becomes
    float RGB (a JPEG file decoded at a reduced scale): an 81 MP reference costs its 8-bit
    raster at most, never a float copy of it. A caller's PIL image is left as it was."""
    if isinstance(reference, (str, os.PathLike)):
        from ccc_nodes.core.images import open_image

        reference = open_image(reference)
        reference.draft("RGB", (REFERENCE_SIDE, REFERENCE_SIDE))  # JPEG: decode at 1/2..1/8 scale
    if isinstance(reference, Image.Image) and max(reference.size) > REFERENCE_SIDE:
        if reference.mode not in ("RGB", "RGBA", "L", "LA"):
            reference = reference.convert("RGBA" if "A" in reference.getbands() else "RGB")
        s = REFERENCE_SIDE / max(reference.size)
        size = (max(1, round(reference.width * s)), max(1, round(reference.height * s)))
        reference = reference.resize(size, Image.BILINEAR, reducing_gap=2.0)
    return reference


def palette_prior(
    reference: Any, classes: ColorClasses, strength: float = HINT_DEFAULTS["reference_strength"],
    sigma: float = HINT_DEFAULTS["sigma"], eps: float = HINT_DEFAULTS["eps"],
) -> GlobalHint:
    """A reference image (anything :func:`~ccc_nodes.core.images.to_rgb` reads), or a palette
    (a list of colours :func:`parse_color` reads) -> a :class:`GlobalHint` from its class
    histogram, smoothed over a*b* with a Gaussian of ``sigma``."""
    if isinstance(reference, (list, tuple)) and reference and not isinstance(reference[0], (int, float)):
        ab = torch.tensor([parse_color(c) for c in reference], dtype=torch.float32)
    else:
        rgb, _ = to_rgb(_small(reference))
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        side = 64 / max(t.shape[-2:])
        if side < 1:
            t = F.interpolate(t, scale_factor=side, mode="bilinear", antialias=True, align_corners=False)
        ab = rgb_to_lab(t)[0, 1:].flatten(1).T
    hist = torch.softmax(_gaussian(classes, ab, sigma), dim=1).mean(dim=0)  # soft-assigned, sums to 1
    return GlobalHint(torch.log(hist + eps), strength)


# ------------------------------------------------------------------ regions
def _grow_grid(L: torch.Tensor) -> torch.Tensor:
    """Full-resolution L ``(1, 1, H, W)`` -> blurred L on the growth grid ``(h, w)``."""
    H, W = L.shape[-2:]
    s = GROW_SIDE / max(H, W)
    size = (max(1, round(H * s)), max(1, round(W * s)))
    g = F.interpolate(L.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16  # a blur against JPEG noise and fine texture
    g = F.pad(g, (2, 2, 2, 2), mode="replicate")
    g = F.conv2d(F.conv2d(g, k.view(1, 1, 1, 5)), k.view(1, 1, 5, 1))
    return g[0, 0]


def _geodesic(grid: torch.Tensor, seeds: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Geodesic distances ``(S, h, w)`` from each of ``seeds`` (row, col) over ``grid``,
    each 4-neighbour step costing ``max(|dL| - _NOISE, 0) + _STEP_COST``: min-plus
    relaxation of all seeds at once, until nothing changes."""
    h, w = grid.shape
    cost_x = ((grid[:, 1:] - grid[:, :-1]).abs() - _NOISE).clamp_min(0) + _STEP_COST  # (i, j) <-> (i, j+1)
    cost_y = ((grid[1:, :] - grid[:-1, :]).abs() - _NOISE).clamp_min(0) + _STEP_COST
    D = torch.full((len(seeds), h, w), math.inf)
    for i, (r, c) in enumerate(seeds):
        D[i, r, c] = 0.0
    for it in range(4 * (h + w)):
        prev = D.clone() if it % 4 == 3 else None
        D[:, :, 1:] = torch.minimum(D[:, :, 1:], D[:, :, :-1] + cost_x)
        D[:, :, :-1] = torch.minimum(D[:, :, :-1], D[:, :, 1:] + cost_x)
        D[:, 1:, :] = torch.minimum(D[:, 1:, :], D[:, :-1, :] + cost_y)
        D[:, :-1, :] = torch.minimum(D[:, :-1, :], D[:, 1:, :] + cost_y)
        if prev is not None and torch.equal(D, prev):
            break
    return D


def _mask_under(masks: Any, x: float, y: float, size: tuple[int, int]) -> torch.Tensor | None:
    """The smallest of ``masks`` (a MaskSet or boolean ``(M, h, w)``) holding pixel (x, y)."""
    m = torch.as_tensor(getattr(masks, "masks", masks)).bool()
    if m.dim() != 3 or not len(m):
        return None
    (H, W), (mh, mw) = size, m.shape[-2:]
    r, c = min(int(y * mh / H), mh - 1), min(int(x * mw / W), mw - 1)
    holding = [i for i in range(len(m)) if m[i, r, c]]
    return m[min(holding, key=lambda i: int(m[i].sum()))].float() if holding else None


def _check_point(x: float, y: float, size: tuple[int, int]) -> None:
    H, W = size
    if not (0 <= x < W and 0 <= y < H):
        raise HintError(f"hint point ({x:g}, {y:g}) lies outside the {W}x{H} image")


def check_fits(hints: Sequence[Hint], size: tuple[int, int]) -> None:
    """Refuse hints that do not fit an image of ``size`` ``(H, W)``: a point outside it, a
    mask of another aspect ratio (a :class:`HintError` saying which)."""
    for hint in hints:
        if hint.point is not None:
            _check_point(*hint.point, size)
        elif not masks_fit(size, tuple(hint.mask.shape)):
            raise HintError(f"a hint mask of {hint.mask.shape[1]}x{hint.mask.shape[0]} does not match the image of "
                            f"{size[1]}x{size[0]} (different aspect ratio)")


def grow_points(
    L: torch.Tensor, points: Sequence[tuple[float, float]], masks: Any = None, reach: float = HINT_DEFAULTS["reach"]
) -> list[torch.Tensor]:
    """Points ``(x, y)`` of an image with full-resolution L ``(1, 1, H, W)`` -> region
    weights in [0, 1] each: the smallest of ``masks`` (a :class:`~ccc_nodes.steps.masks.MaskSet`
    or boolean ``(M, h, w)``) that holds the point, else the geodesic affinity on L."""
    H, W = L.shape[-2:]
    for x, y in points:
        _check_point(x, y, (H, W))
    out: list[torch.Tensor | None] = [None if masks is None else _mask_under(masks, x, y, (H, W)) for x, y in points]
    todo = [i for i, o in enumerate(out) if o is None]
    if todo:
        grid = _grow_grid(L)
        gh, gw = grid.shape
        seeds = [(min(int(points[i][1] * gh / H), gh - 1), min(int(points[i][0] * gw / W), gw - 1)) for i in todo]
        weights = torch.exp(-0.5 * (_geodesic(grid, seeds) / reach) ** 2)
        for i, wt in zip(todo, weights, strict=True):
            out[i] = wt
    return out  # type: ignore[return-value]


def grow_point(
    L: torch.Tensor, x: float, y: float, masks: Any = None, reach: float = HINT_DEFAULTS["reach"]
) -> torch.Tensor:
    """One point: :func:`grow_points`."""
    return grow_points(L, [(x, y)], masks, reach)[0]


def _to_logit_grid(w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Region weights ``(h, w)`` -> ``(1, 1, *size)`` (area-averaged, so edges feather)."""
    w = w.float()[None, None]
    if tuple(w.shape[-2:]) == tuple(size):
        return w
    return F.interpolate(w, size=size, mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


def hint_regions(pred: Prediction, hints: Sequence[Hint], masks: Any = None) -> list[torch.Tensor]:
    """The region weights of each hint at the image's growth grid or mask size ``(h, w)``
    (at most :data:`MAX_HINTS` hints: each point is grown over the image)."""
    check_count(len(hints))
    points = [h.point for h in hints if h.point is not None]
    grown = iter(grow_points(pred.L, points, masks=masks) if points else [])
    return [h.mask if h.point is None else next(grown) for h in hints]


@torch.no_grad()
def apply_hints(
    pred: Prediction,
    hints: Sequence[Hint] = (),
    reference: GlobalHint | None = None,
    masks: Any = None,
    sigma: float = HINT_DEFAULTS["sigma"],
    regions: Sequence[torch.Tensor] | None = None,
) -> Prediction:
    """One image's :class:`Prediction` -> a Prediction with steered logits (module
    docstring). Hints apply in order, each pooled with what the previous left. A
    harmonised prediction is harmonised again with its own masks and thresholds.
    ``regions``: the hints' weights when the caller has them (:func:`hint_regions`).
    At most :data:`MAX_HINTS` hints, refused before any work."""
    check_count(len(hints))
    if pred.logits.shape[0] != 1:
        raise HintError(f"hints apply to one image (B = 1), got a batch of {pred.logits.shape[0]}: loop over it")
    if not hints and reference is None:
        return pred
    logits = pred.logits.float().clone()
    K, h, w = logits.shape[1:]
    classes = pred.classes
    if reference is not None:
        if reference.log_prior.numel() != K:
            raise HintError(f"the reference prior has {reference.log_prior.numel()} classes, the model {K}")
        logits += float(reference.strength) * reference.log_prior.view(1, K, 1, 1).to(logits)
    check_fits(hints, pred.size)
    for hint, region in zip(hints, hint_regions(pred, hints, masks) if regions is None else regions, strict=True):
        alpha = float(hint.strength) * _to_logit_grid(region, (h, w))
        log_q = _gaussian(classes, torch.tensor([hint.ab]), sigma).view(1, K, 1, 1)
        logits = (1 - alpha) * logits + alpha * log_q
    plain = Prediction(L=pred.L, logits=logits, classes=classes, alpha=pred.alpha)
    if isinstance(pred, HarmonizedPrediction) and pred.masks is not None:
        return harmonize(plain, pred.masks, **pred.params)
    return plain


def steering(classes: ColorClasses, reference: Any = None) -> Callable[[Prediction, Sequence[Hint]], Prediction]:
    """``pred, hints -> apply_hints(pred, hints, prior)`` with ``reference`` (an image, a
    palette or a :class:`GlobalHint`) turned into a prior for ``classes`` once."""
    prior = reference if reference is None or isinstance(reference, GlobalHint) else palette_prior(reference, classes)
    return lambda pred, hints: apply_hints(pred, hints, reference=prior)


# ------------------------------------------------------------------ text forms
def parse_hint(text: str) -> Hint:
    """``"X,Y,#RRGGBB"`` or ``"X,Y,#RRGGBB,STRENGTH"`` (pixels of the input) -> a point hint;
    an error quotes the hint."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) not in (3, 4):
        raise HintError(f"hint {_shown.repr(text)}: give X,Y,#RRGGBB or X,Y,#RRGGBB,STRENGTH")
    try:
        return Hint.at(parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else HINT_DEFAULTS["strength"])
    except HintError as e:
        raise HintError(f"hint {_shown.repr(text)}: {e}") from None


_JSON_KEYS = ("x", "y", "color", "strength")  # a hint object's keys; strength may be left out


def _hint_from_json(item: Any) -> Hint:
    if isinstance(item, str):
        return parse_hint(item)
    if not isinstance(item, dict) or not {"x", "y", "color"} <= set(item):
        raise HintError("each hint is \"X,Y,#RRGGBB\" or {\"x\": .., \"y\": .., \"color\": \"#RRGGBB\"}")
    unknown = [k for k in item if k not in _JSON_KEYS]  # a misspelt key would silently be its default
    if unknown:
        raise HintError(f"unknown key {_shown.repr(unknown[0])} ({', '.join(_JSON_KEYS)})")
    return Hint.at(item["x"], item["y"], item["color"], item.get("strength", HINT_DEFAULTS["strength"]))


class HintTable(dict):
    """File name or path (as the hints file writes it) -> hints, and ``"*"`` -> the hints of
    every input; :attr:`where` finds an entry by its normalised name (:func:`_key`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.where = {_key(name): name for name in self if name != "*"}


def _key(name: str) -> str:
    """A hints file's name for an input, as it is compared: a path (``in/x.png``,
    ``./in/x.png``, ``in/frames/``, ``~/x.png``, absolute) in full and normalised, a bare
    file name as it is."""
    if "/" in name or os.sep in name or name.startswith("~"):
        return os.path.normpath(os.path.abspath(os.path.expanduser(name)))
    return name


def _index(table: dict[str, list[Hint]]) -> dict[str, str]:
    return table.where if isinstance(table, HintTable) else HintTable(table).where


def load_hints(path: str | Path) -> HintTable:
    """A JSON file of hints for batch work -> file name -> hints. Either a list (the same
    hints for every input) under the key ``"*"``, or an object mapping input file names
    (or paths as given) to lists; each hint is ``"X,Y,#RRGGBB[,S]"`` or
    ``{"x": .., "y": .., "color": "#RRGGBB", "strength": ..}``. Each list holds at most
    :data:`MAX_HINTS` (counted before any is read); an error names the file, the entry and
    the hint."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise HintError(f"cannot read hints file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise HintError(f"hints file {path} is not text (UTF-8 JSON)") from None
    except json.JSONDecodeError as e:
        raise HintError(f"hints file {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except RecursionError:
        raise HintError(f"hints file {path} is nested too deeply: give a list, or an object of lists") from None
    if isinstance(data, list):
        data = {"*": data}
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise HintError(f"hints file {path}: give a list of hints, or an object of file name -> list of hints")
    table = {}
    for name, items in data.items():
        entry = "every input" if name == "*" else repr(name)
        check_count(len(items), f"hints file {path}, {entry}: ")
        table[name] = []
        for i, item in enumerate(items, 1):
            try:
                table[name].append(_hint_from_json(item))
            except HintError as e:
                shown = "" if isinstance(item, str) else f" {_shown.repr(item)}"
                raise HintError(f"hints file {path}, {entry}, hint {i}{shown}: {e}") from None
    return HintTable(table)


def _keys(path: str | Path) -> tuple[str, ...]:
    """The names a hint table may file an input under, in order: its path (:func:`_key`),
    then its file name."""
    path = Path(path)
    return os.path.normpath(os.path.abspath(path)), path.name


def hints_for(table: dict[str, list[Hint]], path: str | Path) -> list[Hint]:
    """The hints of a :func:`load_hints` table for one input: those under its path (written
    any way that names the same place), else under its file name, then those under ``"*"``."""
    where = _index(table)
    own = next((table[where[k]] for k in _keys(path) if table.get(where.get(k, ""))), [])
    return [*own, *table.get("*", [])]


def hint_table(path: str | Path | None = None, everywhere: Sequence[str] = ()) -> HintTable:
    """``--hints FILE`` (:func:`load_hints`) and ``--hint`` texts for every input, read into
    one table, with each input's count (its own and those for every input) checked
    against :data:`MAX_HINTS` before any work."""
    check_count(len(everywhere), "--hint: ")
    table = load_hints(path) if path is not None else HintTable()
    table.setdefault("*", []).extend(parse_hint(h) for h in everywhere)
    shared = len(table["*"])
    check_count(shared, "for every input: ")
    for name, items in table.items():
        if name != "*":
            check_count(len(items) + shared, f"hints for {name!r} ({len(items)} of its own, {shared} for every input): ")
    return table


def unmatched_names(table: dict[str, list[Hint]], paths: Sequence[str | Path]) -> list[str]:
    """The names of a hint table (other than ``"*"``) under which none of ``paths`` is
    filed (:func:`hints_for`'s rule): hints that would be silently unused."""
    where = _index(table)
    named = {where[k] for p in paths for k in _keys(p) if k in where}
    return [name for name in table if name != "*" and name not in named]


def read_reference(spec: str) -> Any:
    """``--reference``: an image file, or comma-separated colours (``#c0392b,#2e86c1``)."""
    path = Path(spec).expanduser()
    if path.is_file():
        from ccc_nodes.core.images import open_image

        return open_image(path)
    colours = [c for c in spec.split(",") if c.strip()]
    if colours and all(_HEX.match(c.strip()) for c in colours):
        return colours
    raise HintError(f"reference {spec!r} is neither an image file nor a list of #RRGGBB colours")


def parse_hints(text: str) -> list[Hint]:
    """Point hints one per line (``X,Y,#RRGGBB[,S]``, as :func:`parse_hint`); blank lines
    are skipped, more than :data:`MAX_HINTS` lines are refused before any is read, and an
    error names its line."""
    lines = [(i, line) for i, line in enumerate(str(text or "").splitlines(), 1) if line.strip()]
    check_count(len(lines))
    hints = []
    for i, line in lines:
        try:
            hints.append(parse_hint(line))
        except HintError as e:
            raise HintError(f"hint line {i}: {e}") from None
    return hints


def format_hint(x: float, y: float, color: str, strength: float = HINT_DEFAULTS["strength"]) -> str:
    """The text form :func:`parse_hint` reads."""
    Hint.at(x, y, color, strength)  # refuse what could not be read back
    return f"{x:g},{y:g},{color},{strength:g}"
