"""The steering nodes: Colour Hint and Reference Palette (METHOD.md s. 11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ccc_nodes.interfaces.nodes.sockets import (
    CATEGORY,
    ClassBatch,
    _images,
    validate_inputs,
)
from ccc_nodes.steps.hints import HINT_DEFAULTS, Hint, apply_hints, hint_regions, palette_prior


def _per_image(batch: torch.Tensor | None, n: int, name: str) -> list:
    """A batch input of one plane per image, or one for all -> n entries (or n Nones)."""
    if batch is None:
        return [None] * n
    if batch.shape[0] not in (1, n):
        raise ValueError(f"{name}: {batch.shape[0]} given for {n} images; give one per image, or one for all")
    return [batch[i if batch.shape[0] == n else 0] for i in range(n)]


def _stretched(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A MASK of another size stretched over the image, as ComfyUI's own nodes and SAM Harmonize
    take it (a 512 x 512 SolidMask covers a 451 x 300 photo)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)


class CCCColorHint:
    """CCC_CLASSES + a region + a colour -> CCC_CLASSES steered toward it (METHOD.md s. 11)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {
            "required": {
                "classes": ("CCC_CLASSES",),
                "color": ("STRING", {"default": "#c0392b", "tooltip": "The wanted colour, #RRGGBB (its a*b*; "
                                     "the image's lightness is kept)."}),
                "strength": ("FLOAT", {"default": HINT_DEFAULTS["strength"], "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "0: no effect; 1: the region takes the colour."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "The region (painted in the mask editor, from SAM, ...); one per "
                                  "image or one for all. Without it, the point x, y is grown into its object: "
                                  "the smallest SAM Harmonize mask holding it, else by lightness."}),
                "x": ("INT", {"default": -1, "min": -1, "max": 1 << 16, "tooltip": "Point hint: pixel column (-1: none)."}),
                "y": ("INT", {"default": -1, "min": -1, "max": 1 << 16, "tooltip": "Point hint: pixel row (-1: none)."}),
            },
        }

    RETURN_TYPES = ("CCC_CLASSES", "MASK")
    RETURN_NAMES = ("classes", "region")
    FUNCTION = "hint"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Steers the colour classes of a region toward a colour before decoding, so shading and "
                   "texture stay the model's. Chain several before Classes -> Lab. 'region' shows the weights used.")

    @classmethod
    def VALIDATE_INPUTS(cls, color):  # noqa: N802
        return validate_inputs(cls, color=color)

    def hint(self, classes, color, strength, mask=None, x=-1, y=-1):
        preds = classes.predictions
        if mask is None and (x < 0 or y < 0):
            raise ValueError("Colour Hint needs a mask or a point (x, y >= 0)")
        if mask is not None and not bool((mask > 0).any()):
            raise ValueError("Colour Hint: the mask is empty (all zeros; LoadImage gives one for a photo without "
                             "alpha): paint the region in the mask editor, or leave the mask out and give x, y")
        masks = _per_image(None if mask is None else (mask[None] if mask.dim() == 2 else mask), len(preds), "mask")
        hints = [Hint.on(_stretched(m, p.size), color, strength) if m is not None else Hint.at(x, y, color, strength)
                 for m, p in zip(masks, preds, strict=True)]
        # After SAM Harmonize, a point grows into the smallest of its masks holding it.
        regions = [hint_regions(p, [h], masks=getattr(p, "masks", None))[0] for p, h in zip(preds, hints, strict=True)]
        out = [apply_hints(p, [h], regions=[r]) for p, h, r in zip(preds, hints, regions, strict=True)]
        regions = [F.interpolate(r[None, None].float(), size=classes.size, mode="bilinear")[0] for r in regions]
        return (ClassBatch(out), torch.cat(regions).cpu())


class CCCReferencePalette:
    """CCC_CLASSES + a reference IMAGE -> CCC_CLASSES biased toward its colours (a global hint)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {
            "required": {
                "classes": ("CCC_CLASSES",),
                "reference": ("IMAGE", {"tooltip": "A colour image whose palette the result should take; one per "
                                        "image or one for all."}),
                "strength": ("FLOAT", {"default": HINT_DEFAULTS["reference_strength"], "min": 0.0, "max": 4.0,
                                       "step": 0.1, "tooltip": "Weight of the reference's class histogram."}),
            },
        }

    RETURN_TYPES = ("CCC_CLASSES",)
    RETURN_NAMES = ("classes",)
    FUNCTION = "steer"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Biases every pixel's colour classes toward the colours of a reference image (its class "
                   "histogram as a prior), as global hints do.")

    def steer(self, classes, reference, strength):
        refs = _per_image(reference, len(classes), "reference")
        out = [apply_hints(p, reference=palette_prior(_images(r[None], "reference")[0], p.classes, strength))
               for p, r in zip(classes.predictions, refs, strict=True)]
        return (ClassBatch(out),)
