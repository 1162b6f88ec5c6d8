"""Training data: where images come from, how they are decoded, how batches are drawn.

Sources: a folder tree (Places365 / ImageNet layout, any depth), a ``.txt`` file list,
a ``.tar`` archive, or a glob / brace range of WebDataset-style tar shards
(``shards/train-{000..127}.tar``). Tar members are indexed once (offset, size) and read
by random access, so every source is a map-style data set.

Two ways to feed the trainer, one batch contract - uint8 ``(B, 3, S, S)`` at the
store size ``S`` (shorter side resized, centre square):

* in memory (:func:`load_images`): small sets are decoded once, in parallel;
* streaming (:class:`ImageDataset` + :class:`EpochSampler` in a torch ``DataLoader``):
  CPU worker processes decode each batch while the device trains.

Both draw batches with :class:`EpochSampler`: a seeded permutation per epoch, resumable
at any batch. On the training device :func:`augment` makes the random resized crop and
flip (one ``grid_sample``) and :func:`lab_targets` the L input and class targets.
Corrupt and grey images are counted and skipped, never fatal unless no usable image is left.
"""

from __future__ import annotations

import glob
import io
import re
import signal
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from ccc_nodes.core.classes import OUTPUT_SCALE, ColorClasses, ab_at_output, classes_at_output
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.images import IMAGE_SUFFIXES, is_grey

__all__ = [
    "CORRUPT",
    "GREY",
    "OK",
    "EpochSampler",
    "ImageDataset",
    "IndexedImageDataset",
    "Source",
    "augment",
    "class_histogram",
    "collate",
    "lab_targets",
    "list_sources",
    "load_images",
    "make_loader",
]

OK, CORRUPT, GREY = 0, 1, 2  # decode status of one image


@dataclass(frozen=True)
class Source:
    """One image: a file path, or a member of a tar archive at a byte ``offset``."""

    path: str
    member: str | None = None
    offset: int = -1
    size: int = 0

    @property
    def name(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            if self.member is None:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


def _expand_braces(spec: str) -> list[str]:
    """WebDataset shard notation: ``a-{000..012}.tar`` -> 13 names (zero padding kept)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if not m:
        return [spec]
    lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
    return [n for i in range(lo, hi + 1) for n in _expand_braces(spec[: m.start()] + str(i).zfill(width) + spec[m.end():])]


def _tar_sources(path: Path) -> list[Source]:
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted((Source(str(path), m.name, m.offset_data, m.size) for m in members), key=lambda s: s.member)


def list_sources(spec: str | Path) -> list[Source]:
    """Images under a folder (recursive), in a ``.tar`` archive, named one per line in a
    ``.txt`` file list (relative to the list), or in every file a glob or brace range
    names (tar shards or images). Sorted, so runs are repeatable."""
    spec = str(spec)
    if any(c in spec for c in "*?[{"):
        parts = _expand_braces(spec)
        if len(parts) > 1 and not any(c in spec for c in "*?["):  # a range names every shard
            absent = [f for f in parts if not Path(f).exists()]
            if absent:
                raise FileNotFoundError(f"{spec}: {len(absent)} of {len(parts)} named files do not exist "
                                        f"({', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''})")
        found = sorted({f for part in parts for f in glob.glob(part, recursive=True)})
        if not found:
            raise FileNotFoundError(f"{spec}: the pattern matches no files")
        out: list[Source] = []
        for f in found:
            if f.endswith(".tar") or Path(f).is_dir():
                out += list_sources(f)
            elif Path(f).suffix.lower() in IMAGE_SUFFIXES:
                out.append(Source(f))
        return out
    p = Path(spec)
    if p.is_dir():
        return [Source(str(f)) for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if p.suffix == ".tar" and p.is_file():
        return _tar_sources(p)
    if p.suffix == ".txt" and p.is_file():
        root = p.parent
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        out = [Source(ln if Path(ln).is_absolute() else str(root / ln)) for ln in lines]
        absent = [s.path for s in out if not Path(s.path).is_file()]
        if absent:
            raise FileNotFoundError(f"{spec}: {len(absent)} of {len(out)} listed files do not exist "
                                    f"({', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''})")
        return out
    raise FileNotFoundError(f"{spec}: not a folder, a .tar archive, a .txt file list or a glob of them")


def decode(data: bytes, size: int) -> tuple[np.ndarray | None, int]:
    """Bytes -> (uint8 ``(size, size, 3)``, status): shorter side to ``size``, centre
    square. Status :data:`CORRUPT` (array None) or :data:`GREY` for unusable images."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("L", "LA", "1", "I", "I;16", "F"):
                return None, GREY
            im = im.convert("RGB")
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            arr = np.array(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any undecodable file is counted and skipped
        return None, CORRUPT
    # RGB files holding a grey picture teach nothing about colour (paper Sec. IV-B trains on
    # colour photos only): the one grey rule of the package.
    return arr, GREY if is_grey(arr) else OK


class ImageDataset(Dataset):
    """Map-style data set over :class:`Source` s; item ``i`` is (uint8 ``(3, S, S)``, status).

    Arguments:
      sources: the images (see :func:`list_sources`).
      size: store size ``S`` (shorter side resized to it, centre square).
    Unusable images (unreadable files count as corrupt) give a zero tensor and a non-zero
    status; :func:`collate` drops them.
    """

    def __init__(self, sources: Sequence[Source], size: int = 256):
        self.sources, self.size = list(sources), size

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            arr, status = decode(self.sources[i].read(), self.size)
        except OSError:
            arr, status = None, CORRUPT
        if status != OK:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), status
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), OK


class IndexedImageDataset(ImageDataset):
    """:class:`ImageDataset` whose items also carry their index: (image, status, ``i``)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return (*super().__getitem__(i), i)


def collate(items: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, list[int], list[int]]:
    """Stack the usable images: -> (uint8 ``(B', 3, S, S)``, indices of the corrupt ones,
    indices of the grey ones) - indices, so a file drawn again is not counted twice."""
    good = [x for x, s, _ in items if s == OK]
    size = items[0][0].shape[-1]
    batch = torch.stack(good) if good else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return batch, [i for _, s, i in items if s == CORRUPT], [i for _, s, i in items if s == GREY]


def _quiet_worker(_: int) -> None:
    # Ctrl-C and SIGTERM are the trainer's to handle (it checkpoints, then stops the
    # workers); a worker killed by them first would end the run with a loader error.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class EpochSampler(torch.utils.data.Sampler):
    """Batches of indices ``0..n-1``: a seeded permutation per epoch, ``n // batch``
    batches each (at least one), forever, starting at batch number ``start``.

    The position is a single integer (batches drawn so far), so a run resumes exactly
    where its checkpoint was taken, on any number of workers.
    """

    def __init__(self, n: int, batch: int, seed: int = 0, start: int = 0):
        if n <= 0:
            raise ValueError("no images to sample from")
        self.n, self.batch, self.seed, self.start = n, batch, seed, start
        self.per_epoch = max(1, n // batch)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def _batches(self, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
        k = self.start
        while True:
            epoch, first = divmod(k, self.per_epoch)
            order = self.epoch_order(epoch).to(device)
            for j in range(first, self.per_epoch):
                yield order[j * self.batch : (j + 1) * self.batch]
            k = (epoch + 1) * self.per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        return (idx.tolist() for idx in self._batches())

    def on(self, device: torch.device | str) -> Iterator[torch.Tensor]:
        """The same batches as index tensors on ``device``, copied there once per epoch:
        drawing from images held on a GPU then never waits on the host."""
        return self._batches(device)

    def __len__(self) -> int:  # one epoch; the iterator itself never ends
        return self.per_epoch


def make_loader(
    sources: Sequence[Source], size: int, batch: int, workers: int, sampler=None, pin: bool = False
) -> DataLoader:
    """A ``DataLoader`` decoding on ``workers`` CPU processes; ``sampler`` (e.g. an
    :class:`EpochSampler`) gives batches of indices, else one ordered pass."""
    ds = IndexedImageDataset(sources, size)
    if sampler is None:
        sampler = [list(range(i, min(i + batch, len(ds)))) for i in range(0, len(ds), batch)]
    return DataLoader(
        ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate, pin_memory=pin,
        prefetch_factor=4 if workers else None, persistent_workers=False,
        worker_init_fn=_quiet_worker if workers else None,
    )


def _as_list(items: list) -> list:
    return items


def load_images(
    sources: Sequence[Source], size: int = 256, workers: int = 4, progress: bool = True
) -> tuple[torch.Tensor, list[str], dict[str, int]]:
    """Decode images into one uint8 tensor ``(N, 3, size, size)``, in parallel.

    Returns (images, names, skipped) with ``skipped = {"corrupt": n, "grey": m}``.
    """
    from tqdm.auto import tqdm

    ds = IndexedImageDataset(sources, size)
    chunk = 64
    order = [list(range(i, min(i + chunk, len(ds)))) for i in range(0, len(ds), chunk)]
    loader = DataLoader(ds, batch_sampler=order, num_workers=workers, collate_fn=_as_list,
                        worker_init_fn=_quiet_worker if workers else None)
    arrays, names = [], []
    skipped = {"corrupt": 0, "grey": 0}
    for items in tqdm(loader, desc="decode", unit="batch", disable=not progress):
        for x, status, i in items:
            if status == OK:
                arrays.append(x)
                names.append(ds.sources[i].name)
            else:
                skipped["corrupt" if status == CORRUPT else "grey"] += 1
    if not arrays:
        raise ValueError(f"no usable colour images among {len(ds)} sources")
    return torch.stack(arrays), names, skipped


def drop_dull(images: torch.Tensor, min_colorfulness: float, chunk: int = 256) -> tuple[torch.Tensor, int]:
    """Leave out the images whose colourfulness is under ``min_colorfulness``: uint8
    ``(N, 3, S, S)`` -> (the rest, how many were left out). Colourfulness is
    :func:`ccc_nodes.core.metrics.colorfulness` (Hasler & Suesstrunk) at the stored size;
    BigColor and DDColor train only on photos of CF >= 15: photos with little colour teach
    the network to paint little."""
    from ccc_nodes.core.metrics import colorfulness

    if min_colorfulness <= 0:
        return images, 0
    keep = torch.cat([colorfulness(images[i : i + chunk].float() / 255.0) >= min_colorfulness
                      for i in range(0, images.shape[0], chunk)])
    return images[keep], int((~keep).sum())


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


def lab_targets(rgb: torch.Tensor, classes: ColorClasses, scale: int = OUTPUT_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """sRGB ``(B, 3, H, W)`` -> (L ``(B, 1, H, W)``, target classes ``(B, H/scale, W/scale)``).

    The target is the ground-truth a*b* area-averaged to the output size, quantised and
    folded to the kept classes (METHOD.md section 6)."""
    lab = rgb_to_lab(rgb)
    return lab[:, :1], classes_at_output(lab, classes, scale)


def class_histogram(
    images: torch.Tensor, bin_size: int, size: int = 224, batch: int = 256, device: str | torch.device = "cpu",
) -> torch.Tensor:
    """G^2-bin histogram of a*b* over uint8 images ``(N, 3, S, S)``, each resized to
    ``size`` so its class map is ``size/4`` square (METHOD.md section 4)."""
    codec = ColorClasses(bin_size)
    counts = torch.zeros(codec.num_bins, dtype=torch.long)
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch].to(device).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        counts += codec.histogram(ab_at_output(rgb_to_lab(x)))
    return counts
