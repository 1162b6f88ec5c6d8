"""Compare trained runs with the reference runs of the training issue.

The reference (the paper's network, DenseNet-121 from scratch, 110 s on one H200, val
at 224 px, argmax decoding) - a run of this package passes when, at the same time
budget and rebalancing, it does at least as well on CF, CNR and CCAR and comes within
1 dB of PSNR (TAR is reported, not required: rebalancing trades it for colour).

    python -m training.recipes.reference_check runs/densenet121-ccc runs/densenet121-none

Prints a Markdown table; exits 1 if a run fails its row, 2 if a folder has no results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# rebalancing -> figures of the reference run (CF of the ground truth 42.4)
REFERENCE = {
    "none": {"cf": 30.2, "tar": 6.8, "cnr": 0.49, "ccar": 45.1, "psnr": 21.6, "img_per_s": 1704},
    "ccc": {"cf": 33.5, "tar": 5.1, "cnr": 0.62, "ccar": 51.6, "psnr": 21.0, "img_per_s": 1722},
}
AT_LEAST = ("cf", "cnr", "ccar")
PSNR_SLACK = 1.0


def verdict(run: dict) -> tuple[bool, list[str]]:
    """(passes, the columns that miss) of one run's training.json against its reference row."""
    ref = REFERENCE[run["args"]["rebalance"]]
    val = run["val"]
    misses = [k for k in AT_LEAST if val[k] < ref[k]]
    if val["psnr"] < ref["psnr"] - PSNR_SLACK:
        misses.append("psnr")
    return not misses, misses


def main(folders: list[str]) -> int:
    if not folders:
        print(__doc__)
        return 2
    runs = []
    for f in folders:
        path = Path(f) / "training.json"
        if not path.is_file():
            print(f"{f}: no training.json (the run did not finish)", file=sys.stderr)
            return 2
        run = json.loads(path.read_text())
        if run["args"]["rebalance"] not in REFERENCE or "val" not in run:
            print(f"{f}: no reference row for rebalancing {run['args']['rebalance']!r}, or no val figures", file=sys.stderr)
            return 2
        runs.append((Path(f).name, run))
    cols = ("cf", "tar", "cnr", "ccar", "psnr")
    print("| run | rebalancing | train s | img/s (steady) | " + " | ".join(c.upper() for c in cols) + " | passes |")
    print("|---" * (len(cols) + 5) + "|")
    ok = True
    for name, run in runs:
        mode = run["args"]["rebalance"]
        passes, misses = verdict(run)
        ok &= passes
        ref = REFERENCE[mode]
        steady = run.get("img_per_s_steady")
        rate = f"{run['img_per_s']:,.0f}" + (f" ({steady:,.0f})" if steady else "")
        print(f"| {name} | {mode} | {run['train_seconds']:.0f} | {rate} | "
              + " | ".join(f"{run['val'][c]:.2f}" for c in cols) + f" | {'yes' if passes else 'no: ' + ', '.join(misses)} |")
        print(f"| reference | {mode} | 110 | {ref['img_per_s']:,} | " + " | ".join(f"{ref[c]}" for c in cols) + " | |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
