"""Reading images of any common kind into float RGB, with clear errors.

Handles PIL images of every mode (grey, RGB, RGBA, palette, 16-bit, float, CMYK),
numpy arrays and torch tensors, and any EXIF orientation. Everything becomes an RGB
float array in [0, 1] plus an optional alpha channel, converted once at this boundary.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "EVAL_SIZE",
    "GREY_TOLERANCE",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "ImageError",
    "ImageTooLarge",
    "check_frames",
    "eval_crop",
    "is_grey",
    "open_image",
    "part_file",
    "to_rgb",
]

MAX_PIXELS = 100_000_000  # refuse larger images (decompression bombs) unless told otherwise
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".tga"}
# A photo is grey when its channels, in uint8 levels, differ by at most this anywhere.
GREY_TOLERANCE = 3
# The evaluation view (METHOD.md section 10): shorter side resized to this, centre square.
EVAL_SIZE = 256
_GREY_ROWS = 1 << 20  # pixels per slice when looking for colour (bounded memory, an early answer)


EXIF_ORIENTATION = 0x0112  # EXIF tag
_FLOAT_SLACK = 0.01  # float inputs may overshoot [0, 1] this much (resampling), no more


class ImageError(ValueError):
    """An input is not a usable image; the message names it and says why."""


class ImageTooLarge(ImageError):
    """An image over the pixel limit, refused before decoding; ``pixels`` is its size."""

    def __init__(self, message: str, pixels: int):
        super().__init__(message)
        self.pixels = pixels


_PIL_GUARD = threading.Lock()


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file fully (EXIF orientation applied); refuse bombs and non-images.

    ``max_pixels`` (0: no limit) is the one limit: Pillow's own decompression-bomb guard
    (about 89 MP warns, 179 MP refuses) is replaced by it for this file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        try:
            return _open(path, max_pixels)
        except Image.DecompressionBombError:
            # Past Pillow's own guard (a process-wide setting): read the header again with
            # the guard lifted, serialised and always put back, so max_pixels decides - and
            # a refusal still names the size - before anything is decoded.
            with _PIL_GUARD:
                guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    return _open(path, max_pixels)
                finally:
                    Image.MAX_IMAGE_PIXELS = guard
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused, too many pixels ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{path}: not an image file PIL can read") from e
    except OSError as e:
        if e.errno is not None:  # the system's refusal (permission, a folder, an I/O error), not the file's content
            raise ImageError(f"{path}: cannot be read: {(e.strerror or str(e)).lower()}") from e
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from e
    except (SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from e


def _open(path: Path, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides
        with Image.open(path) as im:
            _check_size(im.size, max_pixels, str(path))
            im.load()
            return ImageOps.exif_transpose(im)


# Multi-frame formats whose frames (pages) have sizes of their own; GIF and APNG frames share a canvas.
_PAGED = ("TIFF", "MPO")


def check_frames(path: str | os.PathLike, max_pixels: int, max_frames: int) -> int:
    """The frames a loader would take from ``path`` (at most ``max_frames``), after
    checking from the headers alone that all of them together (canvas size x frames, or
    the sum of the pages' own sizes in a multi-page TIFF) stay
    within ``max_pixels`` (0: no limit): the one limit bounds a multi-frame file's whole
    batch, not each frame. Raises :class:`ImageTooLarge` before anything is decoded."""
    name = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _PIL_GUARD:
                guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    im = Image.open(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = guard
            with im:
                frames = min(max(int(getattr(im, "n_frames", 1)), 1), max_frames)
                w, h = im.size
                sizes = [(w, h)] * frames
                if frames > 1 and im.format in _PAGED:  # each page has a size of its own, in its header
                    sizes = []
                    for i in range(frames):
                        im.seek(i)
                        sizes.append(im.size)
    except OSError as e:
        if e.errno is not None:
            raise ImageError(f"{name}: cannot be read: {(e.strerror or str(e)).lower()}") from e
        raise ImageError(f"{name}: not an image file PIL can read ({e})") from e
    except (SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: not an image file PIL can read ({e})") from e
    total = sum(a * b for a, b in sizes)
    w, h = max(sizes, key=lambda s: s[0] * s[1])
    if max_pixels and total > max_pixels and frames > 1:
        shape = f"{w}x{h}" if len(set(sizes)) == 1 else f"up to {w}x{h}"
        raise ImageTooLarge(
            f"{name}: refused, {frames} frames of {shape} = {pixels(total)} in all is over the limit of "
            f"{pixels(max_pixels)} (a multi-frame bomb, or raise the limit)", total)
    _check_size((w, h), max_pixels, name)
    return frames


def pixels(n: float) -> str:
    """A pixel count in words: ``81 MP``, ``1.5 MP``, ``1,000 pixels`` (a limit under one
    megapixel is not written as 0 MP)."""
    if n >= 10e6:
        return f"{n / 1e6:.0f} MP"
    if n >= 1e6:
        return f"{n / 1e6:.1f}".removesuffix(".0") + " MP"
    return f"{n:,.0f} pixels"


def _check_size(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: empty image ({w}x{h})")
    if max_pixels and w * h > max_pixels:
        raise ImageTooLarge(
            f"{name}: refused, {w}x{h} = {pixels(w * h)} is over the limit of "
            f"{pixels(max_pixels)} (a decompression bomb, or raise the limit)",
            w * h,
        )


def _pil_to_array(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """PIL (orientation already applied) -> (RGB float, alpha or None). 8-bit modes are
    scaled by 255, 16-bit ("I;16*") by 65535. Pillow's 32-bit "I" holds either 16-bit
    files' data (by 65535) or converted 8-bit data (convert("I"): by 255); values above
    255 tell which. Float "F" in [0, 1] is taken as is, larger values as 0..255."""
    alpha = None
    if im.mode == "PA" or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    elif im.mode == "La":  # premultiplied alpha; Pillow converts these only to their plain twin
        im = im.convert("LA")
    elif im.mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(im, dtype=np.float32)
        sixteen = im.mode.startswith("I;16") or grey.max(initial=0) > 255
        grey = np.clip(grey / (65535.0 if sixteen else 255.0), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2), alpha
    if im.mode == "F":  # Pillow's float mode holds either scale: convert("F") gives 0..255
        grey = np.asarray(im, dtype=np.float32)
        if not np.isfinite(grey).all():
            raise ImageError("image holds NaN or infinite values")
        grey = grey / 255.0 if grey.max(initial=0) > 1.0 else grey
        return np.repeat(grey[..., None], 3, axis=2), alpha
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return rgb, alpha


def _array_to_rgb(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype == np.uint16:
        x = x.astype(np.float32) / 65535.0
    elif x.dtype == bool or np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    else:
        raise ImageError(f"unsupported array dtype {x.dtype}: use uint8, uint16 or float in [0, 1]")
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    alpha = None
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    elif x.ndim == 3 and x.shape[2] in (3, 4):
        if x.shape[2] == 4:
            alpha, x = x[..., 3], x[..., :3]
    else:
        raise ImageError(f"array of shape {x.shape} is not an image: use (H, W), (H, W, 1|3|4)")
    if not np.isfinite(x).all():
        raise ImageError("image holds NaN or infinite values")
    lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
    if lo < -_FLOAT_SLACK or hi > 1.0 + _FLOAT_SLACK:
        raise ImageError(f"float image values must lie in [0, 1], these span [{lo:.4g}, {hi:.4g}]"
                         + ("; divide 0..255 data by 255" if hi > 1.0 + _FLOAT_SLACK else ""))
    return np.clip(x, 0.0, 1.0), alpha  # only resampling overshoot is clipped


def to_rgb(image: Any, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray | None]:
    """Any image -> (RGB float32 ``(H, W, 3)`` in [0, 1], alpha ``(H, W)`` or None).

    Accepts a path, a PIL image, a numpy array ``(H, W)`` / ``(H, W, 1|3|4)`` or a torch
    tensor ``(H, W)`` / ``(C, H, W)`` with C in 1, 3, 4 (channels first, as torchvision).
    """
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, max_pixels)
    if isinstance(image, Image.Image):
        _check_size(image.size, max_pixels, "image")
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # (open_image has applied it already)
            image = ImageOps.exif_transpose(image)
        return _pil_to_array(image)
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported: no import here (fast CLI)
    if torch is not None and isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        elif t.dim() != 2:
            raise ImageError(f"tensor of shape {tuple(image.shape)} is not an image: use (H, W) or (C, H, W)")
        image = t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            _check_size((image.shape[1], image.shape[0]), max_pixels, "image")
        return _array_to_rgb(image)
    raise ImageError(f"cannot read an image from {type(image).__name__}")


def is_grey(rgb: Any, tol: int = GREY_TOLERANCE) -> bool:
    """Whether an RGB photo holds no colour: in uint8 levels (floats in [0, 1] rounded),
    max |R - G| and max |G - B| are at most ``tol`` everywhere.

    The one rule of "is this photo grey": training skips such photos (they teach nothing
    about colour), ``ccc evaluate`` and the Metrics node do not score against them (there
    are no colours to score against), the Space does not keep such an upload as the
    reference. ``rgb``: a numpy array ``(H, W, 3)`` (uint8, or float in [0, 1]) or a
    torch tensor ``(3, H, W)`` (channels first, as :func:`to_rgb` reads tensors)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(rgb, torch.Tensor):
        t = rgb.detach().cpu()
        if t.dim() != 3 or t.shape[0] != 3:
            raise ImageError(f"is_grey takes an RGB tensor (3, H, W), got {tuple(t.shape)}")
        rgb = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).permute(1, 2, 0).numpy()
    x = np.asarray(rgb)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ImageError(f"is_grey takes an RGB array (H, W, 3), got {x.shape}")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise ImageError(f"is_grey takes uint8 or float in [0, 1], got {x.dtype}")
    step = max(1, _GREY_ROWS // max(1, x.shape[1]))
    for top in range(0, x.shape[0], step):
        part = x[top : top + step]
        if part.dtype == np.uint8:
            levels = part.astype(np.int16)
        else:
            levels = np.round(np.clip(part, 0, 1) * 255).astype(np.int16)
        if np.abs(levels[..., 0] - levels[..., 1]).max(initial=0) > tol or \
                np.abs(levels[..., 1] - levels[..., 2]).max(initial=0) > tol:
            return False
    return True


def eval_crop(image: Any, size: int = EVAL_SIZE, max_pixels: int = MAX_PIXELS):
    """Any image -> the evaluation view, sRGB torch ``(3, size, size)`` in [0, 1]: shorter
    side resized to ``size`` (bilinear, antialiased), centre square (METHOD.md section 10).
    The one crop of ``ccc evaluate`` and the Space's metrics."""
    import torch
    import torch.nn.functional as F

    rgb, _ = to_rgb(image, max_pixels)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    if min(h, w) != size:
        s = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                          antialias=True, align_corners=False).clamp(0, 1)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[0, :, top : top + size, left : left + size].contiguous()


# PIL writers by suffix; anything else is written as PNG beside the kept name.
_WRITABLE = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
             ".webp": "WEBP", ".ppm": "PPM", ".tga": "TGA"}


def output_path(dst: Path) -> Path:
    """Where an output named ``dst`` is written: kept if PIL writes that format, else
    ``<name>.png`` beside it (``anim.gif`` -> ``anim.gif.png``)."""
    return dst if dst.suffix.lower() in _WRITABLE else dst.with_suffix(dst.suffix + ".png")


def part_file(dst: Path, keep_suffix: bool = False) -> tuple[Path, IO[bytes]]:
    """A new hidden file beside ``dst`` to write its output into, renamed over ``dst`` once
    whole -> (its path, the file open for writing). The name holds a random part
    (``.NAME.RANDOM.part``, or ``.STEM.RANDOM.part.EXT`` with ``keep_suffix``, for writers
    that pick the format by the suffix) and the file is created exclusively (O_CREAT |
    O_EXCL), so nothing planted in the output folder beforehand - a file, or a link to one
    elsewhere - is ever written through; a name already there is drawn again."""
    while True:
        token = secrets.token_hex(8)
        tmp = dst.with_name(f".{dst.stem}.{token}.part{dst.suffix}" if keep_suffix else f".{dst.name}.{token}.part")
        try:
            return tmp, open(tmp, "xb")  # noqa: SIM115 - the caller closes it
        except FileExistsError:
            continue


@contextmanager
def folders_for(dst: Path) -> Iterator[None]:
    """Make ``dst``'s missing folders for the block; if the block fails, remove again those
    it made that are still empty, so a failed output leaves no trace (not even a folder)."""
    made = []
    folder = dst.parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first; one that holds something (another output) stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def save_image(image, dst: Path) -> Path:
    """Write ``image`` (PIL) at :func:`output_path` of ``dst`` through a :func:`part_file`
    renamed into place; the path written."""
    dst = output_path(dst)
    fmt = _WRITABLE[dst.suffix.lower()]
    if fmt in ("JPEG", "BMP", "PPM") and image.mode == "RGBA":
        image = image.convert("RGB")
    with folders_for(dst):
        tmp, f = part_file(dst)
        try:
            with f:
                image.save(f, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
            tmp.replace(dst)  # never leave a half-written output
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return dst
