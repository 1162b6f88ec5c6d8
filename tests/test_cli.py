"""`ccc colorize` end to end, on a small model saved to a folder (real loading code)."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import ccc_colorize
from PIL import Image

from ccc_nodes.interfaces.cli import collect_jobs, main


@pytest.fixture()
def inputs(tmp_path, photo):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(photo).convert("L").save(src / "cat.jpg")
    Image.fromarray(photo[:120, :200]).save(src / "sub" / "crop.png")
    Image.fromarray(photo).convert("RGBA").save(src / "sub" / "alpha.png")
    (src / "notes.txt").write_text("not an image")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return src


@pytest.mark.slow
def test_folder_recursive_keeps_names_and_reports_bad_files(inputs, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = ccc_colorize(inputs, "-o", out, "--model", model_dir)
    err = capsys.readouterr().err
    assert rc == 1  # broken.jpg failed
    assert (out / "cat.jpg").is_file() and (out / "sub" / "crop.png").is_file() and (out / "sub" / "alpha.png").is_file()
    assert Image.open(out / "cat.jpg").size == (451, 300)
    assert Image.open(out / "sub" / "alpha.png").mode == "RGBA"
    assert "colorized 3 images" in err and "1 skipped" in err and "  skipped " in err and "broken.jpg" in err
    assert not (out / "notes.txt").exists() and not (out / "broken.jpg").exists()
    assert not list(out.rglob("*.part"))


@pytest.mark.slow
def test_files_and_globs_succeed_with_exit_zero(inputs, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = ccc_colorize(inputs / "cat.jpg", str(inputs / "sub" / "*.png"), "-o", out, "--model", model_dir, "--batch", "2")
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "cat.jpg", "crop.png"]


@pytest.mark.slow
def test_explicit_non_image_and_missing_inputs_are_reported(inputs, model_dir, tmp_path, capsys):
    rc = ccc_colorize(inputs / "notes.txt", tmp_path / "missing.png", inputs / "cat.jpg", "-o", tmp_path / "o", "--model", model_dir)
    err = capsys.readouterr().err
    assert rc == 1
    assert "notes.txt: not an image" in err and "missing.png: no such file" in err
    assert (tmp_path / "o" / "cat.jpg").is_file()


def test_never_writes_over_an_input(inputs, model_dir, capsys):
    before = (inputs / "cat.jpg").read_bytes()
    rc = ccc_colorize(inputs / "cat.jpg", "-o", inputs, "--model", model_dir)
    assert rc == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert (inputs / "cat.jpg").read_bytes() == before


def test_decompression_bomb_is_refused_and_others_done(inputs, model_dir, tmp_path, capsys):
    Image.new("1", (12000, 12000)).save(inputs / "bomb.png")
    rc = ccc_colorize(inputs / "bomb.png", inputs / "cat.jpg", "-o", tmp_path / "o", "--model", model_dir)
    err = capsys.readouterr().err
    assert rc == 1 and "bomb.png: refused" in err
    assert (tmp_path / "o" / "cat.jpg").is_file()


def test_bad_model_and_options_are_clear(inputs, tmp_path, capsys):
    assert ccc_colorize(inputs / "cat.jpg", "-o", tmp_path / "o", "--model", tmp_path / "nomodel") == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["colorize", str(inputs / "cat.jpg"), "-o", str(tmp_path / "o"), "--size", "100"]) == 2


def test_collect_jobs_prefixes_folders_when_several_inputs(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / d / "x.png")
    jobs, problems = collect_jobs([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "out")
    assert sorted(str(j.dst.relative_to(tmp_path / "out")) for j in jobs) == ["a/x.png", "b/x.png"]
    assert problems == []


@pytest.mark.slow
def test_console_script_runs(inputs, model_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "ccc_nodes.interfaces.cli", "colorize", str(inputs / "cat.jpg"), "-o", str(tmp_path / "o"),
                        "--model", str(model_dir), "--size", "64", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "o" / "cat.jpg")).shape == (300, 451, 3)


@pytest.mark.slow
def test_two_inputs_with_one_output_name_keep_the_first_and_report_the_second(inputs, model_dir, tmp_path, capsys):
    twin = inputs / "crop.png"  # same name as sub/crop.png, other picture
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(twin)
    out = tmp_path / "o"
    rc = ccc_colorize(inputs / "sub" / "crop.png", twin, "-o", out, "--model", model_dir)
    err = capsys.readouterr().err
    assert rc == 1 and "colorized 1 image " in err and f"{twin}: its output" in err and "already taken" in err
    assert Image.open(out / "crop.png").size == (200, 120)  # the first input's, not overwritten


def test_output_that_is_a_file_is_refused_before_any_work(inputs, model_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert ccc_colorize(inputs / "cat.jpg", "-o", tmp_path / "afile", "--model", model_dir) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_one_bad_image_does_not_fail_its_batch(inputs, model_dir, tmp_path, capsys):
    nan = np.full((32, 32), np.nan, np.float32)
    Image.fromarray(nan, mode="F").save(inputs / "nan.tif")  # opens fine, fails when read as colour
    out = tmp_path / "o"
    rc = ccc_colorize(inputs / "cat.jpg", inputs / "nan.tif", "-o", out, "--model", model_dir, "--batch", "2")
    err = capsys.readouterr().err
    assert rc == 1 and "colorized 1 image " in err and "nan.tif: colorization failed" in err and "NaN" in err
    assert (out / "cat.jpg").is_file() and not (out / "nan.tif").exists()


def test_unavailable_device_is_a_clear_error(inputs, model_dir, tmp_path, capsys):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(["colorize", str(inputs / "cat.jpg"), "-o", str(tmp_path / "o"), "--model", str(model_dir),
                 "--device", "mps"]) == 2
    assert "no MPS" in capsys.readouterr().err
    assert main(["colorize", str(inputs / "cat.jpg"), "-o", str(tmp_path / "o"), "--model", str(model_dir),
                 "--device", "meta"]) == 2
    assert "not supported" in capsys.readouterr().err


@pytest.mark.slow
def test_harmonize_colorizes_with_the_cores_job(inputs, model_dir, tmp_path, capsys):
    from ccc_nodes import Colorizer, Harmonization

    plain, harmonised = tmp_path / "plain", tmp_path / "harmonised"
    # the embedded model: its classes vary over the photo (the small test model's hardly do)
    assert ccc_colorize(inputs / "sub" / "crop.png", "-o", plain, "--model", "default", "--size", "64") == 0
    assert ccc_colorize(inputs / "sub" / "crop.png", "-o", harmonised, "--model", "default", "--size", "64",
                        "--harmonize", "classical", "--dominance", "0.05", "--max-dev", "0") == 0
    got = np.asarray(Image.open(harmonised / "crop.png"))
    want = Colorizer(None, device="cpu", size=64).run(
        np.asarray(Image.open(inputs / "sub" / "crop.png")),
        harmonization=Harmonization("classical", dominance=0.05, max_dev=0.0)).image(np.zeros((1, 1, 3), np.uint8))
    assert np.array_equal(got, want)  # the CLI's flags are the settings, its output the core's
    assert not np.array_equal(got, np.asarray(Image.open(plain / "crop.png")))
    capsys.readouterr()
    assert ccc_colorize(inputs / "cat.jpg", "-o", tmp_path / "o", "--model", model_dir, "--harmonize", "sam") == 2
    assert "--harmonize sam needs --sam CKPT" in capsys.readouterr().err
    assert ccc_colorize(inputs / "cat.jpg", "-o", tmp_path / "o", "--model", model_dir, "--harmonize", "classical",
                        "--dominance", "2") == 2
    assert "dominance must be a number in [0, 1], got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_command_line_slips_are_one_line_in_words(tmp_path, capsys):
    """Issue 22's first-contact findings: options that were silently ignored, a limit written as
    0 MP, and a hint at a negative x taken by argparse for an option."""
    src = tmp_path / "grey.png"
    Image.new("L", (40, 30), 120).save(src)
    out = tmp_path / "out"
    assert main(["colorize", str(src), "-o", str(out), "--reference-strength", "0.5", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --reference-strength sets how strongly --reference steers the colours: "
                   "give --reference too\n") and not out.exists()
    assert main(["colorize", str(src), "-o", str(out), "--hint", "-5,10,#ff0000", "-q"]) == 1  # the image's failure
    err = capsys.readouterr().err
    assert "hint point (-5, 10) lies outside the 40x30 image" in err and "expected one argument" not in err, err
    assert main(["colorize", str(src), "-o", str(out), "--max-pixels", "1000", "-q"]) == 1
    err = capsys.readouterr().err
    assert "40x30 = 1,200 pixels is over the limit of 1,000 pixels" in err and "0 MP" not in err, err


def test_pixel_counts_in_words():
    from ccc_nodes.core.images import pixels

    assert [pixels(n) for n in (1000, 999_999, 1_000_000, 1_500_000, 81_000_000)] == [
        "1,000 pixels", "999,999 pixels", "1 MP", "1.5 MP", "81 MP"]


def test_the_default_folders_commands_write_are_ignored_in_the_checkout():
    """Run from the checkout as the README says, `ccc serve` and `ccc evaluate` leave no untracked folder."""
    from helpers import REPO

    from ccc_nodes.interfaces.cli import build_parser

    folders = []
    for argv, option in ((["serve"], "dir"), (["evaluate", "--gt", "x", "--model", "m"], "out")):
        folders.append(build_parser(argv).parse_args(argv).__dict__[option])
    assert folders == ["ccc_server", "evaluation"]
    r = subprocess.run(["git", "-C", str(REPO), "check-ignore", *(f"{f}/x" for f in folders)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == [f"{f}/x" for f in folders], r.stdout + r.stderr
