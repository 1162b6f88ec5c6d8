"""The pack as the Comfy Registry reads it: pyproject.toml's fields as its specification
names them, the archive .comfyignore leaves (git's own ignore matching, the syntax
comfy-cli's `node pack` uses), and nothing that would pull a second torch into ComfyUI.
`comfy node validate` and `comfy node pack` (comfy-cli, PyPI) are run by hand: docs/COMFYUI.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TORCHES = {"torch", "torchvision", "torchaudio"}


def test_project_fields_the_specification_requires_and_recommends():
    project = PYPROJECT["project"]
    # name: < 100 characters of letters, digits, - _ .; no consecutive specials; starts with a letter; no "ComfyUI"
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", project["name"]) and len(project["name"]) < 100
    assert "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])  # semantic X.Y.Z
    license_ = project["license"]
    assert isinstance(license_, dict) and (license_.get("text") or (ROOT / license_["file"]).is_file())
    assert project["description"] and project["requires-python"].startswith(">=")
    urls = project["urls"]
    assert urls["Repository"].startswith("https://") and urls["Documentation"].startswith("https://")
    assert urls["Bug Tracker"] == urls["Issues"]
    assert any(c.startswith("Operating System ::") for c in project["classifiers"])


def test_tool_comfy_section():
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = comfy["Icon"]
    assert icon.startswith("https://") and icon.endswith(".png")
    local = ROOT / icon.split("/main/", 1)[1]  # the file the URL serves, in this checkout
    w, h = Image.open(local).size
    assert w <= 800 and h <= 400  # the specification's limit


def test_what_comfyui_installs_brings_no_second_torch():
    """ComfyUI-Manager and the Registry install requirements.txt into ComfyUI's environment:
    no torch there, and the pack's own torch requirements are lower bounds ComfyUI's meets."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [Requirement(line) for line in lines if line]
    assert reqs and not [r for r in reqs if r.name in TORCHES]
    for r in map(Requirement, PYPROJECT["project"]["dependencies"]):
        if r.name in TORCHES:
            assert all(s.operator == ">=" for s in r.specifier), r  # never a pin that would replace ComfyUI's


def _git(*args: str) -> list[str]:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout: {e}")
    return out.splitlines()


def test_the_published_archive_is_the_pack():
    tracked = set(_git("ls-files"))
    ignored = set(_git("ls-files", "--cached", "--ignored", "--exclude-from=.comfyignore"))
    archive = tracked - ignored
    assert {"__init__.py", "requirements.txt", "pyproject.toml", "LICENSE", "ccc_nodes/interfaces/nodes/__init__.py",
            "ccc_nodes/default_model/model.safetensors", "ccc_nodes/interfaces/web/ccc_metrics.js"} <= archive
    assert {f"example_workflows/{p.name}" for p in (ROOT / "example_workflows").iterdir()} <= archive
    left_out = ("training/", "tests/", "benchmarks/", "space/", ".ci/", ".github/")
    assert not [f for f in archive if f.startswith(left_out)]
    assert not [f for f in archive if f.startswith("docs/") and f.endswith((".png", ".jpg"))]
    size = sum((ROOT / f).stat().st_size for f in archive if (ROOT / f).is_file())
    assert size < 60e6, size  # the embedded model (45 MB) is most of it
