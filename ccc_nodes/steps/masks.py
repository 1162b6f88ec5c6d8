"""Object masks for harmonisation (METHOD.md section 9, step 1).

Three sources, one format (:class:`MaskSet`: boolean masks ``(M, H, W)`` and the name
of the source that made them)::

    sam = load_sam("sam_vit_b_01ec64.pth", model_type="vit_b")        # or a Hub repo id holding it
    masks = generate_masks(prediction, source="sam", sam=sam)          # SAM on the grey image
    masks = generate_masks(prediction, source="classical")             # scikit-image Felzenszwalb / SLIC
    masks = generate_masks(prediction, source=comfy_mask)              # masks the caller gives
    masks = generate_masks(prediction, source="auto", sam=None)        # SAM if given, else classical
    overlay(prediction, masks).save("masks.png")

The image may be a :class:`~ccc_nodes.core.prediction.Prediction` (its full-resolution L is
used), an L tensor ``(1, 1, H, W)`` in [0, 100], or any image :func:`ccc_nodes.core.images.to_rgb`
reads (colour images are made grey first: SAM sees only what the model sees).
Masks are computed on the image scaled down so that its longer side is at most
``max_side`` (SAM itself works at 1024), which bounds time and memory; long thin images
keep a shorter side of :data:`MIN_SHORT_SIDE` px within ``max_side^2`` pixels instead
(:func:`grey_image`). Harmonisation works at the masks' resolution.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ccc_nodes.core.color import lab_to_rgb
from ccc_nodes.core.extras import missing_module
from ccc_nodes.core.images import to_rgb
from ccc_nodes.core.prediction import Prediction, lightness
from ccc_nodes.core.settings import SAM_MODEL_TYPES, Harmonization

__all__ = [
    "MIN_SHORT_SIDE",
    "SAM_CHECKPOINTS",
    "SAM_MODEL_TYPES",
    "MaskSet",
    "SamLoadError",
    "classical_masks",
    "generate_masks",
    "given_masks",
    "grey_image",
    "load_sam",
    "masks_name",
    "overlay",
    "sam_masks",
]

# File names of the official checkpoints (what ``filename`` defaults to for a Hub repo).
SAM_CHECKPOINTS = dict(zip(SAM_MODEL_TYPES, ("sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth"),
                           strict=True))


class SamLoadError(RuntimeError):
    """A SAM checkpoint could not be loaded; the message says what and how to fix it."""


@dataclass
class MaskSet:
    """Object masks of one image.

    Attributes:
      masks: boolean ``(M, H, W)`` (M may be 0), largest first.
      source: what made them: ``"sam:vit_b"``, ``"classical:felzenszwalb"``, ``"given"``...
      note: why this source was used when it was not the one asked for (else empty).
    """

    masks: torch.Tensor
    source: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.masks.dim() != 3:
            raise ValueError(f"masks must have shape (M, H, W), got {tuple(self.masks.shape)}")
        self.masks = self.masks.bool()
        self.masks = self.masks[torch.argsort(self.areas, descending=True, stable=True)]

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the masks."""
        return tuple(self.masks.shape[-2:])  # type: ignore[return-value]

    @property
    def areas(self) -> torch.Tensor:
        """Pixels per mask ``(M,)``."""
        return self.masks.flatten(1).sum(dim=1)

    def coverage(self) -> float:
        """Fraction of the image inside at least one mask."""
        return float(self.masks.any(dim=0).float().mean()) if len(self) else 0.0


# ------------------------------------------------------------------ the grey image
# Shrinking keeps the shorter side at least this long (or as it was, if shorter) while the
# pixel count stays within max_side^2: a 20000x20 image gives 16000x16 masks, not 512x1.
MIN_SHORT_SIDE = 16


def _shrunk_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    s = max(max_side / max(h, w), min(1.0, MIN_SHORT_SIDE / min(h, w)))
    s = min(s, max_side / (h * w) ** 0.5)  # long thin images: no more pixels than max_side^2
    return max(1, round(h * s)), max(1, round(w * s))


def grey_image(image: Any, max_side: int | None = 1024) -> np.ndarray:
    """A Prediction, an L tensor ``(1, 1, H, W)`` or any image -> grey sRGB uint8
    ``(h, w, 3)`` (three equal channels), scaled down (by one factor, sides rounded)
    when the longer side is over ``max_side``: to a longer side of ``max_side``, except
    that long thin images keep a shorter side of :data:`MIN_SHORT_SIDE` px (or their
    own, if shorter) as far as ``max_side^2`` pixels allow."""
    if isinstance(image, Prediction):
        L = image.L
    elif isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[:2] == (1, 1):
        L = image
    else:
        L = lightness(to_rgb(image)[0])
    L = L.float().cpu()
    h, w = L.shape[-2:]
    if max_side and max(h, w) > max_side:
        L = F.interpolate(L, size=_shrunk_size(h, w, max_side), mode="bilinear", antialias=True, align_corners=False)
    grey = lab_to_rgb(torch.cat((L, torch.zeros_like(L), torch.zeros_like(L)), dim=1))[0, 0]
    g = np.round(grey.numpy() * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


# ------------------------------------------------------------------ SAM
def _build(model_type: str):
    from segment_anything import sam_model_registry

    if model_type not in sam_model_registry:
        raise SamLoadError(f"unknown SAM model type {model_type!r}: use one of {', '.join(SAM_MODEL_TYPES)}")
    return sam_model_registry[model_type]()


def _read_state(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


def load_sam(
    checkpoint: str | os.PathLike,
    model_type: str = SAM_MODEL_TYPES[0],
    filename: str | None = None,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    builder: Callable[[], torch.nn.Module] | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
):
    """Load a Segment Anything model (``segment_anything.Sam``) in eval mode.

    Arguments:
      checkpoint: a local ``.pth`` / ``.safetensors`` file, or a Hugging Face Hub repo id
        holding one (downloaded through huggingface_hub: cache, ``HF_HUB_OFFLINE`` honoured).
      model_type: ``vit_b``, ``vit_l`` or ``vit_h``: the architecture the file is for.
      filename: the file in the Hub repo (default: the official name for ``model_type``,
        e.g. ``sam_vit_b_01ec64.pth``).
      revision: Hub branch, tag or commit.
      device: where to put the model.
      builder: builds the empty model instead of ``model_type`` (for other SAM sizes).
      cache_dir: Hugging Face cache folder (default: huggingface_hub's).
      local_files_only: never touch the network (``HF_HUB_OFFLINE=1`` does the same).
      token: Hub token for private repos.

    Raises :class:`SamLoadError` naming the file or repo and what to do.
    """
    try:
        import segment_anything  # noqa: F401
    except ImportError as e:
        raise SamLoadError(str(missing_module(e, "SAM", "sam"))) from e
    path = Path(checkpoint).expanduser()
    if not path.exists():
        text = str(checkpoint)
        if text.startswith((".", "/", "~")) or text.count("/") != 1 or text.endswith((".pth", ".pt", ".safetensors")):
            raise SamLoadError(f"SAM checkpoint {text!r} does not exist (give a .pth file or a Hub repo id 'owner/name')")
        hub = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only, "token": token}
        path = _hub_file(text, filename or SAM_CHECKPOINTS.get(model_type, "sam.pth"), hub)
    if path.is_dir():
        files = sorted([*path.glob("*.pth"), *path.glob("*.safetensors")])
        if len(files) != 1:
            raise SamLoadError(f"SAM folder {str(path)!r} must hold exactly one .pth or .safetensors file, found {len(files)}")
        path = files[0]
    sam = builder() if builder is not None else _build(model_type)
    try:
        sam.load_state_dict(_read_state(path))
    except Exception as e:  # noqa: BLE001 - torch.load fails in many ways on a file that is not a checkpoint
        raise SamLoadError(f"{path} is not a SAM {model_type} checkpoint (wrong model_type or a broken file?): {str(e)[:400]}") from e
    return sam.to(device).eval()


def _hub_file(repo_id: str, filename: str, hub: dict) -> Path:
    from huggingface_hub import errors, hf_hub_download

    from ccc_nodes.core.hub import hub_error, hub_unreachable

    hint = (
        f"To place it by hand: download {filename} from https://huggingface.co/{repo_id} (or the official SAM "
        f"release) and pass the file's path instead of the repo id."
    )
    unreachable = None if hub["local_files_only"] else hub_unreachable(repo_id, filename, hub["revision"], hub["token"])
    try:  # no network: the cache at once, not a storm of retries first
        return Path(hf_hub_download(repo_id, filename, **{**hub, "local_files_only": hub["local_files_only"] or
                                                           unreachable is not None}))
    except (OSError, ValueError, errors.EntryNotFoundError) as e:
        raise hub_error(e, repo_id, [filename], hub["revision"], hint=hint, unreachable=unreachable,
                        missing="pass filename=.", error=SamLoadError) from e


def sam_masks(
    image: Any,
    sam,
    points_per_side: int = Harmonization.points_per_side,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    min_region_area: float = 0.0,
    points_per_batch: int = 64,
    max_side: int | None = 1024,
) -> MaskSet:
    """SAM's automatic mask generator on the grey image (METHOD.md section 9, step 1).

    Arguments:
      image: see the module docstring.
      sam: a loaded ``segment_anything.Sam`` (:func:`load_sam`).
      points_per_side: the point grid is points_per_side^2 prompts (SAM default 32).
      pred_iou_thresh: drop masks whose predicted IoU is lower (SAM default 0.88).
      stability_score_thresh: drop masks less stable than this (SAM default 0.95).
      min_region_area: drop masks smaller than this fraction of the image.
      points_per_batch: prompts per forward pass of the mask decoder (memory knob).
      max_side: the grey image is resized to this longer side first.
    """
    from segment_anything import SamAutomaticMaskGenerator

    grey = grey_image(image, max_side)
    gen = SamAutomaticMaskGenerator(
        sam,
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
    )
    with torch.inference_mode():
        records = gen.generate(grey)
    h, w = grey.shape[:2]
    keep = [r for r in records if r["area"] >= min_region_area * h * w]
    masks = torch.from_numpy(np.stack([r["segmentation"] for r in keep])) if keep else torch.zeros(0, h, w, dtype=torch.bool)
    kind = next((k for k in SAM_MODEL_TYPES if _sam_type(sam) == k), "custom")
    return MaskSet(masks, f"sam:{kind}")


def _sam_type(sam) -> str:
    depth = len(sam.image_encoder.blocks)
    dim = sam.image_encoder.patch_embed.proj.out_channels
    return {(12, 768): "vit_b", (24, 1024): "vit_l", (32, 1280): "vit_h"}.get((depth, dim), "custom")


# ------------------------------------------------------------------ classical
def classical_masks(
    image: Any,
    method: str = "felzenszwalb",
    scale: float = 400.0,
    n_segments: int = 60,
    min_region_area: float = 0.001,
    max_side: int | None = 512,
) -> MaskSet:
    """A scikit-image segmentation of the grey image, one mask per segment: the
    fallback when no SAM checkpoint is present.

    Arguments:
      image: see the module docstring.
      method: ``"felzenszwalb"`` (graph-based; ``scale`` sets segment size) or ``"slic"``
        (k-means superpixels; ``n_segments`` sets their number).
      scale: Felzenszwalb's scale (larger: fewer, bigger segments).
      n_segments: SLIC's target number of segments.
      min_region_area: drop segments smaller than this fraction of the image.
      max_side: the grey image is resized to this longer side first.
    """
    try:
        from skimage.segmentation import felzenszwalb, slic
    except ImportError as e:
        raise missing_module(e, "classical masks (harmonisation without SAM)", "sam") from e

    grey = grey_image(image, max_side)[..., 0].astype(np.float64) / 255.0
    h, w = grey.shape
    if method == "felzenszwalb":
        labels = felzenszwalb(grey, scale=scale, sigma=0.8, min_size=max(1, int(min_region_area * h * w)), channel_axis=None)
    elif method == "slic":
        labels = slic(grey, n_segments=n_segments, compactness=0.1, channel_axis=None, start_label=0)
    else:
        raise ValueError(f"classical method must be 'felzenszwalb' or 'slic', got {method!r}")
    return _from_labels(torch.from_numpy(np.asarray(labels)), min_region_area, f"classical:{method}")


def _from_labels(labels: torch.Tensor, min_region_area: float, source: str) -> MaskSet:
    ids, counts = torch.unique(labels, return_counts=True)
    ids = ids[counts >= min_region_area * labels.numel()]
    return MaskSet(labels[None] == ids.view(-1, 1, 1), source)


# ------------------------------------------------------------------ given
def given_masks(masks: Any, size: tuple[int, int] | None = None, threshold: float = 0.5) -> MaskSet:
    """Masks from the caller -> :class:`MaskSet`.

    Arguments:
      masks: boolean or float ``(M, H, W)`` / ``(H, W)`` (a ComfyUI MASK ``(B, H, W)`` is M
        masks), numpy or torch; or an integer label map ``(H, W)`` (one mask per label).
      size: (H, W) to resize the masks to (nearest), e.g. that of the image.
      threshold: float masks are ``> threshold``.
    """
    t = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks).detach().cpu()
    if t.dim() == 2 and not t.is_floating_point() and t.dtype != torch.bool:
        t = t.long()
        m = _from_labels(t, 0.0, "given").masks
    elif t.dim() in (2, 3):
        m = t[None] if t.dim() == 2 else t
        m = m > threshold if m.is_floating_point() else m.bool()
    else:
        raise ValueError(f"masks must have shape (H, W) or (M, H, W), got {tuple(t.shape)}")
    if size is not None and tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[None].float(), size=tuple(size), mode="nearest")[0] > 0.5
    return MaskSet(m, "given")


# ------------------------------------------------------------------ one entry point
def _image_size(image: Any) -> tuple[int, int]:
    if isinstance(image, Prediction):
        return image.size
    if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[:2] == (1, 1):
        return tuple(image.shape[-2:])  # type: ignore[return-value]
    return to_rgb(image)[0].shape[:2]


def generate_masks(image: Any, source: Any = "auto", sam=None, **params) -> MaskSet:
    """Masks of an image from any source.

    Arguments:
      image: a Prediction, an L tensor ``(1, 1, H, W)``, or any image (module docstring).
      source: ``"sam"`` (needs ``sam``), ``"classical"``, ``"auto"`` (SAM when ``sam`` is
        given, else classical, and the result's ``note`` says so), or the masks themselves
        (anything :func:`given_masks` takes; resized to the image).
      sam: a loaded SAM model (:func:`load_sam`).
      params: passed to :func:`sam_masks` or :func:`classical_masks`.
    """
    if not isinstance(source, str):
        return given_masks(source, size=_image_size(image), **params)
    if source == "auto":
        if sam is not None:
            return sam_masks(image, sam, **params)
        out = classical_masks(image, **params)
        out.note = "no SAM model was given: used a classical segmentation instead"
        return out
    if source == "sam":
        if sam is None:
            raise ValueError("source='sam' needs a SAM model: load one with load_sam(checkpoint) or use source='classical'")
        return sam_masks(image, sam, **params)
    if source == "classical":
        return classical_masks(image, **params)
    raise ValueError(f"mask source must be 'sam', 'classical', 'auto' or masks, got {source!r}")


def masks_name(source: str) -> str:
    """A mask source id (``classical:felzenszwalb``, ``sam:vit_b``, ``given``) in words."""
    kind, _, detail = source.partition(":")
    if kind == "classical":
        return f"classical ({ {'felzenszwalb': 'Felzenszwalb', 'slic': 'SLIC'}.get(detail, detail)}) segmentation"
    if kind == "sam":
        return f"SAM ({detail}) masks" if detail.startswith("vit_") else "SAM masks"
    return f"{source} masks"


# ------------------------------------------------------------------ picture
def overlay(image: Any, masks: MaskSet, alpha: float = 0.5, max_side: int | None = 1024, seed: int = 0) -> Image.Image:
    """The grey image with each mask painted in its own colour (small masks on top) and
    its outline in white -> PIL RGB at the masks' size."""
    grey = grey_image(image, None)
    h, w = masks.size
    base = np.asarray(Image.fromarray(grey).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    colours = np.random.default_rng(seed).uniform(0.15, 1.0, size=(max(len(masks), 1), 3)).astype(np.float32)
    out = base.copy()
    m = masks.masks.numpy()
    for i in range(len(masks)):  # largest first, so smaller ones end on top
        out[m[i]] = (1 - alpha) * base[m[i]] + alpha * colours[i]
    for i in range(len(masks)):
        mi = m[i]
        edge = mi & ~(np.roll(mi, 1, 0) & np.roll(mi, -1, 0) & np.roll(mi, 1, 1) & np.roll(mi, -1, 1))
        out[edge] = 1.0
    pic = Image.fromarray(np.round(out * 255).astype(np.uint8), "RGB")
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        pic = pic.resize((round(w * s), round(h * s)), Image.BILINEAR)
    return pic
