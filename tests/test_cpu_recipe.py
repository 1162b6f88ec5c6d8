"""The CPU recipe for the embedded default (training/recipes/cpu_default.py), the rule a new
default must meet (default_rule.py) and the recipe's lever of leaving out photos with little
colour (--min-colorfulness): the rule by hand, the recipe end to end at tiny size (real
trainer processes, real judgement through ccc evaluate's loop, promotion into a default folder)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
from helpers import REPO, TINY, env, image_tree, python

from training.recipes import default_rule
from training.recipes.cpu_default import LEVERS, chain_table, promote, start_model

REF = {"grid": 1.52, "psnr": 21.79, "wrong_hue": 12.0, "washed": 15.0, "cf": 35.0}


def test_the_rule_by_hand():
    ok = {"grid": 1.0, "psnr": 22.09, "wrong_hue": 13.2, "washed": 20.0, "cf": 31.5}
    assert default_rule.judge(ok, REF) == dict.fromkeys(("grid", "psnr", "wrong_hue", "washed", "cf"), True)
    # each item failing alone, just past its bound
    for metric, value in (("grid", 1.21), ("psnr", 22.08), ("wrong_hue", 13.21), ("washed", 20.01), ("cf", 31.49)):
        verdict = default_rule.judge(ok | {metric: value}, REF)
        assert [k for k, v in verdict.items() if not v] == [metric]
    assert not default_rule.meets(ok | {"psnr": math.nan}, REF)  # a figure that could not be measured never passes


def test_the_best_is_the_least_wrong_hue_among_those_that_meet_the_rule():
    rows = {"a": {"grid": 1.0, "psnr": 22.5, "wrong_hue": 11.0, "washed": 10.0, "cf": 34.0},
            "b": {"grid": 1.0, "psnr": 22.2, "wrong_hue": 10.0, "washed": 10.0, "cf": 34.0},
            "c": {"grid": 1.5, "psnr": 23.0, "wrong_hue": 5.0, "washed": 10.0, "cf": 34.0}}  # blocks: out
    assert default_rule.best(rows, REF) == "b"
    assert default_rule.best({"c": rows["c"]}, REF) is None
    text = default_rule.table({"reference": REF | {"tar": 6.5}, **rows}, "reference")
    assert "| c |" in text and "no: grid" in text and "| rule | <= 1.20 | >= 22.09 | <= 13.20 | <= 20.00 |" in text


def test_the_reference_comes_from_the_repositorys_history(tmp_path):
    folder = default_rule.reference_model(tmp_path / "ref")
    config = json.loads((folder / "config.json").read_text())
    assert config.get("decoder", "table4") == "table4" and config["encoder"] == "efficientnet_lite0"
    assert (folder / "model.safetensors").stat().st_size > 40e6


def test_drop_dull_leaves_out_photos_under_the_colourfulness():
    from ccc_nodes.core.metrics import colorfulness
    from training.data import drop_dull

    rng = np.random.default_rng(0)
    grey = np.full((3, 16, 16), 120, np.uint8)
    faint = grey.copy()
    faint[0] += 6  # a slight red cast: rg = 6, yb = 3 everywhere -> CF = 0.3 * sqrt(6^2 + 3^2) = 2.0
    vivid = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    images = torch.from_numpy(np.stack([grey, vivid, faint, vivid]))
    cf = colorfulness(images.float() / 255)
    assert cf[1] > 15 > cf[2] > cf[0]
    kept, dropped = drop_dull(images, 15.0, chunk=3)  # chunks do not change the answer
    assert dropped == 2 and torch.equal(kept, images[[1, 3]])
    assert drop_dull(images, 0.0) == (images, 0)


def test_min_colorfulness_needs_the_photos_in_memory(tmp_path):
    data = image_tree(tmp_path / "data", n=4, bad=False)
    r = subprocess.run([python(), "-m", "training.train", *TINY, "--data", str(data), "--out", str(tmp_path / "run"),
                        "--steps", "1", "--data-mode", "stream", "--workers", "0", "--min-colorfulness", "15"],
                       env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: --min-colorfulness needs the photos in memory")


def test_promotion_replaces_the_default_and_writes_the_chain(tmp_path):
    default, run = tmp_path / "default", tmp_path / "run-2"
    for folder, decoder in ((default, "table4"), (run, "skip")):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"decoder": decoder}))
        (folder / "model.safetensors").write_bytes(decoder.encode())
        (folder / "README.md").write_text(f"# {decoder}\n")
    (default / "training.json").write_text("{}")
    chain = [{"run": "run-1", "start": "the embedded default's encoder (GPU, Table IV)", "lever": "base", "steps": 10,
              "samples": 160, "train_seconds": 30, "wall_seconds": 40, "machine": "cpu"},
             {"run": "run-2", "start": "run-1 (all weights)", "lever": "p16", "steps": 5, "samples": 80,
              "train_seconds": 15, "wall_seconds": 20, "machine": "cpu"}]
    (run / "training.json").write_text(json.dumps({"chain": chain}))
    assert start_model(default)[0][:2] == ["--init", str(default / "model.safetensors")]  # Table IV: its encoder only
    promote(run, "| judged |", default)
    assert (default / "model.safetensors").read_bytes() == b"skip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default", "run-2"]  # replaced, nothing added beside it
    card = (default / "README.md").read_text()
    assert card.startswith("# skip") and "| run-2 | run-1 (all weights) | p16 | 5 | 80 | 15 | 20 | cpu |" in card
    assert "| all | | | | 240 | | 60 | |" in card and "| judged |" in card
    init, got = start_model(default)  # a model of the recipe: every weight, its classes
    assert init[:4] == ["--init", str(default), "--classes", str(default / "config.json")] and got == chain
    assert chain_table(chain).count("\n") == 4


@pytest.mark.slow
def test_the_recipe_trains_from_the_best_judges_and_continues(tmp_path):
    train, val = image_tree(tmp_path / "train", n=12), image_tree(tmp_path / "val", n=4, bad=False)
    tiny = [*TINY, "--steps", "2", "--workers", "0", "--threads", "1"]
    default = tmp_path / "default"  # a Table IV model standing in for the embedded default
    subprocess.run([python(), "-m", "training.train", "--data", str(train), "--out", str(default), "--steps", "2",
                    "--decoder", "table4", *TINY, "--workers", "0", "--save-dtype", "fp16"],
                   env=env(), check=True, capture_output=True, timeout=600)
    reference = shutil.copytree(default, tmp_path / "reference")  # the rule's bar stays while the default moves

    def recipe(out, lever):
        r = subprocess.run([python(), "-m", "training.recipes.cpu_default", str(train), str(val), str(out),
                            "--minutes", "8", "--lever", lever, "--default", str(default), "--reference", str(reference),
                            "--promote", "--threads", "1", "--workers", "0", *tiny],
                           cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    out1 = recipe(tmp_path / "run-1", "base")
    assert f"--init {default / 'model.safetensors'} --classes data" in out1  # the first run: the default's encoder
    judged = json.loads((tmp_path / "run-1" / "judge" / "judge.json").read_text())
    run1 = str(tmp_path / "run-1")
    assert list(judged["rows"]) == ["reference", run1, f"{run1}@confident"] and judged["rows"]["reference"]["images"] == 4
    assert "wrong hue %" in (tmp_path / "run-1" / "judge" / "table.md").read_text()
    r1 = json.loads((tmp_path / "run-1" / "training.json").read_text())
    assert [c["lever"] for c in r1["chain"]] == ["base"] and r1["chain"][0]["samples"] == 8

    promote(tmp_path / "run-1", "| judged |", default)  # as --promote does when the run is the best
    out2 = recipe(tmp_path / "run-2", "p16")
    assert f"--init {default} --classes {default / 'config.json'}" in out2 and "--p 16" in out2
    r2 = json.loads((tmp_path / "run-2" / "training.json").read_text())
    assert [(c["run"], c["lever"]) for c in r2["chain"]] == [("run-1", "base"), ("run-2", "p16")]
    assert r2["chain"][1]["start"] == "run-1 (all weights)"
    judged = json.loads((tmp_path / "run-2" / "judge" / "judge.json").read_text())
    run2 = str(tmp_path / "run-2")
    assert list(judged["rows"]) == ["reference", run2, f"{run2}@confident", str(default), f"{default}@confident"]
    promoted = judged["best"] is not None and judged["best"].partition("@")[0] == run2
    assert ("replaced" in out2) == promoted and (default / "README.md").read_text().count("| run-2 |") == promoted
    assert set(LEVERS) >= {"base", "colourful", "p16"}


def test_rows_are_named_by_folder_and_decoding_not_by_path(tmp_path):
    from ccc_nodes.core.hub import DEFAULT_MODEL_DIR

    assert default_rule.shown(str(tmp_path / "runs" / "cpu-2")) == "cpu-2"
    assert default_rule.shown(f"{tmp_path / 'cpu-2'}@confident") == "cpu-2 @confident"
    assert default_rule.shown(f"{DEFAULT_MODEL_DIR}@argmax") == "embedded default @argmax"
