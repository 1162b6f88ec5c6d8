"""The GPU figures of inference and training, in one run on one GPU (``gpu_bulk.sh``).

    python benchmarks/gpu_bulk.py --out OUT [--images 8192] [--workers 14] [--smoke]

1. the network alone: :meth:`Colorizer.logits` on a batch of L already on the device
   (default model, bf16, batch 256 at 224 px) - the ceiling;
2. the bulk path end to end (:func:`ccc_nodes.job.bulk.colorize_files`: JPEG files read and
   decoded by worker processes, L, network, decoding and join on the device, encoding and
   writing by threads) on 256 px JPEGs; its ratio to (1) (targets: >= 1,500 images/s and
   >= 25 % of the network alone); and two of its stages alone, to tell which one limits:
   the readers, and the device stages on a batch already in memory;
3. the network alone again, so drift shows;
4. batch-1 latency of a 1 MP photo in memory: the one-image call (``Colorizer.colorize``,
   whose L and join run on the CPU) and the device stages
   (:func:`ccc_nodes.job.bulk.device_stages`) (target: < 10 ms);
5. the training benchmark (``benchmarks/training.py``: the trainer with its data pipeline
   against the model alone, target ratio >= 0.9) for the paper's network (DenseNet-121,
   Table IV 1024-512-512) and the default's (EfficientNet-Lite0, the same decoder).

Writes ``OUT/gpu_bulk.json`` and ``OUT/gpu_bulk.md``. ``--smoke``: the same steps at a
tiny size on any device (the check that the script runs, on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ccc_nodes.core.images import to_rgb  # noqa: E402
from ccc_nodes.core.prediction import to_output  # noqa: E402
from ccc_nodes.job.bulk import colorize_files, device_stages, readers  # noqa: E402
from ccc_nodes.job.colorizer import Colorizer  # noqa: E402

# (name, encoder, decoder channels): the paper's network and the default model's
NETWORKS = [("paper", "densenet121", "1024,512,512"), ("default", "efficientnet_lite0", "1024,512,512")]
SMOKE_NETWORK = ["--encoder", "mobilenetv3_small_050", "--decoder-channels", "16,16,16"]


def photos() -> list[np.ndarray]:
    from skimage import data

    return [data.chelsea(), data.astronaut(), data.coffee(), data.rocket(), data.immunohistochemistry()]


def make_jpegs(folder: Path, n: int, side: int) -> list[Path]:
    """``n`` different ``side``-px JPEGs cut from real photos."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, src, paths = np.random.default_rng(0), photos(), []
    for i in range(n):
        im = src[i % len(src)]
        s = int(rng.integers(min(im.shape[:2]) // 2, min(im.shape[:2]) + 1))
        y, x = rng.integers(0, im.shape[0] - s + 1), rng.integers(0, im.shape[1] - s + 1)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(im[y : y + s, x : x + s]).resize((side, side), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_rate(colorizer: Colorizer, batch: int, repeats: int) -> float:
    """Images/s of the network alone on L already on the device."""
    L = torch.rand(batch, 1, colorizer.size, colorizer.size, device=colorizer.device) * 100
    for _ in range(3):
        colorizer.logits(L)
    sync(colorizer.device)
    t = time.perf_counter()
    for _ in range(repeats):
        colorizer.logits(L)
    sync(colorizer.device)
    return batch * repeats / (time.perf_counter() - t)


def bulk_rate(colorizer: Colorizer, sources: list[Path], n: int, out: Path, workers: int) -> tuple[float, dict]:
    """Images/s of the bulk path over ``n`` outputs (the sources taken in turn)."""
    pairs = [(sources[i % len(sources)], out / f"{i:06d}.jpg") for i in range(n)]
    t = time.perf_counter()
    report = colorize_files(colorizer, pairs, workers=workers, progress=False)
    seconds = time.perf_counter() - t
    if report.failures or report.done != n:
        raise SystemExit(f"bulk run failed: {report}")
    return n / seconds, {"images": n, "seconds": round(seconds, 3)}


def readers_rate(colorizer: Colorizer, sources: list[Path], n: int, workers: int) -> float:
    """Images/s of the reading stage alone (read, decode, RGB to the device), no network."""
    pairs = [(sources[i % len(sources)], Path("unused")) for i in range(n)]
    t = time.perf_counter()
    for batch in readers(colorizer, pairs, workers, resume=False, on_device=True):
        for item in batch:
            item.rgb.to(colorizer.device, non_blocking=True)
    sync(colorizer.device)
    return n / (time.perf_counter() - t)


def stages_rate(colorizer: Colorizer, sources: list[Path], repeats: int) -> float:
    """Images/s of the device stages alone (L, resize, network, decoding, join, back to the
    CPU) on one batch of RGB already in memory: no reading, no writing."""
    rgbs = [torch.from_numpy(to_rgb(Image.open(sources[i % len(sources)]))[0]) for i in range(colorizer.batch_size)]
    device_stages(colorizer, rgbs)
    t = time.perf_counter()
    for _ in range(repeats):
        device_stages(colorizer, rgbs)
    return colorizer.batch_size * repeats / (time.perf_counter() - t)


def latency_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def training_rates(smoke: bool, device: str, workers: int, timeout: float) -> list[dict]:
    """benchmarks/training.py for each network, each its own process (one JSON line each)."""
    results = []
    for name, encoder, channels in NETWORKS[:1] if smoke else NETWORKS:
        net = SMOKE_NETWORK if smoke else ["--encoder", encoder, "--decoder-channels", channels]
        size = ["--size", "64", "--store-size", "72", "--batch", "4", "--steps", "2", "--warmup", "1", "--workers", "0"] \
            if smoke else ["--size", "224", "--store-size", "256", "--batch", "64", "--steps", "30", "--warmup", "5",
                           "--workers", str(workers)]
        cmd = [sys.executable, str(ROOT / "benchmarks" / "training.py"), *net, *size, "--device", device]
        t = time.perf_counter()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        except subprocess.TimeoutExpired:
            results.append({"network": name, "error": f"over {timeout:.0f} s"})
            continue
        lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
        if res.returncode != 0 or not lines:
            results.append({"network": name, "error": (res.stderr or res.stdout)[-1500:]})
            continue
        results.append({"network": name, **json.loads(lines[-1]), "wall_s": round(time.perf_counter() - t, 1)})
    return results


def markdown(r: dict) -> str:
    b, lat = r["bulk"], r["latency_ms"]
    rows = [f"# GPU figures ({r['device']}, torch {r['torch']}{', SMOKE: not real figures' if r['smoke'] else ''})", "",
            f"Command: `{r['command']}`", "",
            "| inference | images/s |", "| --- | --- |",
            f"| network alone ({r['precision']}, batch {r['batch']} at {r['size']} px), before / after | "
            f"{r['network_img_s'][0]:,.0f} / {r['network_img_s'][1]:,.0f} |",
            f"| bulk path end to end, {r['side']} px JPEGs, {b['workers']} workers, {b['images']} images | "
            f"{b['img_s']:,.0f} ({100 * b['of_network']:.0f} % of the network alone) |",
            f"| its stages alone: reading (workers, RGB to the device) / device stages (L ... join, to the CPU) | "
            f"{b['readers_alone_img_s']:,.0f} / {b['device_stages_alone_img_s']:,.0f} |", "",
            f"Batch-1 latency of a {r['photo']} photo in memory (median of {lat['repeats']}): "
            f"one-image call (`Colorizer.colorize`) {lat['colorize']:.1f} ms; device stages "
            f"(`bulk.device_stages` + quantise) {lat['device_stages']:.1f} ms.", "",
            "| training (benchmarks/training.py) | model alone img/s | full img/s | ratio | data pipeline alone img/s |",
            "| --- | --- | --- | --- | --- |"]
    for t in r["training"]:
        if "error" in t:
            rows.append(f"| {t['network']} | failed: {t['error'][-200:]!r} | | | |")
        else:
            rows.append(f"| {t['network']} ({t['encoder']}, {t['size']} px, batch {t['batch']}, {t['workers']} workers) | "
                        f"{' / '.join(f'{x:,.0f}' for x in t['model_only_img_s'])} | {t['full_img_s']:,.0f} | "
                        f"{t['ratio']:.2f} | {t['pipeline_only_img_s']:,.0f} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_bulk.json and gpu_bulk.md")
    p.add_argument("--images", type=int, default=8192, help="outputs of the timed bulk run")
    p.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the script end to end (CPU)")
    a = p.parse_args(argv)
    smoke = a.smoke
    size, batch, side, n = (64, 8, 96, 24) if smoke else (224, 256, 256, a.images)
    photo_size = (256, 192) if smoke else (1152, 864)
    workers = 1 if smoke else a.workers
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    colorizer = Colorizer(None, device=a.device, size=size, precision="bf16" if not smoke else "auto", batch_size=batch)
    device = colorizer.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    r: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
               "torch": torch.__version__, "smoke": smoke, "precision": colorizer.precision, "size": size, "batch": batch, "side": side,
               "command": "bash benchmarks/gpu_bulk.sh OUT" + (" --smoke" if smoke else "")}
    with tempfile.TemporaryDirectory() as tmp:
        sources = make_jpegs(Path(tmp) / "in", min(n, 1024), side)
        network = [network_rate(colorizer, batch, 3 if smoke else 50)]
        bulk_rate(colorizer, sources, min(n, 2 * batch), Path(tmp) / "warm", workers)  # workers, allocator, cudnn
        rate, info = bulk_rate(colorizer, sources, n, Path(tmp) / "out", workers)
        network.append(network_rate(colorizer, batch, 3 if smoke else 50))
        reading = readers_rate(colorizer, sources, n, workers)
        staging = stages_rate(colorizer, sources, 2 if smoke else 10)
    r["network_img_s"] = [round(x, 1) for x in network]
    r["bulk"] = {"img_s": round(rate, 1), "workers": workers, "of_network": round(rate / statistics.mean(network), 3),
                 **info, "readers_alone_img_s": round(reading, 1), "device_stages_alone_img_s": round(staging, 1)}
    one = Colorizer(colorizer.model, device=device, size=size, precision=colorizer.precision, batch_size=1)
    im = Image.fromarray(photos()[1]).resize(photo_size, Image.BICUBIC)
    repeats = 5 if smoke else 50

    def stages():
        to_output(device_stages(one, [torch.from_numpy(to_rgb(im)[0])])[0], im, None)

    r["photo"] = f"{photo_size[0]}x{photo_size[1]}"
    r["latency_ms"] = {"colorize": round(latency_ms(lambda: one.colorize(im), repeats), 2),
                       "device_stages": round(latency_ms(stages, repeats), 2), "repeats": repeats}
    r["training"] = training_rates(smoke, "cpu" if device.type == "cpu" else "cuda", workers, 600 if smoke else 200)
    (out / "gpu_bulk.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "gpu_bulk.md").write_text(markdown(r))
    print(markdown(r))
    return 0 if not any("error" in t for t in r["training"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
