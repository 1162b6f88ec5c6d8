"""What to install for a missing part: one rule (ccc_nodes.core.extras) right from a checkout, as the
README sets the package up, and from an installed package; every message takes it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO, env
from PIL import Image

from ccc_nodes.core import extras
from ccc_nodes.core.extras import MissingExtra, install_command, missing_module


def test_from_the_checkout_the_extra_comes_from_the_checkout(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    command = install_command("sam")
    assert command.endswith(" install -e '.[sam]'")  # from where the user stands, as the README types it
    pip = command.split(" install")[0]
    if not pip.endswith(" -m pip"):  # the pip beside the interpreter, as a path from here
        assert (REPO / pip).is_file()
    monkeypatch.chdir(tmp_path)
    assert install_command("sam").endswith(f" install -e '{REPO}[sam]'")


def test_from_an_installed_package_the_extra_comes_from_the_index(monkeypatch):
    monkeypatch.setattr(extras, "checkout", lambda: None)
    assert install_command("server") == "pip install 'ccc-nodes[server]'"


def test_a_module_is_named_with_its_extra_not_its_import_name():
    e = missing_module(ModuleNotFoundError(name="skimage.segmentation"), "classical masks")
    assert isinstance(e, ModuleNotFoundError) and e.name == "skimage"
    assert str(e) == f"classical masks needs skimage, which is not installed: {install_command('sam')}"
    assert "pip install skimage" not in str(e)  # no such package: it is scikit-image, in the sam extra
    other = missing_module(ModuleNotFoundError(name="left_pad"), "x", "eval")
    assert str(other).endswith(install_command("eval"))


def test_the_python_api_names_the_extra_of_classical_masks(monkeypatch):
    from ccc_nodes.steps.masks import classical_masks

    for name in ("skimage", "skimage.segmentation"):
        monkeypatch.setitem(sys.modules, name, None)  # as if scikit-image were not installed
    with pytest.raises(MissingExtra, match=r"classical masks .* needs skimage, which is not installed: .*\[sam\]'"):
        classical_masks(Image.new("L", (64, 48), 100))


@pytest.mark.slow
def test_the_cli_names_the_extra_of_classical_harmonisation(tmp_path):
    Image.new("L", (64, 48), 100).save(tmp_path / "grey.png")
    hide = "import sys; sys.modules['skimage'] = None; sys.modules['skimage.segmentation'] = None; "
    code = hide + "from ccc_nodes.interfaces.cli import main; raise SystemExit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "colorize", "grey.png", "-o", "out", "--size", "64",
                        "--harmonize", "classical", "-q"], cwd=tmp_path, env=env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().endswith(f" install -e '{REPO}[sam]'") and "skimage" in r.stderr
