"""ComfyUI nodes (V1 contract) over the CCC++ core.

The node names follow the data flow of docs/ARCHITECTURE.md::

    CCC++ Model Loader -> CCC_MODEL            CCC++ SAM Loader -> SAM_MODEL
    IMAGE --[Grayscale -> Classes]--> CCC_CLASSES --[SAM Harmonize (+ SAM_MODEL or MASK)]-->
          CCC_CLASSES --[Classes -> Lab]--> IMAGE (colorized) + IMAGE (class map)
    IMAGE + reference IMAGE --[Metrics]--> table (output node)
    IMAGE --[Colorize]--> IMAGE                     (the common case in one node)

Sockets:
  IMAGE: float32 ``(B, H, W, 3)`` in 0..1 (ComfyUI's); MASK: float32 ``(B, H, W)`` in 0..1.
  CCC_MODEL: a :class:`~ccc_nodes.pipeline.Colorizer` (network + device + precision),
    cached by (source, revision, device, precision) so a model is loaded once per process.
  CCC_CLASSES: a :class:`ClassBatch`, one :class:`~ccc_nodes.pipeline.Prediction` per
    image (logits ``(1, K, h, w)`` at model resolution, full-resolution L ``(1, 1, H, W)``).
  SAM_MODEL: a segment-anything ``Sam`` network.

Every node handles batches (B > 1). Nothing here imports ``comfy`` at import time; inside
ComfyUI, model folders come from ``folder_paths`` (``models/ccc`` and ``models/sams``),
``device="auto"`` follows ComfyUI's device choice (``--cpu``), progress goes to its
progress bar. Outside ComfyUI the folders are ``$CCC_MODELS_DIR/ccc`` and ``/sams``
(default ``./models``). The nodes only parse inputs, call the core and format outputs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cache import MODELS, cached, source_key
from .classes import ColorClasses
from .extras import missing_module
from .harmonize import harmonize_with
from .hints import HINT_DEFAULTS, Hint, apply_hints, hint_regions, palette_prior, parse_color
from .hub import DEFAULT_MODEL, ModelLoadError, load_model, resolve_source
from .masks import SAM_MODEL_TYPES, MaskSet, given_masks, overlay
from .metrics import GREY_RULE, METRIC_NAMES, markdown_table, metric_classes, score_each
from .pipeline import Colorizer, ColorizeResult, Prediction, class_map_rgb, pick_device
from .settings import DECODE_MODES, INPUT_SIZE, PRECISIONS, SIZE_MULTIPLE, Decoding, Harmonization, check_size

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "ClassBatch",
    "class_map_image",
    "model_folders",
    "progress_hook",
]

CATEGORY = "CCC++"
DEVICES = ("auto", "cpu", "cuda", "mps")

try:  # inside ComfyUI: register our model folders beside its own
    import folder_paths  # type: ignore[import-not-found]
except ImportError:
    folder_paths = None
else:
    for _kind in ("ccc", "sams"):
        # Always ComfyUI/models/<kind> too: an extra_model_paths.yaml entry of that name adds its folders, it
        # does not hide this one; made now so users find where to put files.
        _default = os.path.join(folder_paths.models_dir, _kind)
        folder_paths.add_model_folder_path(_kind, _default)
        os.makedirs(_default, exist_ok=True)
    # ComfyUI owns the networks (its node outputs and model management hold them); the pack's
    # cache only spares a second load while they live, so POST /free returns their memory.
    MODELS.weak = True


# ------------------------------------------------------------------ helpers
def model_folders(kind: str) -> list[Path]:
    """Folders searched for local models of ``kind`` (``"ccc"`` or ``"sams"``)."""
    if folder_paths is not None:
        return [Path(p) for p in folder_paths.get_folder_paths(kind)]
    return [Path(os.environ.get("CCC_MODELS_DIR", "models")).expanduser() / kind]


SAM_SUFFIXES = (".pth", ".pt", ".safetensors")


def local_models(roots: Sequence[Path] | None = None) -> dict[str, Path]:
    """Name -> folder of every model folder (with a config.json) under ``roots``
    (default: the ``ccc`` model folders); the first root wins a name."""
    found: dict[str, Path] = {}
    for root in model_folders("ccc") if roots is None else roots:
        if root.is_dir():
            for cfg in sorted(root.glob("*/config.json")):
                found.setdefault(cfg.parent.name, cfg.parent)
    return found


def sam_checkpoints(roots: Sequence[Path] | None = None) -> dict[str, Path]:
    """Name -> file of every SAM checkpoint under ``roots`` (default: the ``sams`` folders)."""
    found: dict[str, Path] = {}
    for root in model_folders("sams") if roots is None else roots:
        if root.is_dir():
            for f in sorted(root.iterdir()):
                if f.suffix in SAM_SUFFIXES and f.is_file():
                    found.setdefault(f.name, f)
    return found


# The standalone server sets this to report progress and to stop on /interrupt; inside
# ComfyUI its own progress bar does both.
progress_hook: ContextVar[Callable[[int, int], None] | None] = ContextVar("ccc_progress_hook", default=None)


class _Progress:
    """Progress over ``total`` steps of one node, reported to whichever host runs it."""

    def __init__(self, total: int):
        self.total, self.bar, self.done = total, None, 0
        try:
            import comfy.utils  # type: ignore[import-not-found]

            self.bar = comfy.utils.ProgressBar(total)
        except ImportError:
            pass

    def __call__(self, done: int) -> None:
        self.done = done
        if self.bar is not None:
            self.bar.update_absolute(done, self.total)
        elif (hook := progress_hook.get()) is not None:
            hook(done, self.total)

    def check(self) -> None:
        """Give the host a chance to stop the node (an interrupt), reporting no new progress."""
        self(self.done)


def _rendered(results: list[ColorizeResult], progress: _Progress | None = None) -> list[torch.Tensor]:
    """Each result's RGB (decoded and joined with L on first use), the host's interrupt
    checked before each image."""
    progress = progress or _Progress(len(results))
    out = []
    for r in results:
        progress.check()
        out.append(r.rgb)
    return out


def _device(name: str) -> torch.device:
    if name == "auto":
        try:
            import comfy.model_management as mm  # type: ignore[import-not-found]

            return mm.get_torch_device()
        except ImportError:
            pass
    return pick_device(name)


def _image_tensor(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """An IMAGE ``(B, H, W, C)`` checked and clamped to 0..1 (float32, CPU). Core nodes give
    values slightly outside (ImageScale bicubic: -0.07..1.12); ComfyUI's own nodes clamp them."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected an IMAGE tensor (B, H, W, 3), got {shape}")
    return image.detach().float().cpu().clamp(0.0, 1.0)


def _images(image: torch.Tensor, name: str = "image") -> list[np.ndarray]:
    """IMAGE ``(B, H, W, C)`` -> B arrays ``(H, W, C)`` for the core's ``to_rgb``."""
    return [im.numpy() for im in _image_tensor(image, name)]


def validate_inputs(cls: type, **values) -> bool | str:
    """``VALIDATE_INPUTS`` for inputs that can only fail at run time: True, or the message
    the run would fail with, so the prompt is refused at once. A node names such inputs in
    its ``VALIDATE_INPUTS(cls, ...)`` and returns ``validate_inputs(cls, ...)``. ComfyUI
    then skips its own min/max/list checks of them, so they are done here first; then the
    core's own check of each input in ``RUNTIME_CHECKS``."""
    spec = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
    for name, value in values.items():
        wanted, extra = spec[name][0], (spec[name][1] if len(spec[name]) > 1 else {})
        if isinstance(wanted, list) and value not in wanted:
            return f"{name}: {value!r} is not one of {wanted}"
        if ("min" in extra and value < extra["min"]) or ("max" in extra and value > extra["max"]):
            return f"{name}: {value} is outside {extra.get('min')}..{extra.get('max')}"
        try:
            RUNTIME_CHECKS[name](value)
        except ValueError as e:
            return str(e)
    return True


def _check_device(name: str) -> None:
    if name != "auto":
        pick_device(name)  # ValueError naming what this machine lacks (no CUDA, no MPS)


# input name -> the core's check (ValueError with the message a run would give)
RUNTIME_CHECKS: dict[str, Callable[[object], object]] = {"size": check_size, "device": _check_device,
                                                          "color": parse_color}


def _to_image(rgb: list[torch.Tensor]) -> torch.Tensor:
    """sRGB ``(1, 3, H, W)`` each -> IMAGE ``(B, H, W, 3)`` float32 on the CPU."""
    return torch.cat([x.permute(0, 2, 3, 1) for x in rgb]).float().cpu().contiguous()


@dataclass
class ClassBatch:
    """CCC_CLASSES: the network's colour classes for each image of a batch.

    Attributes:
      predictions: one :class:`Prediction` per image (logits ``(1, K, h, w)`` at model
        resolution, full-resolution L ``(1, 1, H, W)``, the model's ColorClasses).
    """

    predictions: list[Prediction]

    def __len__(self) -> int:
        return len(self.predictions)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return self.predictions[0].size

    @property
    def color_classes(self) -> ColorClasses:
        """The model's colour classes (the a*b* codec), shared by the batch."""
        return self.predictions[0].classes


def class_map_image(pred: Prediction, lightness: float | None = None) -> torch.Tensor:
    """The class of each pixel (the harmonised one after SAM Harmonize, else the most
    probable) as a picture at the image size -> sRGB ``(1, 3, H, W)``: the core's
    :func:`~ccc_nodes.pipeline.class_map_rgb` (its constant L unless ``lightness``)."""
    if lightness is None:
        return class_map_rgb(pred.shown_class_map, pred.classes, pred.size)
    return class_map_rgb(pred.shown_class_map, pred.classes, pred.size, lightness)


# ------------------------------------------------------------------ model cache
# Models are loaded once per key into the process's one cache (ccc_nodes.cache), so
# re-running a graph never reloads them.

class _Held(torch.nn.Module):
    """What ComfyUI's ModelPatcher manages for a network whose ``device`` is a read-only
    property (segment-anything's ``Sam``): the patcher assigns ``model.device`` when it loads
    and offloads, which such a network refuses. The holder takes the assignment and moves the
    network with itself (it is its only submodule)."""

    def __init__(self, net: torch.nn.Module, device: torch.device):
        super().__init__()
        self.net, self.device = net, device


def _device_is_read_only(net: torch.nn.Module) -> bool:
    attr = getattr(type(net), "device", None)
    return isinstance(attr, property) and attr.fset is None


def _managed(net: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """Inside ComfyUI, call before a node runs ``net``: it is handed to ComfyUI's model
    management (a ModelPatcher loaded with ``load_models_gpu``, as ComfyUI's CLIP vision
    models are), which puts it on ``device`` now and moves it back to its offload device
    when memory is needed, on "Unload models" and on ``POST /free``. ``device``: where it
    runs (given the first time). Outside ComfyUI nothing happens."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
        import comfy.model_patcher  # type: ignore[import-not-found]
    except ImportError:
        return net
    patcher = getattr(net, "_ccc_patcher", None)  # kept on the network: both go when the network is dropped
    if patcher is None:
        device = device if device is not None else next(net.parameters()).device
        model = _Held(net, next(net.parameters()).device) if _device_is_read_only(net) else net
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device())
        net._ccc_patcher = patcher
    mm.load_models_gpu([patcher])
    return net


def _colorizer(source: str, revision: str | None, device: str, precision: str) -> Colorizer:
    dev = _device(device)

    def load() -> Colorizer:
        # Inside ComfyUI a Hub model lands in models/ccc/<owner>--<name>, where users see and manage it
        # (and the loader lists it next time), not in the Hugging Face cache.
        hub_id = folder_paths is not None and isinstance(resolve_source(source), str)
        local_dir = Path(folder_paths.models_dir, "ccc", source.replace("/", "--")) if hub_id else None
        return Colorizer(load_model(source, revision=revision, local_dir=local_dir), device=dev, precision=precision)

    return cached(("ccc", source_key(source), revision, str(dev), precision), load)


def _with_size(colorizer: Colorizer, size: int) -> Colorizer:
    """The same network and device at another input size (a shallow copy, no reload)."""
    if colorizer.size == size:
        return colorizer
    check_size(size)
    other = copy.copy(colorizer)
    other.size = size
    return other


def _chunked(colorizer: Colorizer, items: list, call: Callable[[list], list],
             progress: _Progress | None = None) -> list:
    """``call`` over the images of a batch in chunks, progress reported after each."""
    _managed(colorizer.model, colorizer.device)
    step = colorizer.batch_size if colorizer.device.type != "cpu" else 1  # CPU: batching does not pay (README)
    progress = progress or _Progress(len(items))
    out: list = []
    for start in range(0, len(items), step):
        out += call(items[start : start + step])
        progress(len(out))
    return out


def _predict(colorizer: Colorizer, image: torch.Tensor) -> ClassBatch:
    return ClassBatch(_chunked(colorizer, _images(image), colorizer.predict))


def _run(colorizer: Colorizer, image: torch.Tensor, **job) -> list[torch.Tensor]:
    """:meth:`Colorizer.run` over a batch, in chunks, with progress -> each image's RGB."""
    items = _images(image)
    progress = _Progress(len(items))
    return _rendered(_chunked(colorizer, items, lambda chunk: colorizer.run(chunk, **job), progress), progress)


# ------------------------------------------------------------------ nodes
_DEC, _HARM = Decoding(), Harmonization()  # the defaults of the widgets below (settings.py)
_SIZE = ("INT", {"default": INPUT_SIZE, "min": SIZE_MULTIPLE, "max": 2048, "step": SIZE_MULTIPLE,
                 "tooltip": f"Square input size of the network, a multiple of {SIZE_MULTIPLE} (paper: 224)."})
_DECODE = (list(DECODE_MODES), {"default": _DEC.mode,
                                "tooltip": "argmax: bin centre of the most probable class (paper, Eq. 17-18); "
                                           "annealed-mean: softmax(logits/T)-weighted mean of the centres; "
                                           "confident: argmax, muted where the model is unsure of the hue."})
_TEMPERATURE = ("FLOAT", {"default": _DEC.temperature, "min": 0.01, "max": 10.0, "step": 0.01,
                          "tooltip": f"Annealed-mean temperature T (Zhang et al. 2016: {_DEC.temperature:g})."})


class CCCModelLoader:
    """Load a CCC++ model (embedded default, a folder under models/ccc, a Hub repo id or a path)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "model": ([DEFAULT_MODEL, *local_models()], {
                    "default": DEFAULT_MODEL,
                    "tooltip": "'default': the model embedded in the package; other names are folders "
                               "(config.json + model.safetensors) under models/ccc."}),
                "device": (list(DEVICES), {"default": "auto", "tooltip": "auto: ComfyUI's device, else CUDA > MPS > CPU."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "auto: bf16/fp16 on GPU, fp32 on CPU."}),
            },
            "optional": {
                "repo_or_path": ("STRING", {"default": "", "tooltip": "Overrides 'model': a Hugging Face Hub repo "
                                            "id (owner/name) or a local model folder."}),
                "revision": ("STRING", {"default": "", "tooltip": "Hub branch, tag or commit (Hub ids only)."}),
            },
        }

    RETURN_TYPES = ("CCC_MODEL",)
    RETURN_NAMES = ("ccc_model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads a CCC++ colour-classification model once and keeps it in memory."

    @classmethod
    def VALIDATE_INPUTS(cls, device):  # noqa: N802 - ComfyUI's name
        return validate_inputs(cls, device=device)

    def load(self, model, device, precision, repo_or_path="", revision=""):
        source = repo_or_path.strip() or model
        if source != DEFAULT_MODEL and not repo_or_path.strip():
            local = local_models()
            if source not in local:
                raise ModelLoadError(f"model {source!r} is not a folder under {', '.join(map(str, model_folders('ccc')))}")
            source = str(local[source])
        return (_colorizer(source, revision.strip() or None, device, precision),)


class CCCGrayscaleToClasses:
    """IMAGE -> CCC_CLASSES: the network's class logits per image (METHOD.md s. 5)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"ccc_model": ("CCC_MODEL",), "image": ("IMAGE",), "size": _SIZE}}

    RETURN_TYPES = ("CCC_CLASSES",)
    RETURN_NAMES = ("classes",)
    FUNCTION = "predict"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Predicts colour-class logits at model resolution (1/4 of the input size) and keeps each "
                   "image's full-resolution lightness. Colour inputs are read as grey (their L).")

    @classmethod
    def VALIDATE_INPUTS(cls, size):  # noqa: N802
        return validate_inputs(cls, size=size)

    def predict(self, ccc_model, image, size=INPUT_SIZE):
        return (_predict(_with_size(ccc_model, size), image),)


class CCCClassesToLab:
    """CCC_CLASSES -> colorized IMAGE (decoded a*b* + full-res L) and the class map."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"classes": ("CCC_CLASSES",), "decode": _DECODE, "temperature": _TEMPERATURE}}

    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "class_map")
    FUNCTION = "decode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Decodes classes to a*b* (Eq. 17-18), upsamples them to the full size and joins them with "
                   "the original L. class_map shows each pixel's most probable class at constant L.")

    def decode(self, classes, decode=_DEC.mode, temperature=_DEC.temperature):
        decoding = Decoding(decode, temperature)
        images = _rendered([ColorizeResult(p, decoding) for p in classes.predictions])
        maps = [class_map_image(p) for p in classes.predictions]
        return (_to_image(images), _to_image(maps))


class CCCColorize:
    """IMAGE -> colorized IMAGE in one node (Grayscale -> Classes -> Lab)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"ccc_model": ("CCC_MODEL",), "image": ("IMAGE",), "decode": _DECODE,
                             "temperature": _TEMPERATURE, "size": _SIZE}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "colorize"
    CATEGORY = CATEGORY
    DESCRIPTION = "Colorizes images with CCC++: classes at model resolution, a*b* upsampled, original L kept."

    @classmethod
    def VALIDATE_INPUTS(cls, size):  # noqa: N802
        return validate_inputs(cls, size=size)

    def colorize(self, ccc_model, image, decode=_DEC.mode, temperature=_DEC.temperature, size=INPUT_SIZE):
        return (_to_image(_run(_with_size(ccc_model, size), image, decoding=Decoding(decode, temperature))),)


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
    def VALIDATE_INPUTS(cls, device, checkpoint=None, repo_or_path=""):  # noqa: N802 - an empty models/sams is fine with a path
        if (ok := validate_inputs(cls, device=device)) is not True:
            return ok
        if (repo_or_path or "").strip() or checkpoint in cls.checkpoints():
            return True
        what = f"no SAM checkpoint {checkpoint!r}" if checkpoint else "no SAM checkpoint chosen"
        return f"{what} under {', '.join(map(str, cls.folders()))}: place a .pth there or give repo_or_path"

    def load(self, model_type, device, checkpoint=None, repo_or_path=""):
        from .masks import load_sam

        if not (source := (repo_or_path or "").strip()):
            found = self.checkpoints()
            if checkpoint not in found:
                raise ModelLoadError(f"no SAM checkpoint {checkpoint!r} under {', '.join(map(str, self.folders()))}")
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


class CCCMetrics:
    """IMAGE + reference IMAGE -> a table of the paper's metrics, shown on the node."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {
            "required": {"image": ("IMAGE",), "reference": ("IMAGE", {"tooltip": "Ground-truth colour images."})},
            "optional": {"ccc_model": ("CCC_MODEL", {"tooltip": "Its colour classes are used for TAR, CNR and "
                                                     "CCAR; without it, the embedded default model's classes "
                                                     "(as `ccc evaluate --pred`)."})},
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("table",)
    FUNCTION = "measure"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = ("MSE, PSNR, SSIM, UIQI, CNR, CCAR, TAR and colourfulness (METHOD.md s. 10) of each image "
                   "against its reference; the reference is resized to the image when sizes differ. Class "
                   "metrics use the connected model's colour classes, else the embedded default model's "
                   "(the same rule as `ccc evaluate`). PSNR of identical images is 100 dB.")

    def measure(self, image, reference, ccc_model=None):
        pred = _image_tensor(image)[..., :3].permute(0, 3, 1, 2)
        gt = _image_tensor(reference, "reference")[..., :3].permute(0, 3, 1, 2)
        if gt.shape[0] not in (1, pred.shape[0]):
            raise ValueError(f"reference: {gt.shape[0]} images for {pred.shape[0]}; give one each, or one for all")
        if gt.shape[-2:] != pred.shape[-2:]:
            gt = torch.nn.functional.interpolate(gt, size=pred.shape[-2:], mode="bilinear", antialias=True,
                                                 align_corners=False)
        gt = gt.expand(pred.shape[0], -1, -1, -1)
        classes, _ = metric_classes(ccc_model.classes if ccc_model is not None else None)
        each, total, grey = score_each(pred, gt, classes)  # a grey reference: left out of the total, as ccc evaluate
        rows = {f"image {i + 1}": row for i, row in enumerate(each)}
        grey = [i + 1 for i in grey]
        if pred.shape[0] > 1 and total is not None:
            rows["all" if not grey else "all colour references"] = total
        # grid: the node does not know the network's input size, so its grid cannot be found here
        table = markdown_table(rows, [k for k in METRIC_NAMES if k not in ("lpips", "fid", "grid")])
        if grey:
            which = f"Reference {grey[0]} is" if len(grey) == 1 else f"References {', '.join(map(str, grey))} are"
            table += (f"\n\n{which} grey ({GREY_RULE}): there are no colours to score against, "
                      "so CNR and TAR are n/a there" + (f", and 'all colour references' leaves {'it' if len(grey) == 1 else 'them'} out."
                                                     if len(rows) > len(grey) else
                      ". Connect the colour original as the reference."))
        return {"ui": {"text": [table]}, "result": (table,)}


def _per_image(batch: torch.Tensor | None, n: int, name: str) -> list:
    """A batch input of one plane per image, or one for all -> n entries (or n Nones)."""
    if batch is None:
        return [None] * n
    if batch.shape[0] not in (1, n):
        raise ValueError(f"{name}: {batch.shape[0]} given for {n} images; give one per image, or one for all")
    return [batch[i if batch.shape[0] == n else 0] for i in range(n)]


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
        hints = [Hint.on(m, color, strength) if m is not None else Hint.at(x, y, color, strength) for m in masks]
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


NODE_CLASS_MAPPINGS = {
    "CCCModelLoader": CCCModelLoader,
    "CCCGrayscaleToClasses": CCCGrayscaleToClasses,
    "CCCClassesToLab": CCCClassesToLab,
    "CCCColorize": CCCColorize,
    "CCCSAMLoader": CCCSAMLoader,
    "CCCSAMHarmonize": CCCSAMHarmonize,
    "CCCMetrics": CCCMetrics,
    "CCCColorHint": CCCColorHint,
    "CCCReferencePalette": CCCReferencePalette,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CCCModelLoader": "CCC++ Model Loader",
    "CCCGrayscaleToClasses": "CCC++ Grayscale → Classes",
    "CCCClassesToLab": "CCC++ Classes → Lab",
    "CCCColorize": "CCC++ Colorize",
    "CCCSAMLoader": "CCC++ SAM Loader",
    "CCCSAMHarmonize": "CCC++ SAM Harmonize",
    "CCCMetrics": "CCC++ Metrics",
    "CCCColorHint": "CCC++ Colour Hint",
    "CCCReferencePalette": "CCC++ Reference Palette",
}


class CCCColorizeSequence:
    """IMAGE batch of consecutive frames -> colorized IMAGE batch with stable colour: class
    probabilities carried along the optical flow, reset at scene cuts (METHOD.md s. 14)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        from .temporal import TEMPORAL_DEFAULTS

        return {"required": {
            "ccc_model": ("CCC_MODEL",),
            "image": ("IMAGE", {"tooltip": "Consecutive frames of one clip, in order (e.g. Load Video's IMAGE)."}),
            "temporal": ("BOOLEAN", {"default": True, "tooltip": "Off: every frame on its own (as CCC++ Colorize)."}),
            "carry": ("FLOAT", {"default": TEMPORAL_DEFAULTS.carry, "min": 0.0, "max": 0.95, "step": 0.05,
                                "tooltip": "Weight of the previous frames' classes where the motion is reliable "
                                           "(0: frame by frame; higher: steadier colour, slower to change)."}),
            "decode": _DECODE, "temperature": _TEMPERATURE, "size": _SIZE}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "colorize"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Colorizes a batch as a video: each frame's colour classes are blended with the previous "
                   "frames' warped by optical flow where the flow is reliable, and reset at scene cuts, so "
                   "colours do not flicker. Needs the 'video' extra (OpenCV).")

    def colorize(self, ccc_model, image, temporal=True, carry=None, decode=_DEC.mode,
                 temperature=_DEC.temperature, size=INPUT_SIZE):
        from .temporal import TEMPORAL_DEFAULTS, TemporalSettings, colorize_sequence

        colorizer = copy.copy(_with_size(ccc_model, size))
        colorizer.decoding = Decoding(decode, temperature)
        _managed(colorizer.model, colorizer.device)  # inside ComfyUI: back on its device after an unload
        settings = TEMPORAL_DEFAULTS if carry is None else TemporalSettings(carry=carry)
        frames = _images(image)
        progress, out = _Progress(len(frames)), []
        for rgb in colorize_sequence(colorizer, frames, temporal, settings):
            out.append(rgb)
            progress(len(out))
        return (_to_image(out),)


NODE_CLASS_MAPPINGS["CCCColorizeSequence"] = CCCColorizeSequence
NODE_DISPLAY_NAME_MAPPINGS["CCCColorizeSequence"] = "CCC++ Colorize Sequence (video)"
