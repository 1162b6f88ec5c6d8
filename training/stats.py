"""Colour-class statistics of a data set: the histogram of METHOD.md section 4 (Eq. 12).

    python -m training.stats ../shared/data/train --bin-size 6 --out classes.json --plot classes.png

Every image (shorter side to 224, centre square) is converted to Lab on a CPU worker,
its a*b* area-averaged to a 56x56 class map and counted in the G^2 bins (the paper:
35,040 Places365-val images, 109,885,440 samples). Bins holding at least
``--min-fraction`` of all samples are kept (the paper's 500 of 109.9M). The JSON file
(``bin_size``, ``kept``, ``counts``, ...) is what ``python -m training.train --classes``
and a model config take; the plot shows the G x G grid on a log scale with the kept
classes outlined, like the paper's Figures 9-11.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ccc_nodes.core.classes import PAPER_MIN_FRACTION, ColorClasses, ab_at_output
from ccc_nodes.core.color import rgb_to_lab
from training.data import CORRUPT, OK, ImageDataset, Source, list_sources

__all__ = ["classes_file", "dataset_histogram", "load_classes", "plot_classes"]

MAP_SIZE = 56  # class map side the paper counts on (224 / 4)


def default_workers() -> int:
    """Decoding processes: 4, or fewer when this process may use fewer cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cores or 1)


class _HistogramDataset(ImageDataset):
    """Item ``i``: (G^2 int64 counts of image ``i``, status). Counting happens on the
    worker, so the histogram is parallel over ``--workers`` processes."""

    def __init__(self, sources: Sequence[Source], bin_size: int):
        super().__init__(sources, size=4 * MAP_SIZE)
        self.codec = ColorClasses(bin_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, status = super().__getitem__(i)[:2]
        if status != OK:
            return torch.zeros(self.codec.num_bins, dtype=torch.long), status
        return self.codec.histogram(ab_at_output(rgb_to_lab(x[None].float() / 255.0))), OK


def _sum(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, list[int]]:
    return torch.stack([c for c, _ in items]).sum(0), [s for _, s in items]


def dataset_histogram(
    sources: Sequence[Source], bin_size: int = 6, workers: int | None = None, chunk: int = 32, progress: bool = True
) -> tuple[torch.Tensor, dict[str, int]]:
    """G^2 histogram over ``sources`` -> (int64 counts ``(G^2,)``, {"images", "corrupt", "grey"}).
    ``workers``: decoding processes (default :func:`default_workers`)."""
    from tqdm.auto import tqdm

    ds = _HistogramDataset(sources, bin_size)
    workers = default_workers() if workers is None else workers
    order = [list(range(i, min(i + chunk, len(ds)))) for i in range(0, len(ds), chunk)]
    loader = DataLoader(ds, batch_sampler=order, num_workers=workers, collate_fn=_sum)
    counts = torch.zeros(ds.codec.num_bins, dtype=torch.long)
    seen = {"images": 0, "corrupt": 0, "grey": 0}
    for c, statuses in tqdm(loader, desc="histogram", unit="chunk", disable=not progress):
        counts += c
        for s in statuses:
            seen["images" if s == OK else "corrupt" if s == CORRUPT else "grey"] += 1
    return counts, seen


def classes_file(counts: torch.Tensor, bin_size: int, min_fraction: float, info: dict | None = None) -> dict:
    """The kept set of Eq. 12 with its provenance, as written to the classes JSON."""
    classes = ColorClasses.from_histogram(counts, bin_size, min_fraction)
    return {"bin_size": bin_size, "kept": classes.kept.tolist(), "K": classes.K, "num_bins": classes.num_bins,
            "min_fraction": min_fraction, "samples": int(counts.sum()), **(info or {}),
            "counts": [int(c) for c in counts]}


def load_classes(spec: str, bin_size: int) -> tuple[ColorClasses, torch.Tensor | None]:
    """``--classes`` value -> (classes, G^2 counts or None): ``all`` keeps every bin of
    ``bin_size`` (Fig. 3's 1296 at s = 6); otherwise a JSON file from this command."""
    if spec == "all":
        return ColorClasses(bin_size), None
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--classes {spec!r}: give 'all', 'data' or a JSON file from python -m training.stats")
    cfg = json.loads(path.read_text())
    if int(cfg["bin_size"]) != bin_size:
        raise ValueError(f"{path} holds classes for bin size {cfg['bin_size']}, the run asks for {bin_size}")
    counts = torch.tensor(cfg["counts"], dtype=torch.long) if "counts" in cfg else None
    return ColorClasses.from_config(cfg), counts


def plot_classes(counts: torch.Tensor, classes: ColorClasses, path: str | Path, title: str = "") -> None:
    """PNG of the G x G bin grid: log10 counts (a* across, b* up), kept bins outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    G, s, shift = classes.grid, classes.bin_size, classes.shift
    grid = counts.double().reshape(G, G).numpy()  # row = b* bin, column = a* bin (Eq. 9)
    kept = np.zeros(G * G, dtype=bool)
    kept[classes.kept.numpy()] = True
    kept = kept.reshape(G, G)
    ext = (-shift, shift, -shift, shift)
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=110)
    im = ax.imshow(np.log10(grid + 1), origin="lower", extent=ext, cmap="viridis", interpolation="nearest")
    ax.contour(np.linspace(-shift + s / 2, shift - s / 2, G), np.linspace(-shift + s / 2, shift - s / 2, G),
               kept.astype(float), levels=[0.5], colors="red", linewidths=0.8)
    ia, ib = np.nonzero(kept.T)
    ax.scatter(-shift + s * (ia + 0.5), -shift + s * (ib + 0.5), s=1.5, c="white", marker="s", linewidths=0)
    ax.set_xlabel("a*")
    ax.set_ylabel("b*")
    ax.set_title(title or f"bin size {s}: K = {classes.K} of {G * G} kept", fontsize=9)
    fig.colorbar(im, ax=ax, label="log10(count + 1)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _error(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.stats", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="images: folder, .tar, .txt list, or glob / brace range of tar shards")
    p.add_argument("--bin-size", type=int, default=6, help="a*b* bin size, 4..14 (paper: 6)")
    p.add_argument("--min-fraction", type=float, default=PAPER_MIN_FRACTION,
                   help="keep bins with at least this share of all samples (paper: 500 / 109,885,440)")
    p.add_argument("--out", default="classes.json", help="the kept class set (JSON)")
    p.add_argument("--plot", help="also draw the class grid to this PNG")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="decoding and counting processes (default: 4, at most the usable CPU cores)")
    p.add_argument("--max-images", type=int, default=0, help="count at most this many images (seeded sample)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        ColorClasses(a.bin_size)  # validates the bin size before any work
    except ValueError as e:
        p.error(str(e))
    if a.workers < 0 or a.max_images < 0 or not 0 <= a.min_fraction < 1:
        return _error("--workers and --max-images must not be negative, --min-fraction must be in [0, 1)")
    try:
        sources = list_sources(a.data)
    except (FileNotFoundError, OSError) as e:
        return _error(str(e))
    if not sources:
        return _error(f"{a.data}: no images found")
    for option, path in (("--out", a.out), ("--plot", a.plot)):  # before the histogram, not after it
        if path is None:
            continue
        if Path(path).is_dir():
            return _error(f"{option} {path} is a folder; give a file name")
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return _error(f"{option} {path}: cannot create its folder ({e})")
    if a.max_images and len(sources) > a.max_images:
        sources = sorted(random.Random(a.seed).sample(sources, a.max_images), key=lambda s: s.name)
    counts, seen = dataset_histogram(sources, a.bin_size, a.workers)
    if seen["images"] == 0:
        return _error(f"none of the {len(sources)} images of {a.data} is a usable colour image "
                      f"({seen['corrupt']} corrupt, {seen['grey']} grey)", 1)
    cfg = classes_file(counts, a.bin_size, a.min_fraction, {"data": str(a.data), **seen})
    Path(a.out).write_text(json.dumps(cfg))
    print(f"{a.out}: K = {cfg['K']} of {cfg['num_bins']} classes kept (min fraction {a.min_fraction:.3g}) "
          f"from {seen['images']} images, {cfg['samples']} samples; skipped {seen['corrupt']} corrupt, {seen['grey']} grey")
    if a.plot:
        plot_classes(counts, ColorClasses.from_config(cfg), a.plot)
        print(f"{a.plot}: class grid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
