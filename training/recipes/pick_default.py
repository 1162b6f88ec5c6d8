"""Pick the default model among trained candidates by their val figures.

A candidate must match the reference run (METHOD / REFERENCE_RUNS: the paper's network
from scratch, 110 s on one H200: CF 33.5, TAR 5.1, CCAR 51.6, PSNR 21.0); among those
that do, the best sum of ranks over CF, TAR, CNR, CCAR and PSNR wins (ties: fewer
parameters). Prints a table and the winner's folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REFERENCE = {"cf": 33.5, "tar": 5.1, "ccar": 51.6, "psnr": 21.0}
COLUMNS = ("cf", "tar", "cnr", "ccar", "psnr")


def main(folders: list[str]) -> int:
    runs = []
    for f in folders:
        path = Path(f) / "training.json"
        if path.is_file():
            runs.append((Path(f), json.loads(path.read_text())))
    if not runs:
        print("no trained candidates found")
        return 1
    ranks = {id(r): 0 for _, r in runs}
    for col in COLUMNS:
        for rank, (_, r) in enumerate(sorted(runs, key=lambda fr: -fr[1]["val"][col])):
            ranks[id(r)] += rank
    print("| candidate | params M | img/s | " + " | ".join(COLUMNS) + " | meets ref |")
    for f, r in runs:
        ok = all(r["val"][k] >= v for k, v in REFERENCE.items())
        r["meets"] = ok
        print(f"| {f.name} | {r['parameters'] / 1e6:.1f} | {r['img_per_s']:.0f} | "
              + " | ".join(f"{r['val'][c]:.2f}" for c in COLUMNS) + f" | {ok} |")
    pool = [fr for fr in runs if fr[1]["meets"]] or runs
    best = min(pool, key=lambda fr: (ranks[id(fr[1])], fr[1]["parameters"]))
    print(f"best: {best[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
