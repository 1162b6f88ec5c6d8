"""Small image sets and a tiny training command for the training tests (no shared data)."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# The smallest real configuration: timm's mobilenetv3_small_050, 64 px crops, 4 images a step.
TINY = ["--encoder", "mobilenetv3_small_050", "--decoder-channels", "16,16,16", "--size", "64", "--store-size", "72",
        "--batch", "4", "--min-fraction", "0.001", "--log-every", "1", "--no-progress", "--no-tensorboard", "--lr", "1e-3",
        "--warmup", "2"]


def photos() -> list[np.ndarray]:
    from skimage import data

    return [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]


def crops(n: int, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    """``n`` colour crops ``(size, size, 3)`` from scikit-image's sample photos."""
    rng = np.random.default_rng(seed)
    src = photos()
    out = []
    for i in range(n):
        im = src[i % len(src)]
        y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
        out.append(np.ascontiguousarray(im[y : y + size, x : x + size]))
    return out


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def image_tree(root: Path, n: int = 16, bad: bool = True) -> Path:
    """An ImageNet-style tree ``root/class_x/NNN.jpg`` (+ one corrupt file and one grey
    picture stored as RGB when ``bad``)."""
    for i, arr in enumerate(crops(n)):
        d = root / f"class_{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:03d}.jpg").write_bytes(jpeg(arr))
    if bad:
        (root / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        Image.fromarray(np.full((80, 80, 3), 120, np.uint8)).save(root / "class_1" / "grey.png")
    return root


def tar_shards(root: Path, n: int = 12, shards: int = 3) -> list[Path]:
    """WebDataset-style shards ``root/train-000.tar ...``: keys with .jpg and .cls members."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    imgs = crops(n, seed=1)
    for s in range(shards):
        path = root / f"train-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s, n, shards):
                for name, data in ((f"{i:06d}.jpg", jpeg(imgs[i])), (f"{i:06d}.cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def env() -> dict:
    """Environment for subprocesses: run from the checkout, one thread each (2-core CI)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def python() -> str:
    return sys.executable
