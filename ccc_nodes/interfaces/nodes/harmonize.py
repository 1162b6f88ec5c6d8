"""The harmonising nodes: SAM Loader and SAM Harmonize (METHOD.md s. 9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ccc_nodes.core.cache import cached, source_key
from ccc_nodes.core.extras import missing_module
from ccc_nodes.core.hub import ModelLoadError
from ccc_nodes.core.settings import (
    Harmonization,
)
from ccc_nodes.interfaces.nodes.sockets import (
    _HARM,
    CATEGORY,
    DEVICES,
    ClassBatch,
    _device,
    _managed,
    _Progress,
    _to_image,
    model_folders,
    sam_checkpoints,
)
from ccc_nodes.steps.harmonize import harmonize_with
from ccc_nodes.steps.masks import SAM_MODEL_TYPES, MaskSet, given_masks, overlay


class CCCSAMLoader:
    """Load a Segment Anything model (a checkpoint under models/sams, a path or a Hub repo)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {
            "required": {
                "model_type": (list(SAM_MODEL_TYPES), {"default": SAM_MODEL_TYPES[0], "tooltip": "The architecture of the checkpoint."}),
                "device": (list(DEVICES), {"default": "auto"}),
            },
            "optional": {
                # optional: with models/sams empty its list is empty, and the editor leaves an empty list out of
                # the prompt (a required one would then fail validation even with repo_or_path given)
                "checkpoint": (list(cls.checkpoints()), {"tooltip": "A SAM checkpoint (.pth) under models/sams."}),
                "repo_or_path": ("STRING", {"default": "", "tooltip": "Overrides 'checkpoint': a .pth path or a Hugging "
                                            "Face Hub repo id holding the official checkpoint file."}),
            },
        }

    RETURN_TYPES = ("SAM_MODEL",)
    RETURN_NAMES = ("sam_model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads a Segment Anything model once and keeps it in memory, for SAM Harmonize."

    @staticmethod
    def checkpoints() -> dict[str, Path]:
        """Name -> file of the checkpoints it lists (a host with other folders overrides this)."""
        return sam_checkpoints()

    @staticmethod
    def folders() -> list[Path]:
        return model_folders("sams")

    @classmethod
    def VALIDATE_INPUTS(cls, repo_or_path=""):  # noqa: N802
        # One input named: ComfyUI shows a refusal once under each input VALIDATE_INPUTS names, and checks
        # the others (device, checkpoint: lists) itself. An empty models/sams is fine with a path.
        if (repo_or_path or "").strip() or cls.checkpoints():
            return True
        return f"no SAM checkpoint chosen under {', '.join(map(str, cls.folders()))}: place a .pth there or give repo_or_path"

    def load(self, model_type, device, checkpoint=None, repo_or_path=""):
        from ccc_nodes.steps.masks import load_sam

        if not (source := (repo_or_path or "").strip()):
            found = self.checkpoints()
            if checkpoint not in found:
                what = f"no SAM checkpoint {checkpoint!r}" if checkpoint else "no SAM checkpoint chosen"
                raise ModelLoadError(f"{what} under {', '.join(map(str, self.folders()))}: place a .pth there or "
                                     "give repo_or_path")
            source = str(found[checkpoint])
        dev = _device(device)
        net = cached(("sam", source_key(source), model_type, str(dev)), lambda: load_sam(source, model_type, device=dev))
        return (_managed(net, dev),)


def _image_masks(mask: torch.Tensor, n_images: int, size: tuple[int, int]) -> list[MaskSet]:
    """A MASK ``(M, H, W)`` -> the masks of each image: one image takes all M planes; else
    plane i belongs to image i, or a single plane is shared by all."""
    if mask.dim() == 2:
        mask = mask[None]
    if n_images == 1:
        return [given_masks(mask, size=size)]
    if mask.shape[0] == n_images:
        return [given_masks(m[None], size=size) for m in mask]
    if mask.shape[0] == 1:
        return [given_masks(mask, size=size)] * n_images
    raise ValueError(f"mask: {mask.shape[0]} masks for {n_images} images; give one per image, one for all, "
                     f"or any number for a single image")


class CCCSAMHarmonize:
    """CCC_CLASSES -> CCC_CLASSES with object-consistent colours (METHOD.md s. 9, Algorithm 1)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        d = _HARM
        return {
            "required": {
                "classes": ("CCC_CLASSES",),
                "min_area": ("FLOAT", {"default": d.min_area, "min": 0.0, "max": 1.0, "step": 0.001,
                                       "tooltip": "Skip masks smaller than this fraction of the image."}),
                "dominance": ("FLOAT", {"default": d.dominance, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "A mask is harmonised if its most frequent class holds this share."}),
                "max_dev": ("FLOAT", {"default": d.max_dev, "min": 0.0, "max": 300.0, "step": 0.5,
                                      "tooltip": "Pixels whose a*b* is farther than this from the mode class are replaced."}),
                "sigma": ("FLOAT", {"default": d.sigma, "min": 0.0, "max": 50.0, "step": 0.1,
                                    "tooltip": "Gaussian feathering of the replaced region, in pixels."}),
            },
            "optional": {
                "sam_model": ("SAM_MODEL", {"tooltip": "SAM's automatic masks on the grey image."}),
                "mask": ("MASK", {"tooltip": "Masks to use instead of SAM's."}),
                "points_per_side": ("INT", {"default": d.points_per_side, "min": 4, "max": 128,
                                            "tooltip": "SAM's prompt grid (points_per_side^2 prompts)."}),
            },
        }

    RETURN_TYPES = ("CCC_CLASSES", "IMAGE")
    RETURN_NAMES = ("classes", "masks")
    FUNCTION = "harmonize"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Makes each object's colour consistent: masks from SAM, from the MASK input, or (neither "
                   "given) a classical segmentation. 'masks' shows the masks used.")

    def harmonize(self, classes, min_area, dominance, max_dev, sigma, sam_model=None, mask=None,
                  points_per_side=_HARM.points_per_side):
        preds = classes.predictions
        settings = Harmonization(min_area=min_area, dominance=dominance, max_dev=max_dev, sigma=sigma,
                                 points_per_side=points_per_side)
        given = _image_masks(mask, len(preds), classes.size) if mask is not None else [None] * len(preds)
        sam = None if sam_model is None else _managed(sam_model)
        progress, out = _Progress(len(preds)), []
        for p, m in zip(preds, given, strict=True):
            try:
                out.append(harmonize_with(p, settings, masks=m, sam=sam))
            except ImportError as e:  # the classical fallback needs scikit-image, SAM segment-anything
                raise missing_module(e, "SAM Harmonize", "sam") from e
            progress(len(out))
        shown = [torch.from_numpy(np.asarray(overlay(p, h.masks), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
                 for p, h in zip(preds, out, strict=True)]
        shown = [torch.nn.functional.interpolate(x, size=classes.size, mode="bilinear") for x in shown]
        result = (ClassBatch(out), _to_image(shown))
        note = _empty_mask_note(mask, len(preds)) if mask is not None else None
        return {"ui": {"text": [note]}, "result": result} if note else result


def _empty_mask_note(mask: torch.Tensor, n_images: int) -> str | None:
    """What to tell when the MASK input holds nothing (all zeros) for some images: nothing
    was harmonised there. Core LoadImage gives such a mask (64x64) for a photo without alpha."""
    planes = mask[None] if mask.dim() == 2 else mask
    if n_images == 1 or planes.shape[0] == 1:
        empty = list(range(1, n_images + 1)) if not bool((planes > 0).any()) else []
    else:
        empty = [i + 1 for i in range(planes.shape[0]) if not bool((planes[i] > 0).any())]
    if not empty:
        return None
    which = "The mask is" if len(empty) == n_images else f"The mask of image{'s' if len(empty) > 1 else ''} " \
        f"{', '.join(map(str, empty))} is"
    return (f"{which} empty (all zeros), so nothing was harmonised there. LoadImage gives a blank mask for a "
            "photo without alpha: paint the region in the mask editor, or connect a SAM model instead.")
