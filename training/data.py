"""Training data: image folders, file lists or tar archives, decoded once into memory,
augmented on the training device (random resized crop and flip, Lab, class targets)."""

from __future__ import annotations

import io
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ccc_nodes.classes import ColorClasses
from ccc_nodes.color import rgb_to_lab
from ccc_nodes.images import IMAGE_SUFFIXES

__all__ = ["Source", "list_sources", "load_images", "augment", "lab_targets", "class_histogram"]


@dataclass(frozen=True)
class Source:
    """One image: a file path, or a member of a tar archive."""

    path: str
    member: str | None = None

    @property
    def name(self) -> str:
        return self.member or self.path

    def read(self) -> bytes:
        if self.member is None:
            return Path(self.path).read_bytes()
        with tarfile.open(self.path) as tar:
            f = tar.extractfile(self.member)
            if f is None:
                raise OSError(f"{self.member} in {self.path} is not a file")
            return f.read()


def list_sources(spec: str | Path) -> list[Source]:
    """Images under a folder (recursive), in a ``.tar`` archive, or named one per line in
    a ``.txt`` file list; sorted, so runs are repeatable."""
    p = Path(spec)
    if p.is_dir():
        return [Source(str(f)) for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if p.suffix == ".tar":
        with tarfile.open(p) as tar:
            names = sorted(m.name for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES)
        return [Source(str(p), n) for n in names]
    if p.suffix == ".txt":
        root = p.parent
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        return [Source(str(root / ln) if not Path(ln).is_absolute() else ln) for ln in lines]
    raise FileNotFoundError(f"{spec}: not a folder, a .tar archive or a .txt file list")


def _decode(data: bytes, size: int) -> np.ndarray | None:
    """Bytes -> uint8 (size, size, 3): shorter side to size, centre crop. None if unusable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any undecodable file is skipped and counted
        return None


def _decode_tar(args: tuple[str, Sequence[str], int]) -> list[np.ndarray | None]:
    path, members, size = args
    with tarfile.open(path) as tar:
        out = []
        for m in members:
            f = tar.extractfile(m)
            out.append(_decode(f.read(), size) if f else None)
        return out


def _decode_files(args: tuple[Sequence[str], int]) -> list[np.ndarray | None]:
    paths, size = args
    out = []
    for p in paths:
        try:
            out.append(_decode(Path(p).read_bytes(), size))
        except OSError:
            out.append(None)
    return out


def load_images(
    sources: Sequence[Source], size: int = 256, workers: int = 4, progress: bool = True
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Decode images into a uint8 tensor ``(N, 3, size, size)`` in parallel.

    Returns (images, names, skipped): corrupt or grey images are skipped, not fatal.
    """
    chunk = 64
    jobs = []
    for i in range(0, len(sources), chunk):
        part = sources[i : i + chunk]
        if part[0].member is not None:
            jobs.append((_decode_tar, (part[0].path, [s.member for s in part], size)))
        else:
            jobs.append((_decode_files, ([s.path for s in part], size)))
    arrays: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    bar = tqdm(total=len(sources), desc="decode", unit="img", disable=not progress)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(fn, args) for fn, args in jobs]
        for i, fut in enumerate(futures):
            for src, arr in zip(sources[i * chunk : (i + 1) * chunk], fut.result()):
                if arr is None or _is_grey(arr):
                    skipped.append(src.name)
                else:
                    arrays.append(arr)
                    names.append(src.name)
            bar.update(len(jobs[i][1][1] if jobs[i][0] is _decode_tar else jobs[i][1][0]))
    bar.close()
    if not arrays:
        raise ValueError("no usable colour images found")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, names, skipped


def _is_grey(arr: np.ndarray, tol: int = 3) -> bool:
    a = arr.astype(np.int16)
    return bool(np.abs(a[..., 0] - a[..., 1]).max() <= tol and np.abs(a[..., 1] - a[..., 2]).max() <= tol)


def augment(
    images: torch.Tensor, size: int, scale: tuple[float, float] = (0.5, 1.0), generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> float ``(B, 3, size, size)`` in [0, 1]: random resized
    crop (area fraction in ``scale``, square) and horizontal flip, one ``grid_sample``."""
    B = images.shape[0]
    dev = images.device
    x = images.float() / 255.0
    r = torch.rand(B, 4, device=dev, generator=generator)
    side = torch.sqrt(scale[0] + (scale[1] - scale[0]) * r[:, 0])  # crop side, fraction of S
    cx = (1 - side) * (2 * r[:, 1] - 1)
    cy = (1 - side) * (2 * r[:, 2] - 1)
    flip = torch.where(r[:, 3] < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev)
    theta[:, 0, 0] = side * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = side
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (B, 3, size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def lab_targets(rgb: torch.Tensor, classes: ColorClasses, scale: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """sRGB ``(B, 3, H, W)`` -> (L ``(B, 1, H, W)``, target classes ``(B, H/scale, W/scale)``).

    The target is the ground-truth a*b* area-averaged to the output size, quantised and
    folded to the kept classes (METHOD.md section 6)."""
    lab = rgb_to_lab(rgb)
    ab = F.avg_pool2d(lab[:, 1:], scale)
    return lab[:, :1], classes.encode(ab)


def class_histogram(
    images: torch.Tensor, bin_size: int, size: int = 224, batch: int = 256, device: str | torch.device = "cpu",
    progress: Callable | None = None,
) -> torch.Tensor:
    """G^2-bin histogram of a*b* over uint8 images ``(N, 3, S, S)``, each resized to
    ``size`` so its class map is ``size/4`` square (METHOD.md section 4)."""
    codec = ColorClasses(bin_size)
    counts = torch.zeros(codec.num_bins, dtype=torch.long)
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch].to(device).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        ab = F.avg_pool2d(rgb_to_lab(x)[:, 1:], 4)
        counts += codec.histogram(ab)
    return counts
