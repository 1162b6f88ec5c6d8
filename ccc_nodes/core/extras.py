"""What to install for a part that is not installed: one rule for every message that names it.

The optional parts come as extras of the package (pyproject.toml). The command that adds
one depends on where the package runs from:

- from a checkout (the README's set-up: ``pip install -e .`` in the repository), the extra
  is installed from that checkout: ``.venv/bin/pip install -e '.[sam]'`` (the path as the
  user would type it from where they stand);
- from an installed package, from the package index: ``pip install 'ccc-nodes[sam]'``.

``pip install ccc-nodes[...]`` from a checkout fails (the name is not on the index), and a
module's import name is not always its package's (``skimage`` is ``scikit-image``): so no
message writes its own install line; each calls :func:`install_hint` or
:func:`missing_module`. Imports nothing heavy (``ccc --help`` reads it without torch).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["MODULE_EXTRAS", "MissingExtra", "checkout", "install_command", "install_hint", "missing_module"]

PACKAGE = "ccc-nodes"
# Import name of a module -> the extras that bring it (pyproject.toml's optional dependencies),
# the one to name first when no command's own extra has it.
MODULE_EXTRAS: dict[str, tuple[str, ...]] = {
    "segment_anything": ("sam",), "skimage": ("sam", "eval", "space"), "scipy": ("eval",),
    "torchmetrics": ("eval",), "matplotlib": ("eval", "space", "train"),
    "onnx": ("onnx",), "onnxscript": ("onnx",), "onnx_ir": ("onnx",), "onnxruntime": ("onnx",),
    "av": ("video", "space"), "cv2": ("video", "space"), "gradio": ("space",),
    "fastapi": ("server",), "uvicorn": ("server",), "multipart": ("server",), "websockets": ("server",),
    "comfyui_frontend_package": ("server",), "tensorboard": ("train",), "yaml": ("train",),
}


class MissingExtra(ModuleNotFoundError):
    """A module of an extra is not installed; the message says the command that installs it."""


def checkout() -> Path | None:
    """The repository this package runs from, or None for an installed package."""
    root = Path(__file__).resolve().parents[2]
    try:
        text = (root / "pyproject.toml").read_text()
    except OSError:
        return None
    return root if f'name = "{PACKAGE}"' in text else None


def _shown(path: Path) -> str:
    """``path`` as a user types it from the current folder: relative when under it."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return str(path)
    return str(rel) if str(rel) != "." else "."


def _pip() -> str:
    """The pip of the running interpreter: ``.venv/bin/pip`` when it sits beside it, else ``python -m pip``."""
    pip = Path(sys.executable).with_name("pip")
    if pip.is_file() and os.access(pip, os.X_OK):
        return _shown(pip)
    return f"{_shown(Path(sys.executable))} -m pip"


def install_command(extra: str) -> str:
    """The command that installs ``extra`` where this package runs from."""
    root = checkout()
    if root is None:
        return f"pip install '{PACKAGE}[{extra}]'"
    return f"{_pip()} install -e '{_shown(root)}[{extra}]'"


def install_hint(extra: str, what: str) -> str:
    """``"<what> needs the 'EXTRA' extra: <command>"``."""
    return f"{what} needs the '{extra}' extra: {install_command(extra)}"


def missing_module(error: ImportError, what: str, extra: str | None = None) -> MissingExtra:
    """A :class:`MissingExtra` for ``error`` (a failed import): what needs the module, and
    the command that installs it: ``extra`` (the extra of what needs it) when that extra
    brings the module or the module is no extra's, else the module's own extra."""
    top = (getattr(error, "name", None) or "").partition(".")[0]
    own = MODULE_EXTRAS.get(top, ())
    extra = extra if extra in own or not own else own[0]
    how = install_command(extra) if extra else f"{_pip()} install {top}"
    return MissingExtra(f"{what} needs {top or 'a module'}, which is not installed: {how}", name=top or None)
