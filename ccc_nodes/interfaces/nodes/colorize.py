"""The colorizing nodes: Model Loader, Grayscale -> Classes, Classes -> Lab, Colorize and Colorize
Sequence (a clip through the same job)."""

from __future__ import annotations

import copy

import torch

from ccc_nodes.core.hub import DEFAULT_MODEL, ModelLoadError
from ccc_nodes.core.settings import (
    HARMONIZE_CHOICES,
    INPUT_SIZE,
    PRECISIONS,
    Decoding,
    harmonization_for,
)
from ccc_nodes.interfaces.nodes.sockets import (
    _DEC,
    _DECODE,
    _SIZE,
    _TEMPERATURE,
    CATEGORY,
    DEVICES,
    _colorizer,
    _images,
    _managed,
    _predict,
    _Progress,
    _rendered,
    _run,
    _to_image,
    _with_size,
    class_map_image,
    local_models,
    model_folders,
    validate_inputs,
)
from ccc_nodes.job.colorizer import ColorizeResult
from ccc_nodes.steps.hints import HINT_DEFAULTS, Hint


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


class CCCColorizeSequence:
    """IMAGE batch of consecutive frames -> colorized IMAGE batch with stable colour: class
    probabilities carried along the optical flow, reset at scene cuts (METHOD.md s. 14); a
    colour hint and harmonisation reach every frame by the path a photo takes."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        from ccc_nodes.steps.temporal import TEMPORAL_DEFAULTS

        return {"required": {
            "ccc_model": ("CCC_MODEL",),
            "image": ("IMAGE", {"tooltip": "Consecutive frames of one clip, in order (e.g. Load Video's IMAGE)."}),
            "temporal": ("BOOLEAN", {"default": True, "tooltip": "Off: every frame on its own (as CCC++ Colorize)."}),
            "carry": ("FLOAT", {"default": TEMPORAL_DEFAULTS.carry, "min": 0.0, "max": 0.95, "step": 0.05,
                                "tooltip": "Weight of the previous frames' classes where the motion is reliable "
                                           "(0: frame by frame; higher: steadier colour, slower to change)."}),
            "decode": _DECODE, "temperature": _TEMPERATURE, "size": _SIZE},
            "optional": {
                "harmonize": (list(HARMONIZE_CHOICES), {"default": "off", "tooltip": "Make each object's colour "
                              "consistent in every frame: classical segmentation, or SAM (give sam_model)."}),
                "sam_model": ("SAM_MODEL", {"tooltip": "SAM, for harmonize = sam."}),
                "hint_color": ("STRING", {"default": "", "tooltip": "A colour hint for the whole clip, #RRGGBB "
                               "(empty: none), at the point x, y or on hint_mask."}),
                "hint_strength": ("FLOAT", {"default": HINT_DEFAULTS["strength"], "min": 0.0, "max": 1.0,
                                            "step": 0.05, "tooltip": "0: no effect; 1: the region takes the colour."}),
                "hint_x": ("INT", {"default": -1, "min": -1, "max": 1 << 16, "tooltip": "Point hint: pixel column."}),
                "hint_y": ("INT", {"default": -1, "min": -1, "max": 1 << 16, "tooltip": "Point hint: pixel row."}),
                "hint_mask": ("MASK", {"tooltip": "The hint's region, one mask for every frame (else the point)."}),
            }}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "colorize"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Colorizes a batch as a video: each frame's colour classes are blended with the previous "
                   "frames' warped by optical flow where the flow is reliable, and reset at scene cuts, so "
                   "colours do not flicker; a colour hint and harmonisation apply to every frame. Needs the "
                   "'video' extra (OpenCV).")

    def colorize(self, ccc_model, image, temporal=True, carry=None, decode=_DEC.mode,
                 temperature=_DEC.temperature, size=INPUT_SIZE, harmonize="off", sam_model=None, hint_color="",
                 hint_strength=HINT_DEFAULTS["strength"], hint_x=-1, hint_y=-1, hint_mask=None):
        from ccc_nodes.job.sequence import colorize_sequence
        from ccc_nodes.steps.temporal import TEMPORAL_DEFAULTS, TemporalSettings

        colorizer = copy.copy(_with_size(ccc_model, size))
        colorizer.decoding = Decoding(decode, temperature)
        _managed(colorizer.model, colorizer.device)  # inside ComfyUI: back on its device after an unload
        settings = TEMPORAL_DEFAULTS if carry is None else TemporalSettings(carry=carry)
        hints = _clip_hint(hint_color, hint_strength, hint_x, hint_y, hint_mask)
        harmonization = harmonization_for(harmonize)
        if harmonization is not None and harmonization.masks == "sam" and sam_model is None:
            raise ValueError("Colorize Sequence: harmonize = sam needs a sam_model (CCC++ SAM Loader); or use classical")
        frames = _images(image)
        progress, out = _Progress(len(frames)), []
        for rgb in colorize_sequence(colorizer, frames, temporal, settings, hints=hints, harmonization=harmonization,
                                     sam=None if sam_model is None else _managed(sam_model)):
            out.append(rgb)
            progress(len(out))
        return (_to_image(out),)


def _clip_hint(color: str, strength: float, x: int, y: int, mask: torch.Tensor | None) -> list[Hint]:
    """Colorize Sequence's hint inputs -> the clip's hints (none without a colour)."""
    if not color.strip():
        return []
    if mask is not None:
        if mask.dim() == 3 and mask.shape[0] != 1:
            raise ValueError(f"Colorize Sequence: hint_mask is one mask for the clip, got {mask.shape[0]}")
        return [Hint.on(mask.reshape(mask.shape[-2:]), color, strength)]
    if x < 0 or y < 0:
        raise ValueError("Colorize Sequence: a hint_color needs hint_x, hint_y >= 0 or a hint_mask")
    return [Hint.at(x, y, color, strength)]
