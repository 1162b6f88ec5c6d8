"""Full-resolution conversion: strips against the whole image at once, same run.

    python benchmarks/full_resolution.py [--megapixels 24] [--repeats 3]

The full-resolution steps of colorization - L of the input (``lightness``) and the join
of L with the upsampled a*b* (``join_lab``) - run in strips of ``STRIP_PIXELS``. This
times both steps with the strips and with one strip holding the whole image, each in its
own process so that its peak resident memory can be read, and prints both and their
ratios (strips / whole).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(megapixels: float, strip_pixels: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from ccc_nodes.core.prediction import join_lab, lightness

    torch.set_num_threads(1)
    w = int((megapixels * 1e6 * 3 / 2) ** 0.5)
    h = int(megapixels * 1e6 / w)
    rgb = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    ab = torch.randn(1, 2, 56, 56) * 30
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        L = lightness(rgb, strip_pixels=strip_pixels)
        out = join_lab(L, ab, strip_pixels=strip_pixels)
        best = min(best, time.perf_counter() - t)
        del L, out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": best, "extra_peak_mb": (peak - base) / 1024, "size": f"{w}x{h}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--megapixels", type=float, default=24.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # strip_pixels, in a child process
    a = p.parse_args(argv)
    if a.child is not None:
        print(json.dumps(measure(a.megapixels, a.child, a.repeats)))
        return 0
    from ccc_nodes.core.prediction import STRIP_PIXELS

    def run(strip: int) -> dict:
        cmd = [sys.executable, __file__, "--megapixels", str(a.megapixels), "--repeats", str(a.repeats), "--child", str(strip)]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    whole = run(10**12)
    strips = run(STRIP_PIXELS)
    print(json.dumps({"image": strips["size"], "threads": 1,
                      "whole": {"seconds": round(whole["seconds"], 3), "extra_peak_mb": round(whole["extra_peak_mb"])},
                      "strips": {"seconds": round(strips["seconds"], 3), "extra_peak_mb": round(strips["extra_peak_mb"])},
                      "time_ratio": round(strips["seconds"] / whole["seconds"], 3),
                      "memory_ratio": round(strips["extra_peak_mb"] / whole["extra_peak_mb"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
