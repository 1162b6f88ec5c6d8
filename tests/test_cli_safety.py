"""Regression tests of issue 11 for `ccc colorize`: no output is ever written over an input
of the run, whatever the order of the inputs (resolved paths and inodes compared)."""

from __future__ import annotations

import os

import pytest
from PIL import Image
from test_cli import model_dir, run  # noqa: F401 - model_dir is a fixture

from ccc_nodes.cli import collect_jobs


@pytest.fixture()
def grey(photo):
    return Image.fromarray(photo).convert("L").resize((96, 64))


@pytest.mark.parametrize("order", ["outside first", "inside first"])
def test_an_input_inside_the_output_folder_is_never_overwritten(grey, model_dir, tmp_path, capsys, order):  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "out").mkdir()
    grey.save(tmp_path / "a" / "one.jpg")
    grey.rotate(90).save(tmp_path / "out" / "one.jpg")
    before = (tmp_path / "out" / "one.jpg").read_bytes()
    inputs = [tmp_path / "a" / "one.jpg", tmp_path / "out" / "one.jpg"]
    if order == "inside first":
        inputs.reverse()
    rc = run(*inputs, "-o", tmp_path / "out", "--model", model_dir)
    err = capsys.readouterr().err
    assert rc == 1
    assert (tmp_path / "out" / "one.jpg").read_bytes() == before
    assert f"skipped {tmp_path / 'a' / 'one.jpg'}: output {tmp_path / 'out' / 'one.jpg'} would overwrite an input" in err


def test_a_renamed_output_never_replaces_an_input_beside_it(grey, model_dir, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "d"
    folder.mkdir()
    grey.save(folder / "photo.gif")  # written as photo.gif.png, the name of the next input
    grey.rotate(90).save(folder / "photo.gif.png")
    grey.save(folder / "other.gif")
    before = (folder / "photo.gif.png").read_bytes()
    rc = run(folder, "-o", folder, "--model", model_dir)
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
    # Protected paths (the run's videos) count as inputs.
    jobs, problems = collect_jobs([str(tmp_path / "a" / "one.png")], tmp_path / "out", protect=[tmp_path / "keep.png"])
    assert jobs == [] and "would overwrite an input" in problems[0][1]
