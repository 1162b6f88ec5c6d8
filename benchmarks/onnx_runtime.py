"""onnxruntime against torch on the CPU, same run: the network alone at 224, and a 1 MP photo end to end.

    python benchmarks/onnx_runtime.py [--model default] [--onnx FILE.onnx] [--batch 8] [--rounds 5]

The model is exported with :func:`ccc_nodes.core.onnx_runtime.export_onnx` (or ``--onnx`` names a
file already exported from it). Both runtimes use the same number of threads (torch's,
``torch.get_num_threads()``) and take turns, round by round, so a load that comes and goes
on the machine falls on both; each figure is the median over the rounds.

- network: L ``(batch, 1, 224, 224)`` -> logits, ms per image;
- 1 MP photo: :meth:`Colorizer.colorize` on a 1155 x 866 photo (L, resize, network,
  decoding, full-resolution join), ms per photo, the Colorizer's one path with either model.

The ratio is torch's time / onnxruntime's (above 1: onnxruntime is faster). Then how closely
the two agree: the 1 MP outputs, and the classes and logits of five photos at 224.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from ccc_nodes import load_model
from ccc_nodes.core.images import to_rgb
from ccc_nodes.core.onnx_runtime import OnnxModel, export_onnx
from ccc_nodes.core.prediction import lightness, resize_L
from ccc_nodes.job.colorizer import Colorizer


def _time(fn, repeats: int) -> float:
    """Seconds per call, the best of ``repeats`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="what load_model takes (default: the embedded model)")
    p.add_argument("--onnx", default=None, help="an .onnx file exported from --model (default: export one now)")
    p.add_argument("--batch", type=int, default=8, help="batch of the network-alone figure (default 8)")
    p.add_argument("--rounds", type=int, default=5, help="turns of each runtime (default 5)")
    a = p.parse_args()

    model = load_model(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(a.onnx) if a.onnx else export_onnx(model, Path(tmp) / "model.onnx")
        runtime = OnnxModel(path)
        L = torch.rand(a.batch, 1, 224, 224, generator=torch.Generator().manual_seed(0)) * 100
        photo = Image.fromarray(data.astronaut()).convert("L").resize((1155, 866), Image.BICUBIC)  # 1.0 MP
        colorizers = {"torch": Colorizer(model, device="cpu", batch_size=1),
                      "onnxruntime": Colorizer(runtime, device="cpu", batch_size=1)}
        nets = {"torch": model, "onnxruntime": runtime}
        net_s: dict[str, list[float]] = {k: [] for k in nets}
        photo_s: dict[str, list[float]] = {k: [] for k in nets}
        with torch.inference_mode():
            for _ in range(a.rounds):
                for name in nets:
                    net_s[name].append(_time(lambda n=nets[name]: n(L), 2) / a.batch)
                    photo_s[name].append(_time(lambda c=colorizers[name]: c(photo), 2))
            same = np.array_equal(np.asarray(colorizers["torch"](photo)), np.asarray(colorizers["onnxruntime"](photo)))
            photos = [data.camera(), data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
            Lp = torch.cat([resize_L(lightness(to_rgb(im)[0]), 224) for im in photos])
            want, got = model(Lp), runtime(Lp)
        agree = float((want.argmax(1) == got.argmax(1)).float().mean())

    print(f"CPU, {torch.get_num_threads()} threads, {a.rounds} rounds (median); torch {torch.__version__}, "
          f"onnxruntime {__import__('onnxruntime').__version__}, model {a.model or 'default'} "
          f"({model.encoder_name}, K={model.classes.K})")
    print(f"{'':32}{'torch':>12}{'onnxruntime':>14}{'ratio':>8}")
    for what, times in ((f"network 224, batch {a.batch} (ms/img)", net_s), ("1 MP photo end to end (ms)", photo_s)):
        t, o = statistics.median(times["torch"]) * 1e3, statistics.median(times["onnxruntime"]) * 1e3
        print(f"{what:32}{t:12.1f}{o:14.1f}{t / o:8.2f}")
    print(f"1 MP outputs pixel-identical: {same}")
    print(f"{len(photos)} photos at 224: classes agree on {agree:.4%} of the pixels; logits differ by at most "
          f"{float((want - got).abs().max()):.2g} (they reach {float(want.abs().max()):.3g})")


if __name__ == "__main__":
    main()
