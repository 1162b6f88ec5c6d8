"""Temporal mode: flicker, fidelity and colourfulness against frame by frame, and its cost.

    python benchmarks/temporal.py quality --photos ../shared/data/val [--every 1] [--video FILE]
    python benchmarks/temporal.py speed [--frames 48] [--repeats 3]

``quality``: each photo becomes a synthetic clip by a moving crop - ``--frames`` frames of
192x192 whose window pans 48 x 32 px across the 256x256 photo while zooming in by 15 %
(bilinear resampling of the colour photo; the ground truth of every frame is known, and
static content moves). Each clip is colorized frame by frame and in temporal mode (from its
grey frames; one network pass feeds both modes), and scored with the warping error of METHOD.md s. 14 (flow from the ground
truth's grey frames, reliable pixels only), per-frame PSNR against the ground truth and
per-frame colourfulness (CF); the ground truth's own warping error is the floor (flow and
resampling error). ``--video`` adds a real colour video (its first ``--video-frames``),
scored the same way against itself. Prints a markdown table; ``--strip PNG`` draws frames
of the first clip (ground truth; frame by frame and its flicker map; temporal and its map).

``speed``: frames per second on 480p frames (854x480, a pan over a scikit-image photo),
frame by frame and temporal, in the same run, and their ratio.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccc_nodes import Colorizer  # noqa: E402
from ccc_nodes.core.color import rgb_to_L  # noqa: E402
from ccc_nodes.core.metrics import colorfulness, psnr  # noqa: E402
from ccc_nodes.core.prediction import decode_ab, join_lab  # noqa: E402
from ccc_nodes.job.sequence import colorize_sequence  # noqa: E402
from ccc_nodes.steps.temporal import TemporalState, WarpingError  # noqa: E402

SIDE = 192  # frame size of the synthetic clips
WINDOW = 200  # the crop's side in photo pixels at the first frame
PAN = (48.0, 32.0)  # the window's travel over the clip, photo pixels (x, y)
ZOOM = 0.15  # zoom-in over the clip


def moving_crop(photo: np.ndarray, frames: int) -> list[np.ndarray]:
    """A clip from one photo: the window pans by PAN and zooms in by ZOOM, resampled
    bilinearly to SIDE x SIDE -> uint8 frames ``(SIDE, SIDE, 3)``."""
    import cv2

    h, w = photo.shape[:2]
    out = []
    for t in range(frames):
        f = t / max(frames - 1, 1)
        scale = (WINDOW / SIDE) / (1 + ZOOM * f)  # photo pixels per frame pixel
        cx, cy = w / 2 + PAN[0] * (f - 0.5), h / 2 + PAN[1] * (f - 0.5)
        m = np.array([[scale, 0, cx - scale * SIDE / 2], [0, scale, cy - scale * SIDE / 2]], np.float32)
        out.append(cv2.warpAffine(photo, m, (SIDE, SIDE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT))
    return out


def grey(frame: np.ndarray) -> np.ndarray:
    """uint8 grey (L * 2.55) of an RGB uint8 frame: what the flow of the metric sees."""
    L = rgb_to_L(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)[0, 0]
    return (L * 2.55).round().clamp(0, 255).to(torch.uint8).numpy()


class Scores:
    """Warping error, mean per-frame PSNR and CF of a set of colorized clips."""

    def __init__(self):
        self.we, self.psnr, self.cf = WarpingError(), [], []

    def clip(self, outputs, truth: list[np.ndarray], greys: list[np.ndarray], motions: list) -> list[np.ndarray]:
        self.we.reset()
        kept = []
        for rgb, gt, g, m in zip(outputs, truth, greys, motions, strict=True):
            rgb = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
            gt_t = torch.from_numpy(gt).permute(2, 0, 1)[None].float() / 255
            self.we.update(rgb[0].permute(1, 2, 0).numpy(), g, m)
            self.psnr.append(float(psnr(rgb, gt_t)))
            self.cf.append(float(colorfulness(rgb)))
            kept.append((rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        return kept

    def row(self) -> tuple[float, float, float]:
        return self.we.compute(), float(np.mean(self.psnr)), float(np.mean(self.cf))


def colorized(colorizer, preds, temporal: bool):
    """Both modes from one network pass: what ``colorize_sequence`` does after ``predict``
    (the temporal mode only works on the network's logits)."""
    state = TemporalState()
    for pred in preds:
        logits = state.step(pred) if temporal else pred.logits
        yield join_lab(pred.L, decode_ab(logits, colorizer.classes, colorizer.decoding))


def score_clips(colorizer, clips, strip: Path | None = None) -> dict[str, Scores]:
    rows = {"ground truth": Scores(), "frame by frame": Scores(), "temporal": Scores()}
    for n, truth in enumerate(clips):
        greys = [grey(f) for f in truth]
        motions = [None] + [rows["ground truth"].we.motion(a, b) for a, b in itertools.pairwise(greys)]
        preds = []  # the model sees grey frames only
        for start in range(0, len(greys), colorizer.batch_size):
            preds += colorizer.predict([np.repeat(g[..., None], 3, axis=2) for g in greys[start:start + colorizer.batch_size]])
        drawn = [rows["ground truth"].clip(truth, truth, greys, motions)]
        for name, temporal in (("frame by frame", False), ("temporal", True)):
            drawn.append(rows[name].clip(colorized(colorizer, preds, temporal), truth, greys, motions))
        if strip is not None and n == 0:
            draw_strip(drawn, strip, motions)
        print(f"\r{n + 1} clips", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return rows


def draw_strip(rows: list[list[np.ndarray]], path: Path, motions: list, picks: tuple[int, ...] = (5, 6, 7, 8, 9, 10),
               top: float = 20.0) -> None:
    """Consecutive frames: ground truth, then for each mode its frames and its flicker map
    |ab(t) - warp(ab(t-1))| (white = ``top`` a*b* units or more; unreliable pixels grey)."""
    from PIL import Image

    from ccc_nodes.core.color import rgb_to_lab
    from ccc_nodes.steps.temporal import warp

    def ab(frame):
        return rgb_to_lab(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)[0, 1:].permute(1, 2, 0).numpy()

    def flicker(frames, t):
        backward, ok = motions[t]
        d = np.sqrt(((ab(frames[t]) - warp(ab(frames[t - 1]), backward)) ** 2).sum(-1))
        g = np.where(ok, np.clip(d / top, 0, 1) * 255, 96).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)

    lines = [rows[0]] + [r for frames in rows[1:] for r in (frames, {t: flicker(frames, t) for t in picks})]
    h, w = rows[0][0].shape[:2]
    sheet = Image.new("RGB", (w * len(picks), h * len(lines)), "white")
    for r, frames in enumerate(lines):
        for c, t in enumerate(picks):
            sheet.paste(Image.fromarray(frames[t]), (c * w, r * h))
    sheet.save(path, quality=90)  # (JPEG; PNG ignores it)


def read_video(path: str, n: int) -> list[np.ndarray]:
    import av

    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0), strict=False)]


def table(rows: dict[str, Scores], title: str) -> str:
    base = rows["frame by frame"].row()
    lines = [f"| {title} | warping error (a*b*) | PSNR (dB) | CF |", "|---|---:|---:|---:|"]
    for name, s in rows.items():
        we, p, cf = s.row()
        note = "" if name != "temporal" else (f" ({we / base[0]:.2f}x, {p - base[1]:+.2f} dB, "
                                              f"CF {100 * (cf / base[2] - 1):+.1f} %)")
        lines.append(f"| {name} | {we:.3f} | {p:.2f} | {cf:.2f} |{note}")
    return "\n".join(lines)


def quality(a) -> None:
    from PIL import Image

    colorizer = Colorizer(a.model, device=a.device, decoding=a.decode, batch_size=a.batch)
    photos = sorted(p for p in Path(a.photos).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:: a.every]
    clips = (moving_crop(np.asarray(Image.open(p).convert("RGB")), a.frames) for p in photos)
    t = time.perf_counter()
    rows = score_clips(colorizer, clips, Path(a.strip) if a.strip else None)
    print(f"{len(photos)} clips of {a.frames} frames ({SIDE}x{SIDE}), decode {a.decode}, "
          f"{time.perf_counter() - t:.0f} s\n")
    print(table(rows, f"{len(photos)} moving-crop clips"))
    if a.video:
        frames = read_video(a.video, a.video_frames)
        rows = score_clips(colorizer, [frames])
        print(f"\n{Path(a.video).name}: {len(frames)} frames ({frames[0].shape[1]}x{frames[0].shape[0]})\n")
        print(table(rows, Path(a.video).name))


def speed(a) -> None:
    import cv2
    from skimage import data

    photo = cv2.resize(data.coffee(), (1200, 800), interpolation=cv2.INTER_CUBIC)
    frames = [np.ascontiguousarray(photo[100 + i : 580 + i, 100 + 3 * i : 954 + 3 * i]) for i in range(a.frames)]
    colorizer = Colorizer(a.model, device=a.device, batch_size=a.batch)
    list(colorize_sequence(colorizer, frames[:4], True))  # warm-up
    best = {}
    for _ in range(a.repeats):
        for temporal in (False, True):
            t = time.perf_counter()
            for _ in colorize_sequence(colorizer, frames, temporal):
                pass
            best[temporal] = max(best.get(temporal, 0.0), a.frames / (time.perf_counter() - t))
    print(f"device {colorizer.device}, {a.frames} frames of 854x480, batch {a.batch}, best of {a.repeats}")
    print(f"frame by frame: {best[False]:.2f} frames/s")
    print(f"temporal: {best[True]:.2f} frames/s")
    print(f"ratio temporal / frame by frame: {best[True] / best[False]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--photos", required=True, help="folder of colour photos (ground truth)")
    q.add_argument("--every", type=int, default=1, help="take every N-th photo (sorted by name)")
    q.add_argument("--frames", type=int, default=16)
    q.add_argument("--decode", default="argmax", choices=("argmax", "annealed-mean"))
    q.add_argument("--video", default=None, help="a real colour video to score as well")
    q.add_argument("--video-frames", type=int, default=150)
    q.add_argument("--strip", default=None, help="PNG of the first clip's frames 5-10 and flicker maps")
    s = sub.add_parser("speed")
    s.add_argument("--frames", type=int, default=48)
    s.add_argument("--repeats", type=int, default=3)
    for x in (q, s):
        x.add_argument("--model", default=None)
        x.add_argument("--device", default="cpu")
        x.add_argument("--batch", type=int, default=8)
        x.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a shared machine)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    quality(a) if a.what == "quality" else speed(a)


if __name__ == "__main__":
    main()
