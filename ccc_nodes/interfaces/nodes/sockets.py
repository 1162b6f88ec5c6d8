"""The sockets: how ComfyUI's values cross to the core and back, shared by every node.

IMAGE and MASK tensors to images and masks, the CCC_MODEL cache, CCC_CLASSES
(:class:`ClassBatch`), devices, progress (ComfyUI's bar, or :data:`progress_hook` in the
standalone server), input checks before a run, ComfyUI's model folders and memory
management, and the widgets' defaults (the core's settings).
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

from ccc_nodes.core.cache import MODELS, cached, source_key
from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.hub import load_model, resolve_source
from ccc_nodes.core.prediction import Prediction, class_map_rgb, pick_device
from ccc_nodes.core.settings import (
    DECODE_MODES,
    INPUT_SIZE,
    SIZE_MULTIPLE,
    Decoding,
    Harmonization,
    check_size,
)
from ccc_nodes.job.colorizer import Colorizer, ColorizeResult
from ccc_nodes.steps.hints import parse_color

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
    :func:`~ccc_nodes.core.prediction.class_map_rgb` (its constant L unless ``lightness``)."""
    if lightness is None:
        return class_map_rgb(pred.shown_class_map, pred.classes, pred.size)
    return class_map_rgb(pred.shown_class_map, pred.classes, pred.size, lightness)


# ------------------------------------------------------------------ model cache
# Models are loaded once per key into the process's one cache (ccc_nodes.core.cache), so
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


# ------------------------------------------------------------------ widgets
_DEC, _HARM = Decoding(), Harmonization()  # the defaults of the widgets below (settings.py)
_SIZE = ("INT", {"default": INPUT_SIZE, "min": SIZE_MULTIPLE, "max": 2048, "step": SIZE_MULTIPLE,
                 "tooltip": f"Square input size of the network, a multiple of {SIZE_MULTIPLE} (paper: 224)."})
_DECODE = (list(DECODE_MODES), {"default": _DEC.mode,
                                "tooltip": "argmax: bin centre of the most probable class (paper, Eq. 17-18); "
                                           "annealed-mean: softmax(logits/T)-weighted mean of the centres; "
                                           "confident: argmax, muted where the model is unsure of the hue."})
_TEMPERATURE = ("FLOAT", {"default": _DEC.temperature, "min": 0.01, "max": 10.0, "step": 0.01,
                          "tooltip": f"Annealed-mean temperature T (Zhang et al. 2016: {_DEC.temperature:g})."})
