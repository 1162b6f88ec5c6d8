"""A new user's first run: the README's Python example as written, `ccc colorize` on bad
inputs (nothing left behind, one wording), and examples/workflows/run_workflow.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ccc_colorize, need
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RUN_WORKFLOW = ROOT / "examples" / "workflows" / "run_workflow.py"


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs_in_the_checkout():
    code = readme_python_example()
    opened = re.findall(r"Image\.open\(\"([^\"]+)\"\)", code)
    assert opened and all((ROOT / f).is_file() for f in opened), opened
    check = "\nassert colour.size == grey.size and pred.class_map.shape == (1, 56, 56), (colour.size, pred.class_map.shape)\n"
    check += ("assert result.rgb.shape[-2:] == grey.size[::-1] and len(result.masks) > 0 "
              "and result.notes[-1].startswith('Harmonised with classical'), result.notes\n")
    r = subprocess.run([sys.executable, "-c", code + check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_run_that_writes_nothing_leaves_no_output_folder(tmp_path, model_dir, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    out = tmp_path / "out" / "deeper"
    assert ccc_colorize(tmp_path / "notes.txt", "-o", out, "--model", model_dir) == 1
    assert not (tmp_path / "out").exists()
    assert ccc_colorize(tmp_path / "notes.txt", "-o", out, "--model", tmp_path / "no-model") == 2  # the model fails
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    assert ccc_colorize(tmp_path / "notes.txt", "-o", tmp_path / "file" / "out", "--model", model_dir) == 2
    assert "cannot create the output folder" in capsys.readouterr().err


def test_summary_and_detail_lines_agree(tmp_path, model_dir, photo, capsys):
    Image.fromarray(photo).save(tmp_path / "cat.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rc = ccc_colorize(tmp_path / "cat.png", tmp_path / "notes.txt", tmp_path / "broken.jpg", tmp_path / "absent.png",
                  "-o", tmp_path / "out", "--model", model_dir)
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    summary = next(line for line in lines if line.startswith("colorized "))
    details = [line for line in lines if line.startswith("  ")]
    assert summary == f"colorized 1 image into {tmp_path / 'out'}; 3 skipped"
    assert len(details) == 3 and all(line.startswith("  skipped ") for line in details)


# ------------------------------------------------------------------ run_workflow.py
def run_workflow(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN_WORKFLOW), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(("args", "says"), [
    (["missing.json"], "error: cannot read the workflow missing.json: No such file or directory"),
    (["WORKFLOW", "--image", "nope.jpg"], "error: --image nope.jpg: no such file"),
    (["WORKFLOW", "--set", "9.model=x"], "error: --set 9.model=x: use NODE.INPUT=VALUE with a node id of the workflow"),
    (["NOTJSON"], "is not JSON"),
    (["WORKFLOW", "--server", "SERVER"], "error: cannot reach the server http://127.0.0.1:"),
])
def test_run_workflow_wrong_paths_are_one_line(tmp_path, args, says):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    (tmp_path / "bad.json").write_text("{nope")
    subst = {"WORKFLOW": ROOT / "examples" / "workflows" / "colorize_api.json", "NOTJSON": tmp_path / "bad.json",
             "SERVER": closed}
    r = run_workflow(*[subst.get(a, a) for a in args], "--server", closed, cwd=tmp_path) if "--server" not in args \
        else run_workflow(*[subst.get(a, a) for a in args], cwd=tmp_path)
    assert r.returncode == 2
    assert says in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_run_workflow_prints_clean_paths_against_ccc_serve(tmp_path, model_dir):
    need("fastapi")
    need("uvicorn")
    from ccc_nodes.interfaces.server import ServerConfig, ServerThread

    models = tmp_path / "models"
    (models / "ccc").mkdir(parents=True)
    (models / "ccc" / "small").symlink_to(model_dir)
    image = tmp_path / "grey.png"
    Image.open(ROOT / "examples" / "grey" / "chelsea.jpg").resize((96, 64)).save(image)
    with ServerThread(ServerConfig(base_dir=tmp_path / "srv", models_dir=models)) as srv:
        r = run_workflow(ROOT / "examples" / "workflows" / "colorize_api.json", "--server", srv.url, "--image", image,
                         "--set", "2.model=small", "--set", "2.device=cpu", "--set", "3.size=64", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stdout + r.stderr
    saved = re.search(r"node 4: (\S+) \(\d+ bytes\) -> (\S+)", r.stdout)
    assert saved and saved.group(1) == "output/ccc_colorized_00001_.png", r.stdout
    assert "//" not in r.stdout and Path(saved.group(2)).is_file()


@pytest.mark.slow
def test_the_readme_hints_example_runs_after_the_python_one():
    text = (ROOT / "README.md").read_text()
    hints = re.search(r"```python\n(.*?)```", text[text.index("\n## Colour hints\n"):], re.S).group(1)
    check = "\nassert colour.size == grey.size and colour.mode == 'RGB'\n"
    r = subprocess.run([sys.executable, "-c", readme_python_example() + hints + check], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
