"""The CPU recipe for the embedded default: one command, one session, the climb goes on.

    python -m training.recipes.cpu_default ../shared/data/train ../shared/data/val runs/cpu-1 \\
        --minutes 110 --lever base --promote

trains the best model this 2-core CPU can in ``--minutes`` of wall time (training, then the
judgement), starting from the best so far, and judges it by the rule of
:mod:`training.recipes.default_rule` on the whole val set:

- **start**: the embedded default (``ccc_nodes/default_model``) when it is a model of this
  recipe (skip decoder): all its weights and classes (fine-tuning), so each session climbs
  from the last; otherwise (the GPU-trained Table IV model) its encoder, with a new skip
  decoder and the training data's classes.
- **train**: EfficientNet-Lite0 + skip decoder (256, 128, 128), every training photo in
  memory at 160 px, batch 16, Adam with a constant rate, ccc p = 10, the weight average,
  weights saved in fp16; plus the ``--lever`` (:data:`LEVERS`).
- **judge**: the new model and the current default, each with the decodings of
  :data:`JUDGED_DECODINGS`, and the rule's reference, in one run (``OUT/judge/table.md``).
- **promote** (``--promote``): when the new model meets the rule and is the best of the
  rows by it, it replaces ``ccc_nodes/default_model`` (replaced, never added), with its
  model card: the chain of runs that made it (each run's start, lever, samples and wall
  time) and the judgement's table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from training.recipes import default_rule

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "ccc_nodes" / "default_model"
MODEL_FILES = ("config.json", "model.safetensors", "README.md", "training.json")
# The recipe's trainer options (a first run; LEVERS change some, a continued run lowers the rate).
RECIPE = ["--encoder", "efficientnet_lite0", "--decoder", "skip", "--decoder-channels", "256,128,128",
          "--size", "160", "--store-size", "160", "--batch", "16", "--lr", "3e-4", "--warmup", "100",
          "--schedule", "constant", "--rebalance", "ccc", "--p", "10", "--data-mode", "memory",
          "--save-dtype", "fp16", "--no-progress", "--log-every", "100", "--no-tensorboard"]
CONTINUED = ["--lr", "1.5e-4", "--warmup", "20"]  # fine-tuning a model of this recipe
# What each lever changes (training/README.md's table says what each gave).
LEVERS = {
    "base": [],
    "colourful": ["--min-colorfulness", "15"],  # BigColor / DDColor: train on photos of CF >= 15 only
    "p16": ["--p", "16"],  # softer rebalancing: rare (often wrong) colours weigh less
    "p4": ["--p", "4"],  # more vivid
    "size192": ["--size", "192", "--store-size", "192"],  # closer to the 224 px users see
}
LEVERS["colourful192"] = LEVERS["colourful"] + LEVERS["size192"]
# the colourful set with the rate decayed to 0 over the run (cosine) instead of held: a fine-tune that settles
LEVERS["colourful_cosine"] = LEVERS["colourful"] + ["--schedule", "cosine"]
LEVERS["colourful192_p13"] = LEVERS["colourful192"] + ["--p", "13"]  # cpu-4's extra colour spent on less wrong hue
LEVERS["colourful_p13"] = LEVERS["colourful"] + ["--p", "13"]  # cpu-3's recipe, rare colours weighed a little less
JUDGE_SECONDS = 420  # kept for decoding the photos, saving, the trainer's val pass and the judgement
# Each model is judged with these decodings (METHOD.md section 8): the network is the same,
# the rows say what each decoding gives.
JUDGED_DECODINGS = ("argmax", "confident")


def start_model(default_dir: Path = DEFAULT_DIR) -> tuple[list[str], list[dict]]:
    """The trainer's ``--init`` / ``--classes`` for the best so far, and that model's chain of runs."""
    config = json.loads((default_dir / "config.json").read_text())
    if config.get("decoder") == "skip":
        chain = json.loads((default_dir / "training.json").read_text()).get("chain", [])
        return ["--init", str(default_dir), "--classes", str(default_dir / "config.json"), *CONTINUED], chain
    return ["--init", str(default_dir / "model.safetensors"), "--classes", "data"], []


def train(train_dir: str, val_dir: str, out: Path, seconds: float, lever: str, threads: int, workers: int,
          default_dir: Path = DEFAULT_DIR, extra: list[str] | None = None) -> dict:
    """Run the trainer; return the run's ``training.json`` with ``chain`` (the start's chain plus this run)."""
    start, chain = start_model(default_dir)
    cmd = [sys.executable, "-m", "training.train", "--data", train_dir, "--val", val_dir, "--out", str(out),
           *RECIPE, *start, *LEVERS[lever], "--time-budget", f"{seconds:.0f}", "--threads", str(threads),
           "--workers", str(workers), *(extra or [])]
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    r = json.loads((out / "training.json").read_text())
    started_from = "the embedded default's encoder (GPU, Table IV)" if not chain and "data" in start else \
        f"{chain[-1]['run']} (all weights)" if chain else "the embedded default (all weights)"
    r["chain"] = [*chain, {"run": out.name, "start": started_from, "lever": lever, "steps": r["steps"],
                           "samples": r["samples"], "train_seconds": round(r["train_seconds"]),
                           "wall_seconds": round(time.time() - t0), "machine": r["machine"]}]
    (out / "training.json").write_text(json.dumps(r, indent=1) + "\n")
    return r


def chain_table(chain: list[dict]) -> str:
    lines = ["| run | started from | lever | steps | samples | training s | wall s | machine |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    lines += [f"| {c['run']} | {c['start']} | {c['lever']} | {c['steps']:,} | {c['samples']:,} | {c['train_seconds']:,} "
              f"| {c['wall_seconds']:,} | {c['machine']} |" for c in chain]
    total = sum(c["samples"] for c in chain), sum(c["wall_seconds"] for c in chain)
    lines.append(f"| all | | | | {total[0]:,} | | {total[1]:,} | |")
    return "\n".join(lines)


def promote(model: Path, judge_table: str, default_dir: Path = DEFAULT_DIR) -> None:
    """Replace the default's files with ``model``'s, its card extended by the chain and the judgement."""
    r = json.loads((model / "training.json").read_text())
    card = (model / "README.md").read_text().rstrip("\n")
    card += ("\n\n## The chain of runs\n\nEach run started from the one before (`python -m training.recipes.cpu_default`"
             ", training/README.md):\n\n" + chain_table(r.get("chain", [])) +
             "\n\n## Judged by the rule for a new default\n\nAll val photos at 224 px, argmax decoding, "
             "`python -m training.recipes.default_rule` (the reference is the first embedded default, "
             "a GPU-trained Table IV model):\n\n" + judge_table.strip() + "\n")
    tmp = default_dir.with_name(default_dir.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in MODEL_FILES:
        if name == "README.md":
            (tmp / name).write_text(card)
        else:
            shutil.copy2(model / name, tmp / name)
    old = default_dir.with_name(default_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    default_dir.rename(old)
    tmp.rename(default_dir)
    shutil.rmtree(old)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.recipes.cpu_default", description=__doc__.split("\n\n")[0])
    p.add_argument("train", help="training photos (folder, tar, list)")
    p.add_argument("val", help="val photos (a folder): the judgement scores all of them")
    p.add_argument("out", help="the run's folder: the model, its checkpoint, judge/")
    p.add_argument("--minutes", type=float, default=110, help="wall time of the whole recipe (default 110)")
    p.add_argument("--lever", choices=sorted(LEVERS), default="base", help="what this run changes (default base)")
    p.add_argument("--promote", action="store_true", help="replace ccc_nodes/default_model when the run is the best")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reference", help="the rule's reference model (default: default_rule's, from git)")
    p.add_argument("--default", default=str(DEFAULT_DIR), help="the best so far: the model started from and, with "
                   "--promote, replaced (default: the embedded default)")
    p.add_argument("--judge-limit", type=int, help="judge on the first N val photos only (a quick check)")
    a, extra = p.parse_known_args(argv)
    out = Path(a.out)
    seconds = a.minutes * 60 - JUDGE_SECONDS
    if seconds < 60:
        p.error(f"--minutes {a.minutes:g} leaves no time to train ({JUDGE_SECONDS} s go to loading and the judgement)")
    try:
        default_dir = Path(a.default)
        train(a.train, a.val, out, seconds, a.lever, a.threads, a.workers, default_dir, extra)
        models = [str(out)] + ([str(default_dir)] if json.loads((default_dir / "config.json").read_text())
                               .get("decoder") == "skip" else [])
        candidates = [m if d == "argmax" else f"{m}@{d}" for m in models for d in JUDGED_DECODINGS]
        verdict = default_rule.run(candidates, a.val, out / "judge", a.reference, a.judge_limit)
    except subprocess.CalledProcessError as e:
        print(f"error: the trainer stopped with status {e.returncode}; its checkpoint is in {out}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if verdict["best"] is not None and verdict["best"].partition("@")[0] == str(out):
        if a.promote:
            promote(out, (out / "judge" / "table.md").read_text(), default_dir)
            print(f"{out} is the best by the rule: it replaced {default_dir}")
        else:
            print(f"{out} is the best by the rule; --promote makes it the embedded default")
    else:
        print(f"{out} is not the best by the rule ({verdict['best'] or 'none meets it'}): the default stays")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
