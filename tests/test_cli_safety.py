"""Regression tests of issue 11 for `ccc colorize`: no output is ever written over an input
of the run, whatever the order of the inputs (resolved paths and inodes compared)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ccc_colorize, need
from PIL import Image

from ccc_nodes.interfaces.cli import collect_jobs


@pytest.fixture()
def grey(photo):
    return Image.fromarray(photo).convert("L").resize((96, 64))


@pytest.mark.parametrize("order", ["outside first", "inside first"])
def test_an_input_inside_the_output_folder_is_never_overwritten(grey, model_dir, tmp_path, capsys, order):
    (tmp_path / "a").mkdir()
    (tmp_path / "out").mkdir()
    grey.save(tmp_path / "a" / "one.jpg")
    grey.rotate(90).save(tmp_path / "out" / "one.jpg")
    before = (tmp_path / "out" / "one.jpg").read_bytes()
    inputs = [tmp_path / "a" / "one.jpg", tmp_path / "out" / "one.jpg"]
    if order == "inside first":
        inputs.reverse()
    rc = ccc_colorize(*inputs, "-o", tmp_path / "out", "--model", model_dir)
    err = capsys.readouterr().err
    assert rc == 1
    assert (tmp_path / "out" / "one.jpg").read_bytes() == before
    assert f"skipped {tmp_path / 'a' / 'one.jpg'}: output {tmp_path / 'out' / 'one.jpg'} would overwrite an input" in err


@pytest.mark.slow
def test_a_renamed_output_never_replaces_an_input_beside_it(grey, model_dir, tmp_path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    grey.save(folder / "photo.gif")  # written as photo.gif.png, the name of the next input
    grey.rotate(90).save(folder / "photo.gif.png")
    grey.save(folder / "other.gif")
    before = (folder / "photo.gif.png").read_bytes()
    rc = ccc_colorize(folder, "-o", folder, "--model", model_dir)
    err = capsys.readouterr().err
    assert rc == 1 and (folder / "photo.gif.png").read_bytes() == before
    assert "photo.gif: output" in err and "would overwrite an input" in err
    assert (folder / "other.gif.png").is_file()  # the rest is done


def test_inputs_are_compared_by_inode_too(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "out").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "a" / "one.png")
    Image.new("L", (8, 8), 90).save(tmp_path / "keep.png")
    os.link(tmp_path / "keep.png", tmp_path / "out" / "one.png")  # the output's name is the same file as keep.png
    for inputs in ([tmp_path / "a" / "one.png", tmp_path / "keep.png"], [tmp_path / "keep.png", tmp_path / "a" / "one.png"]):
        jobs, problems = collect_jobs([str(p) for p in inputs], tmp_path / "out")
        assert [j.src for j in jobs] == [tmp_path / "keep.png"]
        assert problems == [(str(tmp_path / "a" / "one.png"),
                             f"output {tmp_path / 'out' / 'one.png'} would overwrite an input; choose another -o")]
    # A link to an input on the way is the same file as well.
    (tmp_path / "out" / "one.png").unlink()
    (tmp_path / "out" / "one.png").symlink_to(tmp_path / "keep.png")
    jobs, problems = collect_jobs([str(tmp_path / "a" / "one.png"), str(tmp_path / "keep.png")], tmp_path / "out")
    assert [j.src for j in jobs] == [tmp_path / "keep.png"] and len(problems) == 1
    # Videos are inputs like any other file (the rule is one for images, videos and frames).
    (tmp_path / "out" / "one.png").unlink()
    (tmp_path / "clip.mp4").write_bytes(b"a video")
    os.link(tmp_path / "clip.mp4", tmp_path / "out" / "one.png")
    jobs, problems = collect_jobs([str(tmp_path / "a" / "one.png"), str(tmp_path / "clip.mp4")], tmp_path / "out")
    assert [(j.src, j.dst) for j in jobs] == [(tmp_path / "clip.mp4", tmp_path / "out" / "clip.mp4")]
    assert len(problems) == 1 and "would overwrite an input" in problems[0][1]


# ------------------------------------------------------------------ 12-14: nothing skipped in silence
SETPRIV = shutil.which("setpriv")


def unprivileged(*argv: str) -> subprocess.CompletedProcess:
    """Run ``ccc`` so that file permissions hold (as root: without the capabilities that
    override them), with its stderr."""
    cmd = [sys.executable, "-m", "ccc_nodes.interfaces.cli", *argv]
    if os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("root without setpriv: permissions cannot be made to hold")
        cmd = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search",
               *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def tree(grey, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    grey.save(src / "ok.jpg")
    grey.save(src / "sub" / "c.jpg")
    (src / "link.jpg").symlink_to(Path("sub") / "c.jpg")
    (src / "dangling.jpg").symlink_to("gone.jpg")
    return src


def test_links_are_reported_and_the_real_file_is_colorized(tree, tmp_path):
    jobs, problems = collect_jobs([str(tree)], tmp_path / "out")
    assert sorted(str(j.dst.relative_to(tmp_path / "out")) for j in jobs) == ["ok.jpg", "sub/c.jpg"]
    assert sorted(problems) == [
        (str(tree / "dangling.jpg"), "a link to gone.jpg, which does not exist"),
        (str(tree / "link.jpg"), f"the same file as {tree / 'sub' / 'c.jpg'} (through a link); colorized once, "
                                 f"as {tree / 'sub' / 'c.jpg'}")]
    # Given by name or by glob, a dangling link is named too.
    for spec in (tree / "dangling.jpg", tree / "dang*.jpg"):
        assert collect_jobs([str(spec)], tmp_path / "out")[1] == [
            (str(tree / "dangling.jpg"), "a link to gone.jpg, which does not exist")]
    # A link to a folder is not followed, and says so.
    (tree / "more").symlink_to("sub")
    problems = collect_jobs([str(tree)], tmp_path / "out")[1]
    assert any(name == str(tree / "more") and "links to folders are not followed" in why for name, why in problems)


@pytest.mark.slow
def test_unreadable_folders_and_files_are_reported_and_fail_the_run(tree, model_dir, tmp_path):
    (tree / "link.jpg").unlink()
    (tree / "dangling.jpg").unlink()
    (tree / "locked").mkdir()
    Image.new("L", (32, 32)).save(tree / "locked" / "hidden.jpg")
    Image.new("L", (32, 32)).save(tree / "noread.jpg")
    os.chmod(tree / "locked", 0)
    os.chmod(tree / "noread.jpg", 0)
    try:
        r = unprivileged("colorize", str(tree), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--size", "64",
                         "--device", "cpu", "-q")
    finally:
        os.chmod(tree / "locked", 0o755)
        os.chmod(tree / "noread.jpg", 0o644)
    assert r.returncode == 1, r.stderr
    assert "colorized 2 images" in r.stderr and "2 skipped" in r.stderr
    assert f"skipped {tree / 'locked'}: folder cannot be read: permission denied" in r.stderr
    assert f"skipped {tree / 'noread.jpg'}: cannot be read: permission denied" in r.stderr
    assert "corrupt" not in r.stderr
    assert (tmp_path / "out" / "ok.jpg").is_file() and (tmp_path / "out" / "sub" / "c.jpg").is_file()


# ------------------------------------------------------------------ 6: one image too big for memory
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the address-space limit is Linux's")
def test_an_image_too_big_for_memory_is_reported_and_the_rest_done(model_dir, tmp_path):
    import resource

    Image.new("L", (12000, 12000), 128).save(tmp_path / "huge.png")  # 144 MP: gigabytes as float arrays
    Image.new("L", (64, 48), 90).save(tmp_path / "small.png")

    def limited():  # the run gets 5 GB of address space, as under `ulimit -v 5000000`
        resource.setrlimit(resource.RLIMIT_AS, (5_000_000 * 1024, 5_000_000 * 1024))

    r = subprocess.run([sys.executable, "-m", "ccc_nodes.interfaces.cli", "colorize", str(tmp_path / "huge.png"),
                        str(tmp_path / "small.png"), "-o", str(tmp_path / "out"), "--model", str(model_dir),
                        "--size", "64", "--device", "cpu", "--max-pixels", "0", "-q"],
                       capture_output=True, text=True, timeout=300, preexec_fn=limited,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "colorized 1 image" in r.stderr and f"skipped {tmp_path / 'huge.png'}: not enough memory" in r.stderr
    assert (tmp_path / "out" / "small.png").is_file() and not (tmp_path / "out" / "huge.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the address-space limit is Linux's")
def test_a_huge_reference_is_shrunk_before_it_costs_memory(model_dir, tmp_path):
    """Issue 21 (8): an 81 MP --reference under `ulimit -v 5000000` ended in a MemoryError
    traceback; its colours are counted at 64 px, so it is shrunk before it becomes floats."""
    import resource

    Image.new("RGB", (9000, 9000), (200, 90, 40)).save(tmp_path / "reference.png")  # 81 MP
    Image.new("L", (64, 48), 90).save(tmp_path / "small.png")

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (5_000_000 * 1024, 5_000_000 * 1024))

    r = subprocess.run([sys.executable, "-m", "ccc_nodes.interfaces.cli", "colorize", str(tmp_path / "small.png"),
                        "-o", str(tmp_path / "out"), "--model", str(model_dir), "--size", "64", "--device", "cpu",
                        "--reference", str(tmp_path / "reference.png"), "--max-pixels", "0", "-q"],
                       capture_output=True, text=True, timeout=300, preexec_fn=limited,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert (tmp_path / "out" / "small.png").is_file()


def test_a_reference_is_counted_small_and_the_callers_picture_is_left_as_it_was():
    from ccc_nodes.steps.hints import REFERENCE_SIDE, _small

    big = Image.new("RGB", (900, 300), (200, 90, 40))
    small = _small(big)
    assert small.size == (REFERENCE_SIDE, round(300 * REFERENCE_SIDE / 900)) and big.size == (900, 300)
    assert small.getpixel((10, 5)) == (200, 90, 40)


# ------------------------------------------------------------------ issue 21: temporary files and folders
def test_a_link_planted_at_a_temporary_name_is_never_written_through(grey, tmp_path, monkeypatch):
    """The temporary file an output is written into is made anew (O_EXCL) under a name no
    one can guess: a link planted at the old fixed name is left alone, and one planted at
    the very name drawn is not followed either (another name is drawn)."""
    from ccc_nodes.core import images
    from ccc_nodes.core.images import save_image

    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / ".photo.png.part").symlink_to(victim)  # the name a run used to write through
    assert save_image(grey, out / "photo.png") == out / "photo.png"
    assert victim.read_text() == "precious"
    assert Image.open(out / "photo.png").size == grey.size and not (out / "photo.png").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == [".photo.png.part", "photo.png"]
    draws = iter(["guessed", "fresh"])
    monkeypatch.setattr(images.secrets, "token_hex", lambda n: next(draws))
    (out / ".photo.png.guessed.part").symlink_to(victim)
    save_image(grey.rotate(180), out / "photo.png")
    assert victim.read_text() == "precious" and next(draws, None) is None  # the second name was the one written
    assert (out / ".photo.png.guessed.part").readlink() == victim
    assert sorted(p.name for p in out.iterdir()) == [".photo.png.guessed.part", ".photo.png.part", "photo.png"]


def test_an_output_that_fails_leaves_no_folder_it_made(grey, tmp_path, monkeypatch):
    """A write that fails (a full disk here) removes the folders made for it, the deepest
    first, and leaves those that were there or that hold another output."""
    from ccc_nodes.core.images import save_image

    save_image(grey, tmp_path / "out" / "kept" / "first.png")

    def full(self, fp, format=None, **params):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    for dst in (tmp_path / "out" / "new" / "deeper" / "photo.png", tmp_path / "out" / "kept" / "photo.png"):
        with pytest.raises(OSError, match="No space left"):
            save_image(grey, dst)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "out", "out/kept", "out/kept/first.png"]


def test_an_output_name_taken_by_a_folder_is_reported_before_the_work(grey, tmp_path):
    (tmp_path / "a").mkdir()
    grey.save(tmp_path / "a" / "one.png")
    grey.save(tmp_path / "a" / "two.png")
    (tmp_path / "out" / "one.png").mkdir(parents=True)
    jobs, problems = collect_jobs([str(tmp_path / "a")], tmp_path / "out")
    assert [j.src.name for j in jobs] == ["two.png"]
    assert problems == [(str(tmp_path / "a" / "one.png"),
                         f"output {tmp_path / 'out' / 'one.png'} is a folder; move it, or choose another -o")]


def test_a_multi_page_tiff_is_bounded_by_all_its_pages_sizes(tmp_path):
    """Issue 21 (6): the first page's size x the page count let a TIFF whose later pages are
    large through the multi-frame limit, and those pages were decoded before any check."""
    from ccc_nodes.core.images import ImageTooLarge, check_frames

    pages = [Image.new("L", (16, 16), 100), Image.new("L", (1200, 1000), 100), Image.new("L", (1000, 1000), 100)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageTooLarge, match=r"3 frames of up to 1200x1000 = 2.2 MP in all is over the limit of 1 MP"):
        check_frames(tmp_path / "pages.tif", max_pixels=1_000_000, max_frames=64)
    assert check_frames(tmp_path / "pages.tif", max_pixels=3_000_000, max_frames=64) == 3


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the address-space limit is Linux's")
def test_a_frame_too_big_for_memory_in_a_sequence_is_reported_and_the_next_sequence_done(model_dir, tmp_path):
    """Issue 21 (8): a 144 MP frame in a ``--temporal on`` folder under `ulimit -v 5000000` ended in
    a MemoryError traceback with nothing of the other folders written."""
    import resource

    need("cv2")
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    Image.new("L", (12000, 12000), 128).save(tmp_path / "big" / "f001.png")  # gigabytes as float arrays
    for i in range(3):
        Image.new("L", (64, 48), 60 + 20 * i).save(tmp_path / "small" / f"f{i:03d}.png")

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (5_000_000 * 1024, 5_000_000 * 1024))

    r = subprocess.run([sys.executable, "-m", "ccc_nodes", "colorize", str(tmp_path / "big"), str(tmp_path / "small"),
                        "-o", str(tmp_path / "out"), "--model", str(model_dir), "--size", "64", "--device", "cpu",
                        "--temporal", "on", "--max-pixels", "0", "-q"],
                       capture_output=True, text=True, timeout=300, preexec_fn=limited,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "not enough memory" in r.stderr and "3 frames" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "small").iterdir()) == ["f000.png", "f001.png", "f002.png"]
    assert not (tmp_path / "out" / "big").exists() or not any((tmp_path / "out" / "big").iterdir())
