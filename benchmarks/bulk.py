"""CPU throughput of the bulk path (``ccc colorize --workers N``) against the one-process path.

    python benchmarks/bulk.py [--workers 2] [--small 64] [--large 16] [--photos DIR]

Both are ``ccc colorize`` end to end (model load, reading, the network, the join,
encoding, writing), in this one process, alternated (one, bulk, one, bulk) so drift in a
shared machine's load shows; images/s are the mean of the two runs of each. Two kinds of
input: 256 x 256 JPEGs and 1 MP (1152 x 864) JPEG photos, cut and scaled from real photos
(scikit-image's samples, or the JPEGs under ``--photos``). Prints one JSON line per kind
with ``ratio = bulk / one-process``, the CPU seconds per image of every process of
each run (a machine shared with other work gives the run with more processes more of
it; the CPU seconds say whether the bulk path does more work), and the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ccc_nodes.interfaces.cli import main as ccc

KINDS = {"256px": (256, 256), "1MP": (1152, 864)}


def sources(folder: str | None) -> list[np.ndarray]:
    if folder:
        return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(folder).glob("*.jpg"))[:32]]
    from skimage import data

    return [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]


def make_inputs(folder: Path, photos: list[np.ndarray], n: int, size: tuple[int, int]) -> Path:
    """``n`` JPEGs of ``size`` (W, H): crops of the photos at the aspect, scaled."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        im = photos[i % len(photos)]
        h = min(im.shape[0], int(im.shape[1] * size[1] / size[0]))
        w = int(h * size[0] / size[1])
        y, x = rng.integers(0, im.shape[0] - h + 1), rng.integers(0, im.shape[1] - w + 1)
        Image.fromarray(im[y : y + h, x : x + w]).resize(size, Image.BICUBIC).save(folder / f"{i:04d}.jpg", quality=90)
    return folder


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loader's workers)."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                         resource.RUSAGE_CHILDREN)))


def rate(images: Path, out: Path, args: list[str]) -> tuple[float, float]:
    """Images/s of one ``ccc colorize`` run, and its CPU seconds per image (all processes)."""
    n = len(list(images.iterdir()))
    t, cpu = time.perf_counter(), cpu_seconds()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        rc = ccc(["colorize", str(images), "-o", str(out), "-q", *args])
    if rc != 0:
        raise SystemExit(f"ccc colorize failed: {err.getvalue()}")
    return n / (time.perf_counter() - t), (cpu_seconds() - cpu) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="the bulk path's reader processes and writer threads")
    p.add_argument("--small", type=int, default=64, help="256 px images")
    p.add_argument("--large", type=int, default=16, help="1 MP photos")
    p.add_argument("--photos", help="a folder of JPEG photos to cut the inputs from (default: scikit-image's)")
    p.add_argument("--model", default=None, help="default: the embedded model")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args(argv)
    common = ["--device", "cpu", "--size", str(a.size), "--batch", str(a.batch)] + (["--model", a.model] if a.model else [])
    photos = sources(a.photos)
    with tempfile.TemporaryDirectory() as tmp:
        rate(make_inputs(Path(tmp) / "warm", photos, 4, KINDS["256px"]), Path(tmp) / "warm-out", common)  # first load
        for kind, n in (("256px", a.small), ("1MP", a.large)):
            images = make_inputs(Path(tmp) / kind, photos, n, KINDS[kind])
            runs: dict[str, list[tuple[float, float]]] = {"one": [], "bulk": []}
            for i in range(2):
                runs["one"].append(rate(images, Path(tmp) / f"one{i}-{kind}", common))
                runs["bulk"].append(rate(images, Path(tmp) / f"bulk{i}-{kind}", [*common, "--workers", str(a.workers)]))
            one, bulk = (float(np.mean([r for r, _ in runs[k]])) for k in ("one", "bulk"))
            print(json.dumps({"kind": kind, "images": n, "threads": torch.get_num_threads(), "workers": a.workers,
                              "batch": a.batch, "size": a.size, "load_average": round(os.getloadavg()[0], 1),
                              **{f"{k}_img_s": [round(r, 2) for r, _ in runs[k]] for k in runs},
                              **{f"{k}_cpu_s_per_img": [round(c, 3) for _, c in runs[k]] for k in runs},
                              "ratio": round(bulk / one, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
