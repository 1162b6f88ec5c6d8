"""Start-up of the command line: `ccc --help`, `ccc colorize --help` and one cold colorization,
each as a ratio against `python -c "import torch"` timed in the same run.

    python benchmarks/cli_startup.py [--rounds 5] [--megapixels 1.0]

Every command is a fresh process (the installed `ccc` beside this interpreter), run in turn
round after round so that machine load hits all alike; the medians of wall time and of peak
resident memory are printed. "colorize 1 MP" colorizes one grey JPEG of about 1 MP (the
bundled examples/grey/chelsea.jpg enlarged) with the embedded default model on the CPU:
torch's import, the model's load, the network and the full-resolution join. `import timm`
is timed too: timm builds the other encoders and imports torchvision (and, through it,
torch._dynamo); the default's EfficientNet-Lite is built in plain torch
(ccc_nodes/core/modeling/efficientnet_lite.py), so a colorization with it imports neither.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--megapixels", type=float, default=1.0)
    a = p.parse_args()
    ccc = Path(sys.executable).with_name("ccc")
    if not ccc.is_file():
        raise SystemExit(f"no {ccc}: install the project into this interpreter's environment (README command 1)")
    with tempfile.TemporaryDirectory() as tmp:
        src = Image.open(ROOT / "examples" / "grey" / "chelsea.jpg")
        scale = (a.megapixels * 1e6 / (src.width * src.height)) ** 0.5
        one = Path(tmp) / "one.jpg"
        src.resize((round(src.width * scale), round(src.height * scale)), Image.BICUBIC).save(one, quality=95)
        w, h = Image.open(one).size
        commands = {
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            # what the default's encoder no longer costs: timm imports torchvision, which imports torch._dynamo
            'python -c "import timm"': [sys.executable, "-c", "import timm"],
            "ccc --help": [str(ccc), "--help"],
            "ccc colorize --help": [str(ccc), "colorize", "--help"],
            f"ccc colorize one.jpg ({w * h / 1e6:.1f} MP)": [str(ccc), "colorize", str(one), "-o", str(Path(tmp) / "out"),
                                                            "--device", "cpu", "-q"],
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        mems: dict[str, list[float]] = {k: [] for k in commands}
        for cmd in commands.values():  # warm the page cache once, not timed
            run(cmd)
        for _ in range(a.rounds):
            for name, cmd in commands.items():
                wall, mb = run(cmd)
                times[name].append(wall)
                mems[name].append(mb)
    base = statistics.median(times['python -c "import torch"'])
    print(f"{a.rounds} rounds, medians; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name in commands:
        t, m = statistics.median(times[name]), statistics.median(mems[name])
        print(f"{name:34s} {t:6.2f} s  {m:6.0f} MB  ratio to import torch {t / base:5.2f}")


if __name__ == "__main__":
    main()
