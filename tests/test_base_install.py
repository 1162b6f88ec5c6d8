"""The main job on a base install: `ccc colorize`, `ccc --help` and the Python API import no extra.

Each check runs in a fresh interpreter where every distribution that only an extra of
pyproject.toml brings (FastAPI, uvicorn, gradio, segment-anything, scikit-image, torchmetrics,
scipy, matplotlib, ...) cannot be imported: a ``sitecustomize`` on PYTHONPATH puts a finder in
front of ``sys.meta_path`` that refuses them. A future eager import of an extra fails here.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: huggingface_hub brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CCC = Path(sys.executable).with_name("ccc")

BLOCKER = """
import importlib.abc, sys

HIDDEN = frozenset({hidden!r})


class _HideExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden: not in the base install)", name=name)
        return None


sys.meta_path.insert(0, _HideExtras())

# An absent module is None to importlib.util.find_spec (libraries probe for optional ones
# that way, torch among them), not an error.
import importlib.util

_find_spec = importlib.util.find_spec


def _find_spec_hidden(name, package=None):
    return None if name.partition(".")[0] in HIDDEN else _find_spec(name, package)


importlib.util.find_spec = _find_spec_hidden
"""


def _closure(names: set[str]) -> set[str]:
    """Distributions ``names`` need, themselves included (no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, reqs):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def extra_only_modules() -> set[str]:
    """Top-level modules of the distributions that pyproject.toml's extras add to the base install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = _closure({Requirement(r).name for r in project["dependencies"]})
    extras = {canonicalize_name(Requirement(r).name) for reqs in project["optional-dependencies"].values() for r in reqs}
    extras -= base | {canonicalize_name(project["name"])}
    modules = {mod for mod, dists in md.packages_distributions().items()
               if any(canonicalize_name(d) in extras for d in dists)}
    return {m for m in modules if m.isidentifier() and not m.startswith("_")}


@pytest.fixture(scope="module")
def hidden() -> set[str]:
    mods = extra_only_modules()
    # The extras the issue names must be among them (installed here with the dev extra).
    assert {"fastapi", "uvicorn", "gradio", "segment_anything", "skimage", "torchmetrics", "scipy", "matplotlib"} <= mods
    return mods


@pytest.fixture(scope="module")
def base_env(tmp_path_factory, hidden) -> dict[str, str]:
    site = tmp_path_factory.mktemp("base_site")
    (site / "sitecustomize.py").write_text(BLOCKER.format(hidden=sorted(hidden)))
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    env.pop("PYTHONSTARTUP", None)
    return env


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, small_model) -> Path:
    d = tmp_path_factory.mktemp("model")
    small_model.save_pretrained(d)
    return d


def ccc(env, *args, cwd=None) -> subprocess.CompletedProcess:
    cmd = [str(CCC)] if CCC.is_file() else [sys.executable, "-m", "ccc_nodes.interfaces.cli"]
    return subprocess.run([*cmd, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_blocker_really_hides_the_extras(base_env):
    r = subprocess.run([sys.executable, "-c", "import fastapi"], env=base_env, capture_output=True, text=True)
    assert r.returncode == 1 and "hidden: not in the base install" in r.stderr


def test_help_runs_without_extras(base_env):
    for args in (["--help"], ["colorize", "--help"]):
        r = ccc(base_env, *args)
        assert r.returncode == 0, r.stderr
        assert "usage: ccc" in r.stdout


@pytest.mark.slow
def test_colorize_runs_without_extras(base_env, model_dir, tmp_path, photo):
    Image.fromarray(photo).convert("L").save(tmp_path / "cat.jpg")
    r = ccc(base_env, "colorize", tmp_path / "cat.jpg", "-o", tmp_path / "out", "--model", model_dir,
            "--size", "64", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "out" / "cat.jpg").size == (451, 300)


@pytest.mark.slow
def test_python_api_runs_without_extras(base_env, model_dir):
    code = ("import sys\nfrom PIL import Image\nfrom ccc_nodes import Colorizer\n"
            f"out = Colorizer({str(model_dir)!r}, size=64, device='cpu')(Image.new('L', (80, 60), 128))\n"
            "print(out.size, out.mode)")
    r = subprocess.run([sys.executable, "-c", code], env=base_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["(80,", "60)", "RGB"]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "extra"), [
    (["serve", "--port", "1"], "server"),
    (["evaluate", "--gt", "GT", "--model", "MODEL", "--size", "64", "--device", "cpu", "--harmonize",
      "classical", "--no-perceptual", "-q"], "eval"),
])
def test_commands_of_an_extra_name_it_in_one_line(base_env, model_dir, tmp_path, photo, args, extra):
    (tmp_path / "GT").mkdir()
    Image.fromarray(photo).save(tmp_path / "GT" / "cat.png")
    r = ccc(base_env, *[model_dir if a == "MODEL" else a for a in args], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"install -e '{ROOT}[{extra}]'" in r.stderr  # from this checkout (ccc_nodes.core.extras), not the index
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_help_imports_no_torch():
    code = ("import sys\nfrom ccc_nodes.interfaces.cli import main\n"
            "for argv in (['--help'], ['colorize', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "import ccc_nodes\n"
            "sys.stdout = sys.__stdout__\nprint('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_every_public_name_resolves():
    import ccc_nodes

    assert set(ccc_nodes.__all__) == {*ccc_nodes._EXPORTS, "__version__"}
    for name in ccc_nodes.__all__:
        assert getattr(ccc_nodes, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ccc_nodes.nope  # noqa: B018


@pytest.mark.slow
def test_a_colorization_with_the_embedded_default_imports_neither_timm_nor_torchvision(tmp_path):
    # timm imports torchvision and, through it, torch._dynamo: twice `import torch` on a cold
    # start; the default's encoder is built without them (ccc_nodes.core.modeling.efficientnet_lite)
    src = ROOT / "examples" / "grey" / "chelsea.jpg"
    code = ("import sys\nfrom ccc_nodes.interfaces.cli import main\n"
            f"main(['colorize', {str(src)!r}, '-o', {str(tmp_path / 'out')!r}, '--device', 'cpu', '-q'])\n"
            "print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "chelsea.jpg").is_file()
    assert r.stdout.strip().splitlines()[-1] == "[]"
