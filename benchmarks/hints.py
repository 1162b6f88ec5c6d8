"""What colour hints add to colorizing one photo: the automatic path against the same
path with hints, in the same run.

    python benchmarks/hints.py [--model default] [--points 3] [--megapixels 1] [--repeats 5]

The photo is scikit-image's astronaut scaled to about ``--megapixels``; the hinted path
grows ``--points`` point hints into regions (geodesic affinity on L), adds a reference
palette when ``--reference`` is given, pools them into the logits and decodes as usual.
Prints the best CPU time of each path over ``--repeats`` (taking turns) and their ratio (hinted /
automatic).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image
from skimage import data

from ccc_nodes import Colorizer
from ccc_nodes.steps.hints import Hint, palette_prior


def _best(fns, repeats: int) -> list[float]:
    """The best CPU time of each function (all threads of this process), the functions
    taking turns, so a busy machine disturbs both alike."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.process_time()  # CPU time of this process: other work on the machine does not count
            fn()
            best[i] = min(best[i], time.process_time() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--points", type=int, default=3)
    p.add_argument("--reference", action="store_true", help="also a reference palette")
    p.add_argument("--megapixels", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    side = round((a.megapixels * 1e6) ** 0.5)
    photo = Image.fromarray(data.astronaut()).convert("L").resize((side, side), Image.BICUBIC)
    colorizer = Colorizer(a.model, device=a.device)
    rng = np.random.default_rng(0)
    hints = [Hint.at(*rng.uniform(0, side, 2), "#c0392b") for _ in range(a.points)]
    reference = palette_prior(data.coffee(), colorizer.classes) if a.reference else None
    auto, hinted = _best([lambda: colorizer(photo), lambda: colorizer(photo, hints=hints, reference=reference)],
                         a.repeats)
    print(f"device {colorizer.device}, {side}x{side} px, {a.points} point hints"
          f"{' and a reference palette' if a.reference else ''}")
    print(f"automatic: {auto * 1000:.0f} ms CPU")
    print(f"with hints: {hinted * 1000:.0f} ms CPU")
    print(f"ratio hinted / automatic: {hinted / auto:.2f}")


if __name__ == "__main__":
    main()
