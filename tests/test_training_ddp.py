"""The training command under torchrun: 2 CPU processes, gloo, DDP."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import TINY, env, image_tree, python


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    data = image_tree(tmp_path / "data", n=16)
    out = tmp_path / "ddp"
    cmd = [python(), "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "training.train",
           *TINY, "--data", str(data), "--val", str(data / "class_0"), "--out", str(out), "--steps", "3",
           "--workers", "0", "--tensorboard"]
    res = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads((out / "training.json").read_text())
    assert r["world_size"] == 2 and [k["rank"] for k in r["ranks"]] == [0, 1]
    # each rank trained on its own shard: disjoint halves of the 18 files, bad files met once
    assert [k["images"] for k in r["ranks"]] == [8, 8]
    assert sum(k["skipped"]["corrupt"] + k["skipped"]["grey"] for k in r["ranks"]) == 2
    # DDP kept the replicas identical (gradients averaged every step)
    assert r["ranks"][0]["param_sum"] == r["ranks"][1]["param_sum"]
    assert r["samples"] == 3 * 4 * 2 and "val" in r
    # only rank 0 logs and saves
    assert res.stdout.count("saved ") == 1 and res.stdout.count("classes: K") == 1
    assert len(list((out / "tb").iterdir())) == 1
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "checkpoint.pt", "config.json", "model.safetensors",
                                                    "tb", "training.json"]
