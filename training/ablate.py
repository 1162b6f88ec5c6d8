"""Run the paper's ablations as sweeps over a base config, and tabulate them.

    python -m training.ablate --base training/configs/cpu-small.yaml --sweeps bins,p,rebalance,classes \\
        --data ../shared/data/train --val ../shared/data/val --out runs/ablate --parallel 2

Sweeps live in ``training/configs/ablations.yaml`` (Table II / Figure 13: bin size;
Figure 17: p; Figure 4: none vs ccc; Figure 3: all bins vs the optimised set). Each run
is ``python -m training.train --config BASE`` plus its overrides and every option this
command does not know, in its own process and folder. Overrides are compared as the
trainer reads them (``p: 10`` is the base's 10.0), so runs that coincide are trained
once. Each run's effective options are recorded in ``OUT/RUN.json``: a finished run is
reused only while they match, an unfinished one is resumed, anything else is retrained.
Writes ``OUT/ablation.md`` (one table per sweep) and ``OUT/grid.png`` (val images: grey
input, one column per chosen run, ground truth).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from training.args import build_parser, load_config, parse_args

SWEEPS = Path(__file__).resolve().parent / "configs" / "ablations.yaml"
GRID_RUNS = ("rebalance=none", "p=4", "base", "p=16", "classes=all")
RECORD_IGNORES = ("resume",)  # ablate sets it itself to continue an unfinished run


class AblateError(Exception):
    """A problem with the sweeps or the options, reported as one ``error:`` line."""


def _typed(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """Option values as the trainer reads them, from the public ``parse_args``; bad
    values raise :class:`argparse.ArgumentError` instead of exiting."""
    parser.exit_on_error = False
    return vars(parser.parse_args(argv))


def _base_values(base: str) -> dict:
    """Every train option with the base config applied, typed as the trainer types it."""
    parser = build_parser()
    parser.set_defaults(**_trainer_check(load_config, base, parser))
    return _typed(parser, [])


def override_argv(overrides: dict) -> list[str]:
    """Sweep overrides as train command-line options (lists joined with commas as in a
    config file; booleans as ``--x`` / ``--no-x``)."""
    argv: list[str] = []
    for k, v in overrides.items():
        flag = "--" + str(k).replace("_", "-")
        if v is None:
            continue
        if isinstance(v, bool):
            argv.append(flag if v else "--no-" + flag[2:])
        elif isinstance(v, (list, tuple)):
            argv += [flag, ",".join(map(str, v))]
        else:
            argv += [flag, str(v)]
    return argv


def _text(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, float) else str(v)


def typed_overrides(overrides: dict, base: dict) -> dict:
    """The overrides converted by the train parser's types: ``{p: 10}`` -> ``{"p": 10.0}``."""
    unknown = [k for k in overrides if str(k).replace("-", "_") not in base or str(k) in ("config", "help")]
    if unknown:
        raise AblateError(f"unknown train option {unknown[0]!r} (see python -m training.train --help)")
    try:
        values = _trainer_check(_typed, build_parser(), override_argv(overrides))
    except argparse.ArgumentError as e:
        raise AblateError(str(e)) from e
    return {k.replace("-", "_"): values[k.replace("-", "_")] for k in map(str, overrides)}


def run_name(overrides: dict, base: dict) -> str:
    """``base`` when the overrides change nothing (compared as typed values), else
    ``key=value,...`` of the changes."""
    diff = {k: v for k, v in typed_overrides(overrides, base).items() if v != base.get(k)}
    return ",".join(f"{k.replace('_', '-')}={_text(v)}" for k, v in sorted(diff.items())) or "base"


def run_folder(out: str | Path, name: str) -> Path:
    return Path(out) / re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("=", "").replace(",", "_"))


@dataclass
class Run:
    """One training run of the plan: where it goes, its command, its effective options."""

    name: str
    folder: Path
    argv: list[str]  # after python -m training.train
    options: dict = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.folder.parent / (self.folder.name + ".log")

    @property
    def record(self) -> Path:
        return self.folder.parent / (self.folder.name + ".json")

    @property
    def command(self) -> str:
        return shlex.join(["python", "-m", "training.train", *self.argv])


def _trainer_check(fn, *args):
    """Call one of the trainer's option readers; its exits (argparse's usage and error
    lines, or an ``error: ...`` message) become one :class:`AblateError`."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fn(*args)
    except SystemExit as e:
        text = e.code if isinstance(e.code, str) else (err.getvalue().strip().splitlines() or ["invalid options"])[-1]
        raise AblateError(text.split("error: ", 1)[-1]) from None


def _effective_options(argv: list[str]) -> dict:
    """What ``python -m training.train ARGV`` would run with (checked by the trainer's own
    parser), as JSON values."""
    ns = _trainer_check(parse_args, argv)
    return json.loads(json.dumps({k: v for k, v in vars(ns).items() if k not in RECORD_IGNORES}))


def _previous_options(run: Run) -> dict | None:
    """The options the run in ``run.folder`` was started with: its record, else (a run
    from before records) the finished run's own ``training.json``."""
    for path, key in ((run.record, "options"), (run.folder / "training.json", "args")):
        try:
            opts = json.loads(path.read_text())[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return {k: v for k, v in opts.items() if k not in RECORD_IGNORES}
    return None


def _differences(before: dict, now: dict) -> str:
    keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    shown = [f"--{k.replace('_', '-')} {before.get(k)!r} -> {now.get(k)!r}" for k in keys[:4]]
    return ", ".join(shown) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def prepare(run: Run) -> bool:
    """Decide what to do with ``run``: False to reuse a finished run with the same
    options; True to train it (resuming an unfinished run with the same options,
    else starting afresh in an emptied folder). Says which on stdout."""
    before = _previous_options(run)
    same = before == run.options
    if same and (run.folder / "training.json").is_file():
        print(f"[ablate] {run.name}: reusing {run.folder} (trained with the same options)", flush=True)
        return False
    if same and (run.folder / "checkpoint.pt").is_file():
        print(f"[ablate] {run.name}: resuming the unfinished run in {run.folder}", flush=True)
        run.argv.append("--resume")
    elif run.folder.exists() and any(run.folder.iterdir()):
        why = ("it did not finish and left no checkpoint" if same else "its options are not recorded" if before is None
               else f"the options changed since it was started ({_differences(before, run.options)})")
        print(f"[ablate] {run.name}: retraining, {why}; removing the old {run.folder}", flush=True)
        shutil.rmtree(run.folder)
    run.record.parent.mkdir(parents=True, exist_ok=True)
    run.record.write_text(json.dumps({"run": run.name, "command": run.command, "options": run.options}, indent=1))
    return True


def _train(run: Run) -> int:
    """Train ``run`` in its own process (the same ``training`` package as this one);
    returns its exit status."""
    cmd = [sys.executable, "-m", "training.train", *run.argv]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    run.folder.mkdir(parents=True, exist_ok=True)
    print(f"[ablate] {run.name}: {run.command}", flush=True)
    with open(run.log, "w") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def _paper_params(K: int) -> float:
    """Parameters of the paper's network (DenseNet-121 + Table IV) for K classes: the
    1x1 head grows by 512 + 1 per class."""
    from ccc_nodes.core.modeling import CCCNet

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

    from ccc_nodes.core.hub import load_model
    from training.data import list_sources, load_images
    from training.evaluate import colorize

    sources = list_sources(val)
    picks = sorted(random.Random(3).sample(range(len(sources)), min(n, len(sources))))
    images, _, _ = load_images([sources[i] for i in picks], store, workers=0, progress=False)
    gt = torch.nn.functional.interpolate(images.float() / 255, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
    from ccc_nodes.core.color import rgb_to_lab

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


EPILOG = """\
Every option not listed above is passed on to `python -m training.train` for every run,
after the sweep's overrides (e.g. --steps 2000 --device cuda --workers 4); see
`python -m training.train --help`. --data, --val and --out are given per run by this
command and the base config stands for --config.
"""


def build_ablate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.ablate", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # --p, --s... belong to the trainer, not to --parallel, --sweeps
    p.add_argument("--base", required=True, help="base config (YAML/JSON), e.g. training/configs/cpu-small.yaml")
    p.add_argument("--sweeps", default="bins,p,rebalance,classes", help=f"comma-separated sweep names from {SWEEPS.name}")
    p.add_argument("--sweep-file", default=str(SWEEPS), help="YAML file of sweeps: name -> list of option overrides")
    p.add_argument("--data", required=True, help="training images for every run (as python -m training.train --data)")
    p.add_argument("--val", required=True, help="validation images for every run and the tables")
    p.add_argument("--out", required=True, help="folder of the runs (one sub-folder each), ablation.md and grid.png")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time")
    p.add_argument("--grid-images", type=int, default=5, help="val images in grid.png (0: no grid)")
    p.add_argument("--grid-val", default=None, help="photos for the picture grid (default: --val)")
    return p


def _plan(a: argparse.Namespace, extra: list[str]) -> tuple[list[Run], dict[str, list[str]], dict]:
    """The runs of the chosen sweeps (coinciding ones once) and each sweep's run names."""
    if any(x.split("=", 1)[0] == "--config" for x in extra):
        raise AblateError("--config is not passed on: the base config is --base, the sweeps override it")
    try:
        sweeps = yaml.safe_load(Path(a.sweep_file).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise AblateError(f"--sweep-file {a.sweep_file}: {' '.join(str(e).split())}") from e
    if not isinstance(sweeps, dict):
        raise AblateError(f"--sweep-file {a.sweep_file}: expected a mapping of sweep name -> list of overrides")
    base = _base_values(a.base)
    plan: dict[str, dict] = {}
    by_sweep: dict[str, list[str]] = {}
    for s in a.sweeps.split(","):
        if s not in sweeps:
            raise AblateError(f"unknown sweep {s!r}; {a.sweep_file} has {', '.join(map(str, sweeps))}")
        if not isinstance(sweeps[s], list) or not all(isinstance(ov, dict) for ov in sweeps[s]):
            raise AblateError(f"{a.sweep_file}: sweep {s!r} must be a list of option mappings like {{p: 4}}")
        for ov in sweeps[s]:
            try:
                name = run_name(ov, base)
            except AblateError as e:
                raise AblateError(f"{a.sweep_file}: sweep {s!r}, {ov}: {e}") from e
            plan.setdefault(name, ov)
            by_sweep.setdefault(s, []).append(name)
    runs = []
    for name, ov in plan.items():
        folder = run_folder(a.out, name)
        argv = ["--config", a.base, "--data", a.data, "--val", a.val, "--out", str(folder), *override_argv(ov), *extra]
        try:
            runs.append(Run(name, folder, argv, _effective_options(argv)))
        except AblateError as e:
            raise AblateError(f"run {name}: {e}") from None
    return runs, by_sweep, base


def main(argv: list[str] | None = None) -> int:
    p = build_ablate_parser()
    a, extra = p.parse_known_args(argv)
    if a.parallel < 1 or a.grid_images < 0:
        p.error("--parallel must be at least 1 and --grid-images at least 0")
    try:
        runs, by_sweep, base = _plan(a, extra)
    except AblateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    todo = [r for r in runs if prepare(r)]
    failed: list[tuple[Run, int]] = []
    with ThreadPoolExecutor(a.parallel) as pool:
        futures = {pool.submit(_train, r): r for r in todo}
        for f in as_completed(futures):
            if f.cancelled():
                continue
            rc = f.result()
            if rc:
                failed.append((futures[f], rc))
                for g in futures:  # runs not started yet wait for the next invocation
                    g.cancel()
    if failed:
        waiting = sum(f.cancelled() for f in futures)
        if waiting:
            print(f"[ablate] {waiting} run(s) not started; the same command continues from here", flush=True)
        for run, rc in failed:
            print(f"error: run {run.name} failed (exit {rc}); see {run.log}", file=sys.stderr)
        return 1
    folders = {r.name: r.folder for r in runs}
    results = {n: json.loads((f / "training.json").read_text()) for n, f in folders.items()}
    text = [f"Base config `{a.base}`; val `{a.val}`.", ""]
    for s, names in by_sweep.items():
        text += [f"### {s}", "", table([(n, results[n]) for n in names]), ""]
    md = "\n".join(text)
    Path(a.out, "ablation.md").write_text(md)
    print(md)
    grid_runs = {n: folders[n] for n in GRID_RUNS if n in folders}
    if grid_runs and a.grid_images:
        picture_grid(grid_runs, a.grid_val or a.val, Path(a.out, "grid.png"), a.grid_images, base["size"], base["store_size"])
        print(f"picture grid: {Path(a.out, 'grid.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
