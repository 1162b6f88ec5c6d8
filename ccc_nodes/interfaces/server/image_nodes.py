"""``LoadImage``, ``SaveImage`` and ``PreviewImage`` with ComfyUI's names, sockets and
``ui`` answers, so a workflow that uses them runs unchanged on this server and in ComfyUI.

They are built per server (:func:`image_nodes`) because they read and write that server's
folders. Inside ComfyUI its own nodes of the same names are used instead.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence
from PIL.PngImagePlugin import PngInfo

from ccc_nodes.core.images import ImageError, check_frames, open_image, to_rgb
from ccc_nodes.interfaces.server.files import FileError, Folders, safe_parts, sha256_file

__all__ = ["MAX_FRAMES", "image_nodes"]

MAX_FRAMES = 256  # frames of a multi-frame file loaded as one batch


def _save_png(image: Image.Image, folder: Path, stem: str, counter: int, pnginfo: PngInfo | None,
              compress_level: int) -> tuple[str, int]:
    """Save as ``{stem}_{counter:05}_.png``; never overwrites, never leaves half a file."""
    tmp = folder / f".part-{secrets.token_hex(8)}.png"
    image.save(tmp, pnginfo=pnginfo, compress_level=compress_level)
    try:
        while True:
            name = f"{stem}_{counter:05}_.png"
            try:
                os.link(tmp, folder / name)  # atomic, and fails if the name is taken
                return name, counter + 1
            except FileExistsError:
                counter += 1
    finally:
        tmp.unlink(missing_ok=True)


def _next_counter(folder: Path, stem: str) -> int:
    best = 0
    prefix = f"{stem}_"
    for f in folder.glob(f"{stem}_*_.png"):
        digits = f.name[len(prefix) : -len("_.png")]
        if digits.isdigit():
            best = max(best, int(digits))
    return best + 1


def image_nodes(folders: Folders, max_pixels: int) -> dict[str, type]:
    """The three image nodes bound to ``folders``; images over ``max_pixels`` are refused."""

    class LoadImage:
        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's names
            return {"required": {"image": (folders.list_images("input"), {"image_upload": True})}}

        CATEGORY = "image"
        RETURN_TYPES = ("IMAGE", "MASK")
        FUNCTION = "load_image"
        DESCRIPTION = "Loads an image from the input folder: IMAGE (B,H,W,3) and MASK = 1 - alpha (B,H,W)."

        def load_image(self, image):
            path = folders.resolve(folders.input, image, must_exist=True)
            check_frames(path, max_pixels, MAX_FRAMES)  # all frames together within the limit, before decoding
            open_image(path, max_pixels)  # refuses non-images, decompression bombs, broken files
            frames, masks = [], []
            with Image.open(path) as im:
                for frame in ImageSequence.Iterator(im):
                    if len(frames) == MAX_FRAMES:
                        break
                    rgb, alpha = to_rgb(frame.copy(), max_pixels)  # EXIF orientation applied
                    if frames and rgb.shape != frames[0].shape:
                        continue  # ComfyUI keeps only frames of the first frame's size
                    frames.append(rgb)
                    masks.append(1.0 - alpha if alpha is not None else np.zeros((64, 64), np.float32))
            if len({m.shape for m in masks}) > 1:
                h, w = frames[0].shape[:2]
                masks = [m if m.shape == (h, w) else np.zeros((h, w), np.float32) for m in masks]
            return (torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(masks)))

        @classmethod
        def IS_CHANGED(cls, image):  # noqa: N802
            return sha256_file(folders.resolve(folders.input, image, must_exist=True))

        @classmethod
        def VALIDATE_INPUTS(cls, image):  # noqa: N802
            try:
                folders.resolve(folders.input, image, must_exist=True)
            except FileError as e:
                return f"Invalid image file: {image} ({e})"
            return True

    class SaveImage:
        kind, compress_level, suffix = "output", 4, ""

        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802
            return {
                "required": {
                    "images": ("IMAGE", {"tooltip": "The images to save."}),
                    "filename_prefix": ("STRING", {"default": "ComfyUI",
                                                   "tooltip": "Prefix of the file names; may start with sub/folders/."}),
                },
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
            }

        RETURN_TYPES = ()
        FUNCTION = "save_images"
        OUTPUT_NODE = True
        CATEGORY = "image"
        DESCRIPTION = "Saves the images as PNG (with the workflow in its metadata) to the output folder."

        def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
            if not isinstance(images, torch.Tensor) or images.dim() != 4:
                raise ImageError(f"images must be an IMAGE tensor (B, H, W, 3), got {type(images).__name__}")
            parts = safe_parts(filename_prefix + self.suffix, "filename_prefix")
            root = folders.root(self.kind)
            folder = folders.resolve(root, parts[-1], "/".join(parts[:-1])).parent
            folder.mkdir(parents=True, exist_ok=True)
            subfolder = "/".join(parts[:-1])
            meta = PngInfo()
            if prompt is not None:
                meta.add_text("prompt", json.dumps(prompt))
            for key, value in (extra_pnginfo or {}).items():
                meta.add_text(key, json.dumps(value))
            counter = _next_counter(folder, parts[-1])
            results = []
            for batch_number, image in enumerate(images):
                array = np.clip(image.detach().float().cpu().numpy() * 255.0, 0, 255).astype(np.uint8)  # as ComfyUI
                stem = parts[-1].replace("%batch_num%", str(batch_number))
                name, counter = _save_png(Image.fromarray(array), folder, stem, counter, meta, self.compress_level)
                results.append({"filename": name, "subfolder": subfolder, "type": self.kind})
            return {"ui": {"images": results}}

    class PreviewImage(SaveImage):
        kind, compress_level = "temp", 1

        def __init__(self):
            self.suffix = "_temp_" + secrets.token_hex(3)

        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802
            return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

        DESCRIPTION = "Shows the images (saved to the temp folder)."

        def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
            return super().save_images(images, "ComfyUI", prompt, extra_pnginfo)

    return {"LoadImage": LoadImage, "SaveImage": SaveImage, "PreviewImage": PreviewImage}
