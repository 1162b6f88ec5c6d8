"""Inference throughput: batched `Colorizer` against one image per call, same run.

    python benchmarks/inference.py [--model default] [--size 224] [--batch 8] [--images 32]

Prints images/s for both and their ratio (batched / one by one). Images are
scikit-image's photos at mixed sizes, so the batch path's per-image resize and
full-resolution join are included.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage import data

from ccc_nodes import Colorizer


def _images(n: int) -> list[np.ndarray]:
    base = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return [base[i % len(base)] for i in range(n)]


def _rate(fn, images, repeats: int) -> float:
    fn(images[:2])  # warm-up
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        fn(images)
        best = max(best, len(images) / (time.perf_counter() - t))
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    batched = Colorizer(a.model, size=a.size, batch_size=a.batch, device=a.device)
    single = Colorizer(batched.model, size=a.size, batch_size=1, device=a.device)
    images = _images(a.images)
    one = _rate(lambda ims: [single(im) for im in ims], images, a.repeats)
    many = _rate(lambda ims: batched(list(ims)), images, a.repeats)
    print(f"device {batched.device}, size {a.size}, {a.images} images")
    print(f"one by one: {one:.2f} img/s")
    print(f"batch {a.batch}: {many:.2f} img/s")
    print(f"ratio batched / one by one: {many / one:.2f}")


if __name__ == "__main__":
    main()
