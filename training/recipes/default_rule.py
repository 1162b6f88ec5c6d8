"""The rule a model must meet to become the embedded default, and the run that measures it.

Every model is scored by ``ccc evaluate``'s own loop (:func:`ccc_nodes.job.evaluate.evaluate_folder`)
on the same photos in the same run: the shorter side to 224 px, the centre square, the
network at 224 px, argmax decoding unless a row says otherwise. A candidate meets the rule
when, against the reference (the model being replaced, scored in the same run):

- grid <= 1.2 (no visible 8x8 blocks);
- PSNR >= the reference's + 0.3 dB;
- wrong hue <= 1.1 x the reference's;
- washed <= the reference's + 5 points;
- CF >= 0.9 x the reference's;

and a person sees fewer blocks and blotches in the before/after picture the tool makes
(``docs/make_before_after.py --compare``), which no number here replaces. Among the
candidates that meet it, the best is the one with the least wrong hue (the aim: 0.75 x the
reference's and below), PSNR breaking ties.

    python -m training.recipes.default_rule runs/a runs/b --val ../shared/data/val --out runs/judge

prints and writes ``table.md`` and ``judge.json``: one row per model (``MODEL@annealed-mean``
scores a model with that decoding), the reference first, and for each candidate whether it
meets each item. ``--reference`` is the model the candidates are judged against; by default
the first embedded default (a GPU-trained Table IV model), read from this repository's
history (:data:`REFERENCE_COMMIT`), so that every later candidate is held to the same bar in
the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ccc_nodes.core.settings import INPUT_SIZE

ROOT = Path(__file__).resolve().parents[2]
# The embedded default the rule was written against (EfficientNet-Lite0 + Table IV, 150 s on
# one GPU), as it is in this commit of the repository: materialised by git when needed.
REFERENCE_COMMIT = "620f06d"
REFERENCE_FILES = ("config.json", "model.safetensors", "training.json")
EVAL_SIZE = INPUT_SIZE  # the evaluation view and the network's input, px
# The columns of the table: the rule's, then the rest a reader wants beside them.
COLUMNS = ("grid", "psnr", "wrong_hue", "washed", "false_color", "cf", "tar", "ccar", "cnr", "ssim")
HEADS = {"grid": "grid", "psnr": "PSNR dB", "wrong_hue": "wrong hue %", "washed": "washed %",
         "false_color": "false colour %", "cf": "CF", "tar": "TAR %", "ccar": "CCAR %", "cnr": "CNR", "ssim": "SSIM"}


@dataclass(frozen=True)
class Item:
    """One item of the rule: ``metric`` compared with a bound made from the reference's value."""

    metric: str
    text: str  # in words, with {ref} for the reference's value

    def bound(self, ref: float) -> float:
        return {"grid": 1.2, "psnr": ref + 0.3, "wrong_hue": 1.1 * ref, "washed": ref + 5.0, "cf": 0.9 * ref}[self.metric]

    def holds(self, value: float, ref: float) -> bool:
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            return False
        bound = self.bound(ref)
        return value >= bound if self.metric in ("psnr", "cf") else value <= bound


RULE = (
    Item("grid", "grid <= 1.2"),
    Item("psnr", "PSNR >= reference + 0.3 dB"),
    Item("wrong_hue", "wrong hue <= 1.1 x reference"),
    Item("washed", "washed <= reference + 5 points"),
    Item("cf", "CF >= 0.9 x reference"),
)


def judge(candidate: dict[str, float], reference: dict[str, float]) -> dict[str, bool]:
    """``{metric: holds}`` for each item of :data:`RULE`."""
    return {it.metric: it.holds(candidate.get(it.metric, math.nan), reference[it.metric]) for it in RULE}


def meets(candidate: dict[str, float], reference: dict[str, float]) -> bool:
    return all(judge(candidate, reference).values())


def best(rows: dict[str, dict[str, float]], reference: dict[str, float]) -> str | None:
    """The label of the best row that meets the rule: least wrong hue, then highest PSNR."""
    ok = [k for k, r in rows.items() if meets(r, reference)]
    return min(ok, key=lambda k: (rows[k]["wrong_hue"], -rows[k]["psnr"])) if ok else None


def reference_model(folder: Path) -> Path:
    """The rule's reference model, written into ``folder`` from this repository's history."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in REFERENCE_FILES:
        target = folder / name
        if target.is_file():
            continue
        try:
            data = subprocess.run(["git", "-C", str(ROOT), "show", f"{REFERENCE_COMMIT}:ccc_nodes/default_model/{name}"],
                                  check=True, capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            raise FileNotFoundError(f"the reference model (commit {REFERENCE_COMMIT}) needs a git checkout of this "
                                    f"repository with its history, or --reference DIR: {e}") from e
        target.write_bytes(data)
    return folder


def score(model: str, val: str | Path, decoding: str = "argmax", limit: int | None = None,
          progress: bool = True) -> dict[str, float]:
    """``ccc evaluate``'s figures of one model on ``val`` at :data:`EVAL_SIZE` px."""
    from ccc_nodes import Colorizer
    from ccc_nodes.job.evaluate import evaluate_folder

    colorizer = Colorizer(model, size=EVAL_SIZE, decoding=decoding)  # the GPU when there is one
    result = evaluate_folder(val, colorizer=colorizer, crop=EVAL_SIZE, lpips=False, fid=False, gallery=0,
                             limit=limit, progress=progress)
    return next(iter(result.rows.values()))


def shown(spec: str) -> str:
    """A row's name in the table: ``MODEL[@DECODING]`` with the model folder's name (the
    embedded default by that name), not its path."""
    model, _, decoding = spec.partition("@")
    path = Path(model)
    name = "embedded default" if path.exists() and path.resolve() == (ROOT / "ccc_nodes" / "default_model").resolve() \
        else path.name or model
    return name + (f" @{decoding}" if decoding else "")


def table(rows: dict[str, dict[str, float]], reference: str) -> str:
    """Markdown: one row per model, the rule's verdict for each but the reference."""
    ref = rows[reference]
    head = "| model | " + " | ".join(HEADS[c] for c in COLUMNS) + " | meets the rule |"
    lines = [head, "|---|" + "---:|" * len(COLUMNS) + "---|",
             "| rule | " + " | ".join(next((f"{'>=' if it.metric in ('psnr', 'cf') else '<='} {it.bound(ref[c]):.2f}"
                                             for it in RULE if it.metric == c), "") for c in COLUMNS) + " | |"]
    for label, r in rows.items():
        cells = [f"{r[c]:.2f}" if isinstance(r.get(c), (int, float)) and math.isfinite(r[c]) else "n/a" for c in COLUMNS]
        if label == reference:
            verdict = "(reference)"
        else:
            failed = [k for k, ok in judge(r, ref).items() if not ok]
            verdict = "yes" if not failed else "no: " + ", ".join(HEADS[k] for k in failed)
        lines.append(f"| {label if label == reference else shown(label)} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def run(candidates: list[str], val: str, out: Path, reference: str | None = None, limit: int | None = None,
        progress: bool = True) -> dict:
    """Score the reference and the candidates in one run; write ``table.md`` and ``judge.json``."""
    out.mkdir(parents=True, exist_ok=True)
    ref = reference or str(reference_model(out / "reference"))
    rows: dict[str, dict[str, float]] = {}
    for i, spec in enumerate([ref, *candidates]):
        model, _, decoding = spec.partition("@")
        rows["reference" if i == 0 else spec] = score(model, val, decoding or "argmax", limit, progress)
    winner = best({k: v for k, v in rows.items() if k != "reference"}, rows["reference"])
    text = table(rows, "reference") + "\n\n" + (f"best that meets the rule: {shown(winner)}" if winner else
                                                 "no candidate meets the rule")
    (out / "table.md").write_text(text + "\n")
    data = {"val": str(val), "size": EVAL_SIZE, "reference": ref, "rows": rows, "best": winner,
            "verdicts": {k: judge(v, rows["reference"]) for k, v in rows.items() if k != "reference"}}
    (out / "judge.json").write_text(json.dumps(data, indent=1, default=lambda v: None) + "\n")
    print(text)
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.recipes.default_rule", description=__doc__.split("\n\n")[0])
    p.add_argument("candidates", nargs="+", help="model folders (or Hub ids); MODEL@annealed-mean for that decoding")
    p.add_argument("--val", required=True, help="a folder of colour photos (../shared/data/val)")
    p.add_argument("--out", required=True, help="where table.md, judge.json (and the reference model) go")
    p.add_argument("--reference", help=f"the model judged against (default: the embedded default of commit "
                                       f"{REFERENCE_COMMIT}, from git)")
    p.add_argument("--limit", type=int, help="score only the first N photos (a quick look; the rule needs all)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    from ccc_nodes.core.hub import ModelLoadError

    try:
        run(a.candidates, a.val, Path(a.out), a.reference, a.limit, not a.no_progress)
    except (FileNotFoundError, ValueError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
