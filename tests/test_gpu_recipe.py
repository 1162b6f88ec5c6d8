"""The prepared GPU run (training/recipes/gpu_default.py + gpu_default.sh) end to end on
CPU at tiny size: pack within a byte budget, train with the written config, return the
model folder and the table."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest
from helpers import REPO, env, image_tree, python

ROOM = 30_000  # bytes: room for only some of the 24 training photos


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """(prepare's report, the pack folder) for 24 tiny training photos and 6 val photos."""
    from training.recipes.gpu_default import prepare

    tmp_path = tmp_path_factory.mktemp("gpu_recipe")
    train = image_tree(tmp_path / "train", n=24)
    val = image_tree(tmp_path / "val", n=6, bad=False)
    pack_dir = tmp_path / "pack"
    m = prepare(str(train), str(val), pack_dir, encoder="mobilenetv3_small_050", init="scratch",
                decoder_channels="16,16,16", room=ROOM, val_images=4, size=64, progress=False)
    return m, pack_dir


def test_recipe_packs_within_its_room(packed):
    m, pack_dir = packed
    assert m["pack_bytes"] <= ROOM and m["val_images"] == 4
    assert 0 < m["train_images"] < 24 and m["train_available"] == 26  # 24 photos, a grey and a corrupt file
    with tarfile.open(pack_dir / "train.tar") as tar:
        names = tar.getnames()
    assert len(names) == m["train_images"] and all(n.endswith(".webp") for n in names)
    config = json.loads((pack_dir / "config.json").read_text())
    assert config["decoder"] == "skip" and config["data"].endswith("train.tar") and config["eval_images"] == 4
    assert m["working_tree_bytes"] > 1_000_000  # the checkout's own files were counted


@pytest.mark.slow
def test_the_device_command_returns_model_and_table(packed, tmp_path):
    from ccc_nodes.core.hub import load_model

    _, pack_dir = packed
    out = tmp_path / "out"
    tiny = ["--steps", "2", "--batch", "4", "--workers", "1", "--device", "cpu", "--threads", "1",
            "--min-fraction", "0.001", "--log-every", "1"]
    res = subprocess.run(["bash", "training/recipes/gpu_default.sh", str(pack_dir), str(out), "60", *tiny], cwd=REPO,
                         env={**env(), "PYTHON": python(), "RUN_DIR": str(tmp_path / "run")},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert sorted(p.name for p in (out / "model").iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                                  "training.json"]
    model = load_model(out / "model")
    assert model.decoder_name == "skip" and model.encoder_name == "mobilenetv3_small_050"
    r = json.loads((out / "model" / "training.json").read_text())
    assert r["steps"] == 2 and r["val"]["images"] == 4 and "grid" in r["val"]
    table = (out / "judge" / "table.md").read_text()  # judged by the rule against the current default
    assert "| rule | <= 1.20 |" in table and "| reference |" in table and "| model |" in table  # the folder's name
    judged = json.loads((out / "judge" / "judge.json").read_text())
    assert judged["rows"]["reference"]["images"] == judged["rows"][str(out / "model")]["images"] == 4
    assert "trained 2 steps" in (out / "train.log").read_text()
