"""The bulk path (ccc_nodes.job.bulk): overlapping stages give the one-process path's outputs
pixel for pixel; torchrun shares the inputs between ranks (2 CPU processes over gloo); a
stopped run started again redoes only what is missing, truncated or stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ccc_colorize as run
from helpers import env
from PIL import Image

from ccc_nodes.core.images import open_image, save_image
from ccc_nodes.core.settings import Decoding
from ccc_nodes.interfaces.cli import collect_jobs
from ccc_nodes.job.bulk import colorize_files, finished
from ccc_nodes.job.colorizer import Colorizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def inputs(tmp_path, photo):
    """Images of several sizes, modes and formats, and one broken file."""
    src = tmp_path / "in"
    images = {"cat.jpg": Image.fromarray(photo).convert("L"), "sub/crop.png": Image.fromarray(photo[:120, :200]),
              "sub/alpha.png": Image.fromarray(photo).convert("RGBA"),
              "deep.png": Image.fromarray(photo[:90, :70, 0].astype(np.uint16) * 257),  # 16-bit grey
              "square.jpg": Image.fromarray(photo[50:114, 100:164]), "anim.gif": Image.fromarray(photo[:64, :64])}
    for name, image in images.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(src / name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return src


def outputs(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same(a: dict, b: dict, tolerance: int = 0) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
        diff = np.abs(a[name].astype(int) - b[name].astype(int)).max()
        assert diff <= tolerance, f"{name}: differs by {diff}"


def test_bulk_writes_what_the_one_process_path_writes(inputs, model_dir, tmp_path, capsys):
    assert run(inputs, "-o", tmp_path / "one", "--model", model_dir, "--batch", "3") == 1
    one = capsys.readouterr().err
    assert run(inputs, "-o", tmp_path / "bulk", "--model", model_dir, "--batch", "3", "--workers", "2") == 1
    bulk = capsys.readouterr().err
    expected = outputs(tmp_path / "one")
    assert len(expected) == 6 and "anim.gif.png" in expected and expected["sub/alpha.png"].shape[-1] == 4
    assert_same(expected, outputs(tmp_path / "bulk"))
    # the same report: one line per input left out, in the same words
    assert bulk.replace(str(tmp_path / "bulk"), "OUT") == one.replace(str(tmp_path / "one"), "OUT")
    assert "colorized 6 images" in bulk and "broken.jpg: corrupt or truncated image" in bulk
    assert not list((tmp_path / "bulk").rglob("*.part"))


@pytest.mark.parametrize("decoding", [Decoding("argmax"), Decoding("confident"), Decoding("annealed-mean", 0.38)],
                         ids=lambda d: d.mode)
def test_device_stages_run_on_the_cpu_give_the_same_pixels(inputs, small_model, tmp_path, decoding):
    """The GPU's arrangement (L, resize, decoding, a join of same-size images together, all in
    the main process) run on the CPU: the steps are the core's, so the pixels are too (the
    annealed mean's batched sum may round one level apart)."""
    colorizer = Colorizer(small_model, device="cpu", size=64, batch_size=4, decoding=decoding)
    jobs, _ = collect_jobs([str(inputs)], tmp_path / "device")
    pairs = [(j.src, j.dst) for j in jobs]
    for src, _dst in pairs:  # one by one, as Colorizer.run does
        if src.name != "broken.jpg":
            save_image(colorizer.colorize(open_image(src)), tmp_path / "one" / src.relative_to(inputs))
    report = colorize_files(colorizer, pairs, workers=0, device_join=True, progress=False)
    assert report.done == 6 and [Path(s).name for s, _ in report.failures] == ["broken.jpg"]
    assert_same(outputs(tmp_path / "one"), outputs(tmp_path / "device"), 0 if decoding.mode == "argmax" else 1)


def test_hints_and_videos_take_the_one_process_path(inputs, model_dir, tmp_path, capsys):
    assert run(inputs, "-o", tmp_path / "o", "--model", model_dir, "--workers", "1", "--hint", "5,5,#ff0000") == 2
    assert "take the one-process path" in capsys.readouterr().err
    assert run(inputs, "-o", tmp_path / "o", "--model", model_dir, "--resume", "--temporal", "on") == 2
    assert "take one process" in capsys.readouterr().err
    assert run(inputs, "-o", tmp_path / "o", "--model", model_dir, "--workers", "-1") == 2
    assert not (tmp_path / "o").exists()


def test_finished_checks_size_and_decodability(tmp_path, photo):
    src = tmp_path / "src.png"
    Image.fromarray(photo).save(src)
    good = tmp_path / "good.jpg"
    Image.fromarray(photo).save(good, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    stale = tmp_path / "stale.png"
    Image.fromarray(photo[:100]).save(stale)
    assert finished(src, good)
    assert not finished(src, truncated) and not finished(src, stale) and not finished(src, tmp_path / "none.png")
    # a source turned by its EXIF orientation: the output is the turned size
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo).save(turned, exif=exif)
    upright = tmp_path / "upright.png"
    Image.fromarray(np.ascontiguousarray(photo.transpose(1, 0, 2))).save(upright)
    assert finished(turned, upright) and not finished(turned, good)


def damage(out: Path) -> dict[str, int]:
    """Truncate one output, make one stale (another size), delete one; the mtimes of the rest."""
    (out / "cat.jpg").write_bytes((out / "cat.jpg").read_bytes()[:500])
    Image.new("RGB", (10, 10)).save(out / "sub" / "crop.png")
    (out / "square.jpg").unlink()
    return {name: (out / name).stat().st_mtime_ns for name in ("deep.png", "sub/alpha.png", "anim.gif.png")}


def test_resume_redoes_truncated_stale_and_missing_outputs_only(inputs, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(inputs, "-o", out, "--model", model_dir, "--workers", "1") == 1
    expected = outputs(out)
    capsys.readouterr()
    kept = damage(out)
    assert run(inputs, "-o", out, "--model", model_dir, "--workers", "1", "--resume") == 1
    err = capsys.readouterr().err
    assert "kept 3 outputs already written whole" in err and "colorized 3 images" in err and "1 skipped" in err
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # untouched
    assert_same(expected, outputs(out))  # the redone ones are whole again


def torchrun(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ccc_nodes.interfaces.cli", "colorize", *map(str, args), "--size", "64", "--device", "cpu", "-q", "--resume"]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_shares_the_inputs_and_resumes(inputs, model_dir, tmp_path, capsys):
    (inputs / "broken.jpg").unlink()
    assert run(inputs, "-o", tmp_path / "one", "--model", model_dir) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    res = torchrun(inputs, "-o", out, "--model", model_dir, "--batch", "2", "--workers", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    # each rank its own half, each output written once, the summary printed by rank 0 only
    assert res.stderr.count("2 ranks wrote 3 + 3 images") == 1 and res.stderr.count("colorized 6 images") == 1
    assert_same(outputs(tmp_path / "one"), outputs(out))
    kept = damage(out)
    res = torchrun(inputs, "-o", out, "--model", model_dir, "--batch", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("kept 3 outputs") == 1 and res.stderr.count("colorized 3 images") == 1
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    assert_same(outputs(tmp_path / "one"), outputs(out))


@pytest.mark.slow
def test_a_stopped_bulk_run_leaves_nothing_half_written_and_resumes(tmp_path, photo, model_dir):
    src = tmp_path / "in"
    src.mkdir()
    n = 64  # enough still to do after the first output that the signal lands mid-run
    for i in range(n):
        Image.fromarray(np.roll(photo, 17 * i, axis=1)).save(src / f"{i:02d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ccc_nodes.interfaces.cli", "colorize", str(src), "-o", str(out), "--model", str(model_dir),
           "--size", "64", "--device", "cpu", "-q", "--batch", "1", "--workers", "1", "--resume"]
    proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("[0-9]*.png")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    written = sorted(out.glob("[0-9]*.png"))
    assert 1 <= len(written) < n and not list(out.glob(".*.part"))
    assert all(finished(src / p.name, p) for p in written)
    res = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"kept {len(written)} output" in res.stderr and f"colorized {n - len(written)} image" in res.stderr
    assert all(finished(src / f"{i:02d}.png", out / f"{i:02d}.png") for i in range(n))


RANKS_SEE_DIFFERENT_FILES = """
import os, sys
from helpers import make_model
from ccc_nodes.job.bulk import Ranks, colorize_files
from ccc_nodes.job.colorizer import Colorizer
ranks = Ranks.from_env()
pairs = [(f"in/{i}.png", f"out/{i}.png") for i in range(3 + ranks.rank)]  # rank 1 sees one file more
try:
    colorize_files(Colorizer(make_model(), device="cpu", size=64), pairs, ranks=ranks, progress=False)
except ValueError as e:
    print(f"rank {ranks.rank}: {e}")
ranks.close()
"""


@pytest.mark.slow
def test_ranks_that_see_different_inputs_refuse_to_start(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(RANKS_SEE_DIFFERENT_FILES)
    e = env()
    e["PYTHONPATH"] = str(Path(__file__).parent) + os.pathsep + e["PYTHONPATH"]
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script)], env=e, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: the ranks found different inputs" in res.stdout
    assert not (tmp_path / "out").exists()
