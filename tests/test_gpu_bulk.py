"""The prepared GPU run of the bulk path and the training benchmark (benchmarks/gpu_bulk.sh)
end to end at its tiny --smoke size on the CPU: every step runs and the JSON and markdown
come back with every figure."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import REPO, env, python

pytestmark = pytest.mark.slow


def test_gpu_script_runs_every_step_at_smoke_size(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_bulk.sh"), str(out), "--smoke", "--device", "cpu"],
                         cwd=REPO, env={**env(), "PYTHON": python()}, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads((out / "gpu_bulk.json").read_text())
    assert r["smoke"] and r["device"] == "cpu"
    assert min(r["network_img_s"]) > 0 and r["bulk"]["img_s"] > 0 and r["bulk"]["images"] == 24
    assert r["bulk"]["readers_alone_img_s"] > 0 and r["bulk"]["device_stages_alone_img_s"] > 0
    assert r["latency_ms"]["colorize"] > 0 and r["latency_ms"]["device_stages"] > 0
    [t] = r["training"]
    assert "error" not in t and t["full_img_s"] > 0 and t["ratio"] > 0
    table = (out / "gpu_bulk.md").read_text()
    assert "SMOKE" in table and "bulk path end to end" in table and "training" in table
    assert (out / "gpu_bulk.log").read_text().count("GPU figures") == 1
