"""Training tools as a new user meets them: ablate, pack, export, stats, evaluate, the
model card and checkpoints - their results and their one-line errors."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, crops, env, image_tree, jpeg, make_model, python
from PIL import Image

from training.data import list_sources, load_images


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]  # progress bars aside
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- checkpoints
_RAN: list[str] = []


def _ran(tag: str) -> None:
    _RAN.append(tag)


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return _ran, ("unpickled",)


def test_checkpoint_cleans_stale_temporaries_and_has_ordinary_permissions(tmp_path):
    from training.checkpoint import atomic_save, load_checkpoint

    path = tmp_path / "checkpoint.pt"
    stale = tmp_path / "checkpoint.pt.k1ll3d.tmp"  # what a SIGKILL during a save leaves
    other = tmp_path / "other.pt.abc.tmp"
    stale.write_bytes(b"\0" * 100_000)
    other.write_bytes(b"not ours")
    old = os.umask(0o022)
    try:
        atomic_save({"step": 1}, path)
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        atomic_save({"step": 2}, path)
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "other.pt.abc.tmp"]
    stale.write_bytes(b"\0" * 10)
    assert load_checkpoint(path)["step"] == 2
    assert not stale.exists() and other.exists()


def test_checkpoint_is_read_weights_only_with_the_rng_states(tmp_path):
    from training.checkpoint import CheckpointError, atomic_save, load_checkpoint, rng_state, set_rng_state

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), betas=(0.5, 0.999))
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = tmp_path / "checkpoint.pt"
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "rng": [rng_state()], "losses": [(1, 0.5)],
             "args": {"p": 10.0, "val": None, "compile": False}, "counts": torch.arange(5), "skipped": {"grey": [3]}}
    expected = (random.random(), np.random.rand(), torch.rand(1))
    atomic_save(state, path)
    loaded = load_checkpoint(path)
    set_rng_state(loaded["rng"][0])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    assert loaded["losses"] == [(1, 0.5)] and loaded["args"]["p"] == 10.0
    assert opt.load_state_dict(loaded["optimizer"]) is None

    atomic_save({"step": 1, "x": RunsCodeWhenUnpickled()}, path)
    with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
        load_checkpoint(path)
    assert _RAN == []  # weights_only: the file could not run code


# ---------------------------------------------------------------- pack
def _places_like(root: Path) -> Path:
    """Places365's layout: the same file names in every class folder, and one PNG."""
    arrs = crops(3, size=80)
    for i, cls in enumerate(["a/airfield", "b/beach"]):
        (root / cls).mkdir(parents=True)
        (root / cls / "00000001.jpg").write_bytes(jpeg(arrs[i]))
    Image.fromarray(arrs[2]).save(root / "b/beach/00000002.png")
    return root


def test_pack_keeps_folder_paths_and_real_suffixes(tmp_path, capsys):
    from training.pack import main

    src = _places_like(tmp_path / "places")
    out = tmp_path / "p.tar"
    assert main([str(src), str(out), "--size", "32"]) == 0
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["a/airfield/00000001.jpg", "b/beach/00000001.jpg", "b/beach/00000002.jpg"]
    assert len(list_sources(out)) == 3
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's private 0o600

    kept = tmp_path / "k.tar"
    assert main([str(src), str(kept), "--keep"]) == 0
    with tarfile.open(kept) as tar:
        assert tar.extractfile("b/beach/00000002.png").read() == (src / "b/beach/00000002.png").read_bytes()
        assert sorted(tar.getnames())[-1] == "b/beach/00000002.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.tar", "p.tar", "places"]  # no temporaries
    capsys.readouterr()


def test_pack_webp_stays_within_max_mb_exactly(tmp_path, capsys):
    from training.pack import main

    tree = image_tree(tmp_path / "tree", n=20)
    sizes = {}
    for fmt in ("jpeg", "webp"):
        out = tmp_path / f"{fmt}.tar"
        assert main([str(tree), str(out), "--size", "64", "--quality", "80", "--format", fmt]) == 0
        sizes[fmt] = out.stat().st_size
    assert sizes["webp"] < sizes["jpeg"]
    with tarfile.open(tmp_path / "webp.tar") as tar:
        assert all(n.endswith(".webp") for n in tar.getnames())
    x, _, _ = load_images(list_sources(tmp_path / "webp.tar"), size=64, workers=0, progress=False)
    assert x.shape[0] == 20  # all 20 photos decode; the corrupt file was never packed, the grey one is skipped
    limited = tmp_path / "limited.tar"
    assert main([str(tree), str(limited), "--size", "64", "--format", "webp", "--max-mb", "0.03"]) == 0
    assert limited.stat().st_size <= 30_000  # the tar's real size, record padding included
    capsys.readouterr()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_pack_writes_shards_and_prints_their_range(tmp_path, capsys):
    from training.pack import main

    tree = image_tree(tmp_path / "tree", n=8)  # 8 photos, 1 grey, 1 corrupt
    out = tmp_path / "shards" / "train.tar"
    assert main([str(tree), str(out), "--size", "32", "--shard-size", "3"]) == 0
    printed = capsys.readouterr().out
    pattern = str(tmp_path / "shards" / "train-{000..002}.tar")
    assert f"--data '{pattern}'" in printed and "1 unreadable" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["train-000.tar", "train-001.tar", "train-002.tar"]
    sizes = [len(list_sources(p)) for p in sorted(out.parent.iterdir())]
    assert sizes == [3, 3, 3]
    names = {s.member for s in list_sources(pattern)}
    assert len(names) == 9 and {n.split("/")[0] for n in names} == {"class_0", "class_1"}


@pytest.mark.parametrize("case", ["empty", "missing", "not-tar"])
def test_pack_refuses_bad_sources_and_writes_nothing(tmp_path, capsys, case):
    from training.pack import main

    (tmp_path / "empty").mkdir()
    src = tmp_path / ("missing" if case == "missing" else "empty")
    out = tmp_path / "out" / ("o.zip" if case == "not-tar" else "o.tar")
    assert main([str(src), str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert {"empty": "no images found", "missing": "not a folder", "not-tar": "must end in .tar"}[case] in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_interrupted_pack_leaves_no_partial_tar(tmp_path):
    from training.pack import main  # noqa: F401 - the command under test, run in its own process

    src = tmp_path / "src"
    for i, arr in enumerate(crops(4, size=64)):
        (src / f"d{i}").mkdir(parents=True)
        (src / f"d{i}" / "x.jpg").write_bytes(jpeg(arr))
    fifo = src / "d9" / "stuck.jpg"  # reading it blocks: the pack is caught mid-archive
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    seed = next(s for s in range(50) if _shuffled(src, s)[0] != str(fifo))  # something is written first
    out = tmp_path / "out" / "o.tar"
    out.parent.mkdir()
    proc = subprocess.Popen([python(), "-m", "training.pack", str(src), str(out), "--size", "32", "--seed", str(seed)],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list(out.parent.glob(".o.tar.*.tmp")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert list(out.parent.glob(".o.tar.*.tmp")), "the pack never started writing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        proc.kill()
    assert list(out.parent.iterdir()) == []


def _shuffled(src: Path, seed: int) -> list[str]:
    sources = list_sources(src)
    random.Random(seed).shuffle(sources)
    return [s.path for s in sources]


# ---------------------------------------------------------------- export
def test_export_refuses_an_invalid_repo_id_before_any_network(tmp_path, capsys, no_network):
    from training.export import PUBLISHED, main

    assert "classes.png" not in PUBLISHED
    make_model(kept=[1, 2, 3]).save_pretrained(tmp_path / "m")
    assert main([str(tmp_path / "m"), "--push-to-hub", "someone/ccc test"]) == 2
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert "not a valid Hub repo id" in line and "network" not in line and captured.out == ""
    assert no_network == []  # refused before any lookup or connection
    assert main([str(tmp_path / "nothing"), "--push-to-hub", "someone/x"]) == 2
    assert "is not a folder" in one_error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_export_network_failure_goes_to_stderr_with_a_quoted_retry(tmp_path):
    folder = tmp_path / "my model"
    make_model(kept=[1, 2, 3]).save_pretrained(folder)
    e = env()
    e.update(HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_not_a_real_token", HF_HUB_ETAG_TIMEOUT="2",
             HF_HUB_DOWNLOAD_TIMEOUT="2")
    res = subprocess.run([python(), "-m", "training.export", str(folder), "--push-to-hub", "someone/ccc-test"],
                         env=e, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stdout == ""
    line = one_error_line(res.stderr)
    assert "could not upload" in line and "once the network is available" in line
    retry = line.split("retry with `", 1)[1].split("`", 1)[0]
    assert shlex.split(retry) == ["python", "-m", "training.export", str(folder), "--push-to-hub", "someone/ccc-test"]


# ---------------------------------------------------------------- stats
def test_stats_creates_output_folders_and_uses_at_most_the_cpu_count(tmp_path):
    from training.stats import default_workers, main

    assert default_workers() == min(4, len(os.sched_getaffinity(0)))
    tree = image_tree(tmp_path / "tree", n=4)
    out, plot = tmp_path / "new" / "deeper" / "classes.json", tmp_path / "plots" / "classes.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([str(tree), "--out", str(out), "--plot", str(plot), "--min-fraction", "0.01"]) == 0
    assert not [w for w in caught if "worker" in str(w.message)]
    assert json.loads(out.read_text())["images"] == 4 and plot.is_file()


def test_stats_bad_source_is_one_error_line_before_any_work(tmp_path, capsys):
    from training.stats import main

    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o" / "c.json")]) == 2
    assert "missing" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "c.json")]) == 2
    assert "no images found" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "mine"
    make_model(kept=list(range(200, 1100, 3))).save_pretrained(folder)
    return folder


def test_evaluate_refuses_bad_sizes_and_missing_model_folders(model_dir, tmp_path, capsys, monkeypatch, no_network):
    from training.evaluate import main, missing_model_folder

    val = image_tree(tmp_path / "val", n=2, bad=False)
    assert main([str(model_dir), "--val", str(val), "--size", "100"]) == 2
    assert "--size must be a positive multiple of 32" in one_error_line(capsys.readouterr().err)

    monkeypatch.chdir(model_dir.parent.parent)
    typo = f"{model_dir.parent.name}/minee"  # relative, its parent exists: a local folder, not a Hub repo
    assert main([typo, "--val", str(val)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: model folder {typo} does not exist") and "did you mean" in line
    assert no_network == []  # a local folder's typo: no Hub lookup
    assert missing_model_folder("./nope") == "model folder ./nope does not exist"
    assert missing_model_folder("someone/ccc-model") is None  # no local folder 'someone': a Hub repo id
    assert missing_model_folder("default") is None and missing_model_folder(typo[:-1]) is None


@pytest.mark.slow
def test_evaluate_without_usable_images_exits_1_and_prints_strict_json_otherwise(model_dir, tmp_path, capsys):
    from training.evaluate import main

    bad = tmp_path / "bad"
    bad.mkdir()
    assert main([str(model_dir), "--val", str(bad), "--workers", "0"]) == 1
    assert one_error_line(capsys.readouterr().err) == f"error: no usable val images in {bad} (no image files)"
    (bad / "a.jpg").write_bytes(b"\xff\xd8 broken")
    captured = (main([str(model_dir), "--val", str(bad), "--workers", "0"]), capsys.readouterr())
    assert captured[0] == 1 and "NaN" not in captured[1].out
    assert "no usable val images" in one_error_line(captured[1].err) and "1 unreadable" in captured[1].err

    val = image_tree(tmp_path / "val", n=2)
    out = tmp_path / "figures" / "val.json"
    assert main([str(model_dir), "--val", str(val), "--size", "64", "--store-size", "72", "--workers", "0",
                 "--json", str(out)]) == 0

    def no_nan(x):
        raise ValueError(x)

    figures = json.loads(out.read_text(), parse_constant=no_nan)
    assert figures["images"] == 2 and 0 < figures["psnr"] < 100


# ---------------------------------------------------------------- model card
def _result(**changes) -> dict:
    r = {"steps": 3000, "samples": 192000, "train_seconds": 5000.0, "img_per_s": 38.4, "img_per_s_steady": 150.0,
         "parameters": 2_500_000, "K": 300, "num_bins": 1296, "train_images": 1234, "skipped": 2, "world_size": 1,
         "precision": "fp32", "resumed": True, "machine": "x86_64 CPU", "wall_seconds": 1200.0, "init": "scratch",
         "command": "python -m training.train --data photos --out runs/x --steps 3000",
         "args": {"name": None, "bin_size": 6, "encoder": "mobilenetv3_small_050", "decoder_channels": "16,16,16",
                  "classes": "data", "min_fraction": 1e-4, "data": "photos", "val": None, "rebalance": "ccc", "p": 10.0,
                  "lr": 1e-3, "batch": 64, "size": 96, "save_dtype": "fp32"}}
    r.update(changes)
    return r


def test_model_card_states_this_runs_facts(tmp_path):
    from training.card import write_model_card

    write_model_card(tmp_path, _result())
    card = (tmp_path / "README.md").read_text()
    assert "Training time: 5000 s in all (over resumed sessions)" in card
    assert "wall time of the last (resumed) process: 1200 s" in card
    assert "38 img/s overall, 150 img/s steady" in card
    limits = card.split("## Limits", 1)[1]
    assert "1,234 photos" in limits and "3,000 steps" in limits and "192,000 samples" in limits
    assert "about 156 passes" in limits and "83 min" in limits
    assert "validation" in limits.lower() and "few thousand" not in card and "demonstration" not in card

    write_model_card(tmp_path, _result(resumed=False, train_seconds=40.0, wall_seconds=55.0, img_per_s_steady=None,
                                       train_images=50000, samples=800))
    card = (tmp_path / "README.md").read_text()
    assert "Training time: 40 s in all;" in card and "wall time of the process: 55 s" in card
    assert "steady" not in card and "50,000 photos" in card and "about 0.016 passes" in card


# ---------------------------------------------------------------- ablate
BASE_YAML = """encoder: mobilenetv3_small_050
decoder-channels: [16, 16, 16]
size: 64
store-size: 72
batch: 4
min-fraction: 0.001
log-every: 1
progress: false
tensorboard: false
lr: 1.0e-3
warmup: 2
steps: 2
p: 10
threads: 1
workers: 0
data-mode: memory
eval-images: 4
"""


def test_sweep_values_are_compared_as_the_trainer_types_them():
    from training.ablate import AblateError, _base_values, build_ablate_parser, run_name

    base = _base_values(str(REPO / "training" / "configs" / "cpu-small.yaml"))
    assert base["p"] == 10.0 and isinstance(base["p"], float)
    assert run_name({"p": 10}, base) == "base" and run_name({"bin-size": 6, "rebalance": "ccc"}, base) == "base"
    assert run_name({"p": 4}, base) == "p=4" and run_name({"p": 16.0}, base) == "p=16"
    assert run_name({"decoder-channels": [256, 128, 128]}, base) == "base"
    assert run_name({"classes": "all", "bin_size": 8}, base) == "bin-size=8,classes=all"
    with pytest.raises(AblateError, match="unknown train option 'learning_rate'"):
        run_name({"learning_rate": 1}, base)
    with pytest.raises(AblateError, match="invalid float value"):
        run_name({"p": "lots"}, base)
    # the trainer's options pass through untouched, even those that abbreviate this command's
    a, extra = build_ablate_parser().parse_known_args(["--base", "b", "--data", "d", "--val", "v", "--out", "o",
                                                       "--p", "4", "--s", "1"])
    assert a.parallel == 1 and extra == ["--p", "4", "--s", "1"]
    text = build_ablate_parser().format_help()
    assert "passed on to `python -m training.train`" in " ".join(text.split())


@pytest.mark.slow
def test_ablate_trains_coinciding_runs_once_reuses_only_matching_ones_and_reports_failures(tmp_path, capsys,
                                                                                           monkeypatch):
    from training.ablate import main
    from training.export import PUBLISHED

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tree = image_tree(tmp_path / "tree", n=8)
    (tmp_path / "base.yaml").write_text(BASE_YAML)
    (tmp_path / "sweeps.yaml").write_text("p:\n  - {p: 10}\n  - {p: 4}\n")
    out = tmp_path / "ablate"
    sweep = ["--base", str(tmp_path / "base.yaml"), "--sweep-file", str(tmp_path / "sweeps.yaml"), "--sweeps", "p"]
    cmd = [*sweep, "--data", str(tree), "--val", str(tree / "class_1"), "--out", str(out), "--grid-images", "2"]

    assert main([*cmd, "--steps", "1"]) == 0
    printed = capsys.readouterr().out
    launched = [ln for ln in printed.splitlines() if ln.startswith("[ablate]")]
    assert len(launched) == 2 and all(ln.endswith("--steps 1") for ln in launched), launched  # p=10 is the base
    assert "[ablate] p=4: python -m training.train --config" in printed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["base", "p4"]
    assert all((out / "base" / f).is_file() for f in PUBLISHED) and (out / "grid.png").is_file()
    assert json.loads((out / "p4.json").read_text())["options"]["p"] == 4.0
    assert "| base |" in (out / "ablation.md").read_text()

    stamp = (out / "p4" / "training.json").stat().st_mtime_ns
    assert main([*cmd, "--steps", "1", "--grid-images", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 2 and "python -m training.train" not in printed
    assert (out / "p4" / "training.json").stat().st_mtime_ns == stamp

    (out / "base" / "training.json").unlink()  # an unfinished run: its checkpoint is continued
    assert main([*cmd, "--steps", "2", "--grid-images", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("retraining, the options changed since it was started (--steps 1 -> 2)") == 2
    assert json.loads((out / "p4" / "training.json").read_text())["steps"] == 2
    (out / "base" / "training.json").unlink()
    assert main([*cmd, "--steps", "2", "--grid-images", "0"]) == 0
    printed = capsys.readouterr().out
    assert "base: resuming the unfinished run" in printed and "--steps 2 --resume" in printed
    assert json.loads((out / "base" / "training.json").read_text())["steps"] == 2

    bad = [*sweep, "--data", str(tree / "class_0" / "000.jpg"), "--val", str(tree), "--out", str(tmp_path / "failing"),
           "--steps", "1", "--parallel", "2"]
    assert main(bad) == 1
    err = capsys.readouterr().err
    lines = sorted(err.strip().splitlines())
    assert lines == [f"error: run base failed (exit 2); see {tmp_path / 'failing' / 'base.log'}",
                     f"error: run p=4 failed (exit 2); see {tmp_path / 'failing' / 'p4.log'}"], err
    assert "000.jpg" in (tmp_path / "failing" / "base.log").read_text()

    assert main([*cmd, "--size", "100"]) == 2  # the trainer's checks, before anything runs
    assert one_error_line(capsys.readouterr().err) == "error: run base: --size must be a positive multiple of 32, got 100"
    assert main([*cmd, "--config", "x.yaml"]) == 2
    assert "--base" in one_error_line(capsys.readouterr().err)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
