"""Object-selective colour harmonisation (METHOD.md section 9; the paper's Algorithm 1,
reconstructed).

Class rebalancing leaves occasional off-colour pixels inside objects and at their edges;
object masks make each object's colour consistent::

    Colorizer().run(image, harmonization=Harmonization("sam"), sam=sam)   # the whole job

    pred = Colorizer().predict(image)[0]                 # or step by step: a Prediction
    out = harmonize_with(pred, Harmonization("sam"), sam=sam)   # masks, then Algorithm 1
    out.rgb()                                            # harmonised sRGB (1, 3, H, W)
    out.changed, out.masks_used, out.notes               # what it did

:func:`harmonize` is Algorithm 1 on masks already made.

The algorithm, at the masks' resolution (H, W):
1. a*b* is decoded at model resolution and upsampled bilinearly to (H, W) (what
   :meth:`Prediction.rgb` would show); the predicted class map is upsampled (nearest).
2. Masks are taken from the largest to the smallest; masks smaller than ``min_area``
   (a fraction of the image, not pixels) are skipped.
3. In a mask, the histogram of predicted classes gives the mode class c. If c holds at
   least ``dominance`` of the mask, every pixel of the mask whose a*b* lies farther than
   ``max_dev`` from c's bin centre is set to it; pixels near the mode keep their own
   colour. A smaller mask processed later decides again for its own pixels (the most
   specific object wins); masks without a dominant class change nothing.
4. The replaced region is blended back with a Gaussian-feathered weight (``sigma``
   pixels), so object boundaries stay soft.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.prediction import Prediction, decode_ab
from ccc_nodes.core.settings import Decoding, Harmonization
from ccc_nodes.steps.masks import MaskSet, generate_masks, masks_name

__all__ = ["HarmonizedPrediction", "harmonize", "harmonize_ab", "harmonize_with", "masks_fit"]

# Algorithm 1's thresholds; their defaults live in Harmonization (METHOD.md s. 9).
_DEFAULT = Harmonization()


def _feather(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(C, H, W)`` with reflected borders (identity for sigma 0)."""
    if sigma <= 0:
        return x
    k = 2 * int(3 * sigma + 0.5) + 1
    if k > min(x.shape[-2:]):  # reflection needs the image to be wider than the kernel's radius
        k = max(1, min(x.shape[-2:]) // 2 * 2 - 1)
    return gaussian_blur(x, [k, k], [sigma, sigma]) if k > 1 else x


@torch.no_grad()
def harmonize_ab(
    ab: torch.Tensor,
    class_map: torch.Tensor,
    masks: torch.Tensor,
    classes: ColorClasses,
    min_area: float = _DEFAULT.min_area,
    dominance: float = _DEFAULT.dominance,
    max_dev: float = _DEFAULT.max_dev,
    sigma: float = _DEFAULT.sigma,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The harmonisation on tensors of one image (see the module docstring).

    Arguments:
      ab: decoded a*b* ``(1, 2, h, w)`` at model resolution.
      class_map: predicted classes ``(1, h, w)`` (argmax of the logits).
      masks: boolean ``(M, H, W)``, any order; (H, W) is the working resolution.
      classes: the model's colour classes (their bin centres are the target colours).
      min_area: skip masks smaller than this fraction of the image.
      dominance: the mode class must hold at least this fraction of a mask (paper: 30%).
      max_dev: a*b* distance from the mode's centre beyond which a pixel is replaced
        (paper: 2 bins = 12).
      sigma: feathering of the replaced region, in pixels at (H, W); 0 for hard edges.

    Returns: harmonised a*b* ``(1, 2, H, W)``, harmonised classes ``(1, H, W)``, the
    replaced pixels ``(H, W)`` (bool) and the number of masks that were applied.
    """
    if ab.dim() != 4 or ab.shape[:2] != (1, 2):
        raise ValueError(f"ab must have shape (1, 2, h, w), got {tuple(ab.shape)}")
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape (M, H, W), got {tuple(masks.shape)}")
    if not 0 <= dominance <= 1 or max_dev < 0 or sigma < 0 or min_area < 0:
        raise ValueError("need 0 <= dominance <= 1, max_dev >= 0, sigma >= 0, min_area >= 0")
    H, W = masks.shape[-2:]
    masks = masks.to(ab.device).bool()
    base = F.interpolate(ab.float(), size=(H, W), mode="bilinear", align_corners=False)[0]  # (2, H, W)
    cls = F.interpolate(class_map[None].float(), size=(H, W), mode="nearest")[0, 0].long()  # (H, W)
    centers = classes.centers.to(ab.device)

    target, out_cls = base.clone(), cls.clone()
    replaced = torch.zeros(H, W, dtype=torch.bool, device=ab.device)
    areas = masks.flatten(1).sum(dim=1)
    used = 0
    for m in torch.argsort(areas, descending=True, stable=True).tolist():  # largest to smallest (step 2)
        area = int(areas[m])
        if area == 0 or area < min_area * H * W:
            continue
        sel = masks[m]
        counts = torch.bincount(cls[sel], minlength=classes.K)
        c = int(counts.argmax())
        if counts[c] < dominance * area:  # no dominant class: leave the object alone (step 3)
            continue
        used += 1
        far = sel & ((base - centers[c].view(2, 1, 1)).norm(dim=0) > max_dev)
        near = sel & ~far
        # This mask decides for all its pixels, over any larger mask decided before.
        target[:, near], out_cls[near], replaced[near] = base[:, near], cls[near], False
        target[:, far], out_cls[far], replaced[far] = centers[c].view(2, 1), c, True

    # Feathered blend (step 4): out = (1 - w) * base + w * (target averaged over the replaced region).
    r = replaced.float()[None]
    w = _feather(r, sigma)
    out = base * (1 - w) + _feather(r * target, sigma)
    return out[None], out_cls[None], replaced, used


@dataclass
class HarmonizedPrediction(Prediction):
    """A :class:`Prediction` whose decoded a*b* is harmonised: :meth:`ab` returns it at
    the masks' resolution ``(1, 2, H, W)`` and :meth:`rgb` joins it with the full L, so
    everything that takes a Prediction takes this. ``logits`` and ``class_map`` are the
    model's, unchanged; ``harmonized_class_map`` is the harmonised class map.

    Attributes (besides Prediction's):
      masks: the :class:`MaskSet` used.
      params: the harmonisation thresholds used.
      changed: fraction of pixels whose colour was replaced (argmax decoding).
      masks_used: how many masks had a dominant class and were applied.
      harmonized_class_map: harmonised class map ``(1, H, W)`` (argmax decoding).
      decoded: harmonised a*b* per :class:`~ccc_nodes.core.settings.Decoding`, filled as asked.
      notes: what was done, in words (the mask source, a fallback taken, what changed).
    """

    masks: MaskSet | None = None
    params: dict = field(default_factory=dict)
    changed: float = 0.0
    masks_used: int = 0
    harmonized_class_map: torch.Tensor | None = None
    decoded: dict[Decoding, torch.Tensor] = field(default_factory=dict, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """Which mask source was used (``"sam:vit_b"``, ``"classical:felzenszwalb"``, ``"given"``)."""
        return self.masks.source if self.masks is not None else "none"

    @property
    def shown_class_map(self) -> torch.Tensor:
        return self.harmonized_class_map if self.harmonized_class_map is not None else self.class_map

    def ab(self, decoding: Decoding | str | None = None) -> torch.Tensor:
        decoding = Decoding.of(decoding)
        if decoding not in self.decoded:
            ab = decode_ab(self.logits, self.classes, decoding)
            self.decoded[decoding] = harmonize_ab(ab, self.class_map, self.masks.masks, self.classes, **self.params)[0]
        return self.decoded[decoding]


def masks_fit(image_size: tuple[int, int], mask_size: tuple[int, int], rel_tol: float = 0.02) -> bool:
    """Whether masks of ``mask_size`` (H, W) cover an image of ``image_size`` (H, W): the
    image scaled by one factor and each side rounded (within 1 px per side, so
    :func:`~ccc_nodes.steps.masks.grey_image`'s sizes of long thin images pass), or the same
    aspect ratio within ``rel_tol``."""
    (h0, w0), (h, w) = image_size, mask_size
    if min(h0, w0, h, w) < 1:
        return False
    if abs(h0 * w - w0 * h) <= rel_tol * h0 * w:
        return True
    # Some scale s with |s h0 - h| <= 1 and |s w0 - w| <= 1 (s > 0).
    lo = max((h - 1) / h0, (w - 1) / w0, 0.0)
    hi = min((h + 1) / h0, (w + 1) / w0)
    return lo <= hi and hi > 0


def harmonize(
    prediction: Prediction,
    masks: MaskSet | torch.Tensor,
    min_area: float = _DEFAULT.min_area,
    dominance: float = _DEFAULT.dominance,
    max_dev: float = _DEFAULT.max_dev,
    sigma: float = _DEFAULT.sigma,
) -> HarmonizedPrediction:
    """Harmonise one image's colours with object masks (METHOD.md section 9).

    Arguments:
      prediction: what :meth:`Colorizer.predict` gives for one image (B = 1).
      masks: a :class:`MaskSet` (:func:`ccc_nodes.steps.masks.generate_masks`) or boolean
        ``(M, H, W)``; their size must be the image's scaled down or up (each side
        rounded, 1 px of slack) or have its aspect ratio within 2 % (:func:`masks_fit`).
      min_area, dominance, max_dev, sigma: see :func:`harmonize_ab`.
    """
    if not isinstance(prediction, Prediction):
        raise TypeError(f"harmonize takes a Prediction (Colorizer.predict), got {type(prediction).__name__}")
    if prediction.logits.shape[0] != 1:
        raise ValueError(f"harmonize works on one image (B = 1), got a batch of {prediction.logits.shape[0]}: loop over it")
    if not isinstance(masks, MaskSet):
        masks = MaskSet(torch.as_tensor(masks), "given")
    (h0, w0), (h, w) = prediction.size, masks.size
    if not masks_fit(prediction.size, masks.size):
        raise ValueError(f"masks of {w}x{h} do not match the image of {w0}x{h0} (different aspect ratio)")
    params = Harmonization(min_area=min_area, dominance=dominance, max_dev=max_dev, sigma=sigma).thresholds
    argmax = Decoding("argmax")
    ab = decode_ab(prediction.logits, prediction.classes, argmax)
    out, out_cls, replaced, used = harmonize_ab(ab, prediction.class_map, masks.masks, prediction.classes, **params)
    return HarmonizedPrediction(
        L=prediction.L, logits=prediction.logits, classes=prediction.classes, alpha=prediction.alpha,
        masks=masks, params=params, changed=float(replaced.float().mean()), masks_used=used,
        harmonized_class_map=out_cls, decoded={argmax: out},
    )


def harmonize_with(
    prediction: Prediction, settings: Harmonization | None = None, *, masks: Any = None, sam: Any = None
) -> HarmonizedPrediction:
    """The harmonisation step of the job: object masks (given, else from ``settings.masks``
    with ``sam``), then :func:`harmonize` with ``settings``' thresholds; ``notes`` says
    what was done in words."""
    settings = settings or Harmonization()
    if masks is None:
        with_sam = sam is not None and settings.masks != "classical"
        params = {"points_per_side": settings.points_per_side, **settings.sam_options} if with_sam else {}
        masks = generate_masks(prediction, settings.masks, sam=sam, **params)
    elif not isinstance(masks, MaskSet):
        masks = generate_masks(prediction, masks)
    out = harmonize(prediction, masks, **settings.thresholds)
    if getattr(masks, "note", ""):
        out.notes.append(masks.note)
    out.notes.append(f"Harmonised with {masks_name(masks.source)}: {out.masks_used} of {len(masks)} masks had a "
                     f"dominant class; {out.changed:.1%} of the pixels were recoloured.")
    return out
