"""Run the paper's ablations as sweeps over a base config, and tabulate them.

    python -m training.ablate --base training/configs/cpu-small.yaml --sweeps bins,p,rebalance,classes \
        --data ../shared/data/train --val ../shared/data/val --out runs/ablate --parallel 2

Sweeps live in ``training/configs/ablations.yaml`` (Table II / Figure 13: bin size;
Figure 17: p; Figure 4: none vs ccc; Figure 3: all bins vs the optimised set). Each run
is ``python -m training.train --config BASE`` plus its overrides, in its own process and
folder; runs that coincide are trained once, and finished runs are not retrained. Writes
``OUT/ablation.md`` (one table per sweep) and ``OUT/grid.png`` (val images: grey input,
one column per chosen run, ground truth).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from training.train import build_parser, load_config

SWEEPS = Path(__file__).resolve().parent / "configs" / "ablations.yaml"
GRID_RUNS = ("rebalance=none", "p=4", "base", "p=16", "classes=all")


def _base_values(base: str) -> dict:
    parser = build_parser()
    values = {a.dest: a.default for a in parser._actions}
    values.update(load_config(base, parser))
    return values


def run_name(overrides: dict, base: dict) -> str:
    """``base`` when the overrides change nothing, else ``key=value,...`` of the changes."""
    diff = {k.replace("-", "_"): v for k, v in overrides.items() if str(base.get(k.replace("-", "_"))) != str(v)}
    return ",".join(f"{k.replace('_', '-')}={v}" for k, v in sorted(diff.items())) or "base"


def _train(name: str, overrides: dict, a, extra: list[str]) -> Path:
    out = Path(a.out) / name.replace("=", "").replace(",", "_")
    if (out / "training.json").is_file():
        return out
    cmd = [sys.executable, "-m", "training.train", "--config", a.base, "--data", a.data, "--out", str(out)]
    if a.val:
        cmd += ["--val", a.val]
    for k, v in overrides.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".log"), "w") as log:
        print(f"[ablate] {name}: {' '.join(cmd[2:])}", flush=True)
        rc = subprocess.run(cmd + extra, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc:
        raise RuntimeError(f"run {name} failed (exit {rc}); see {out.with_suffix('.log')}")
    return out


def _paper_params(K: int) -> float:
    """Parameters of the paper's network (DenseNet-121 + Table IV) for K classes: the
    1x1 head grows by 512 + 1 per class."""
    from ccc_nodes.modeling import CCCNet

    if not hasattr(_paper_params, "base"):
        net = CCCNet("densenet121", kept=[0])
        _paper_params.base = sum(p.numel() for p in net.parameters()) - 513
    return _paper_params.base + 513 * K


def table(rows: list[tuple[str, dict]]) -> str:
    head = ("| run | bin | G² | K | params M (this / paper net) | deviation mean / max | CF (GT) | CF | ΔCF | TAR % "
            "| CNR | CCAR % (GT) | PSNR dB | img/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows:
        v, a = r["val"], r["args"]
        lines.append(
            f"| {name} | {a['bin_size']} | {r['num_bins']} | {r['K']} | {r['parameters'] / 1e6:.2f} / "
            f"{_paper_params(r['K']) / 1e6:.2f} | {v['dev_mean']:.2f} / {v['dev_max']:.1f} | {v['cf_gt']:.1f} | "
            f"{v['cf']:.1f} | {v['delta_cf']:.1f} | {v['tar']:.2f} | {v['cnr']:.3f} | {v['ccar']:.1f} ({v['ccar_gt']:.1f}) | "
            f"{v['psnr']:.2f} | {r['img_per_s']:.1f} |")
    return "\n".join(lines)


def picture_grid(runs: dict[str, Path], val: str, out: Path, n: int = 5, size: int = 96, store: int = 112) -> None:
    """PNG: one row per val image; columns grey input, each run, ground truth."""
    import random

    import torch
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    from ccc_nodes.hub import load_model
    from training.data import list_sources, load_images
    from training.evaluate import colorize

    sources = list_sources(val)
    picks = sorted(random.Random(3).sample(range(len(sources)), n))
    images, _, _ = load_images([sources[i] for i in picks], store, workers=0, progress=False)
    gt = torch.nn.functional.interpolate(images.float() / 255, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
    from ccc_nodes.color import rgb_to_lab

    cols = [rgb_to_lab(gt)[:, :1].div(100).expand(-1, 3, -1, -1)]
    for path in runs.values():
        cols.append(colorize(load_model(str(path)), gt))
    cols.append(gt)
    tiles = torch.stack(cols, dim=1).flatten(0, 1)  # row-major: image by image
    grid = make_grid(tiles, nrow=len(cols), padding=2, pad_value=1.0)
    pic = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    header = Image.new("RGB", (pic.width, 14), "white")
    draw = ImageDraw.Draw(header)
    for i, label in enumerate(["grey", *runs.keys(), "truth"]):
        draw.text((2 + i * (size + 2) + 2, 1), label[:16], fill="black")
    full = Image.new("RGB", (pic.width, pic.height + 14), "white")
    full.paste(header, (0, 0))
    full.paste(pic, (0, 14))
    full.save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ablate", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="base config (YAML/JSON), e.g. training/configs/cpu-small.yaml")
    p.add_argument("--sweeps", default="bins,p,rebalance,classes", help=f"names from {SWEEPS.name}")
    p.add_argument("--sweep-file", default=str(SWEEPS))
    p.add_argument("--data", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--parallel", type=int, default=1, help="runs at a time")
    p.add_argument("--grid-images", type=int, default=5)
    p.add_argument("--grid-val", default=None, help="photos for the picture grid (default: --val)")
    a, extra = p.parse_known_args(argv)
    sweeps = yaml.safe_load(Path(a.sweep_file).read_text())
    base = _base_values(a.base)
    plan: dict[str, dict] = {}
    by_sweep: dict[str, list[str]] = {}
    for s in a.sweeps.split(","):
        if s not in sweeps:
            p.error(f"unknown sweep {s!r}; {a.sweep_file} has {', '.join(sweeps)}")
        for ov in sweeps[s]:
            name = run_name(ov, base)
            plan.setdefault(name, ov)
            by_sweep.setdefault(s, []).append(name)
    with ThreadPoolExecutor(max(1, a.parallel)) as pool:
        folders = dict(zip(plan, pool.map(lambda kv: _train(kv[0], kv[1], a, extra), plan.items()), strict=True))
    results = {n: json.loads((f / "training.json").read_text()) for n, f in folders.items()}
    text = [f"Base config `{a.base}`; val `{a.val}`.", ""]
    for s, names in by_sweep.items():
        text += [f"### {s}", "", table([(n, results[n]) for n in names]), ""]
    md = "\n".join(text)
    Path(a.out, "ablation.md").write_text(md)
    print(md)
    grid_runs = {n: folders[n] for n in GRID_RUNS if n in folders}
    if grid_runs:
        picture_grid(grid_runs, a.grid_val or a.val, Path(a.out, "grid.png"), a.grid_images, base["size"], base["store_size"])
        print(f"picture grid: {Path(a.out, 'grid.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
