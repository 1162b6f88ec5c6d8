"""CCC++ colorization: colour-classified colorization with object-selective harmonisation.

Core API::

    from ccc_nodes import Colorizer
    Colorizer()(PIL.Image.open("examples/grey/chelsea.jpg")).save("colour.png")

    result = Colorizer().run(image, hints=[Hint.at(40, 60, "#c0392b")],
                             harmonization=Harmonization("classical"))
    result.rgb, result.class_map, result.masks, result.notes

The names below are imported on first use, so ``import ccc_nodes`` (and ``ccc --help``)
does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the submodule that defines it
_EXPORTS = {
    "ColorClasses": "classes",
    "DEFAULT_MODEL_DIR": "hub",
    "ModelLoadError": "hub",
    "load_model": "hub",
    "ImageError": "images",
    "Colorizer": "pipeline",
    "ColorizeResult": "pipeline",
    "Prediction": "pipeline",
    "Decoding": "settings",
    "Harmonization": "settings",
}

__all__ = [
    "DEFAULT_MODEL_DIR",
    "ColorClasses",
    "ColorizeResult",
    "Colorizer",
    "Decoding",
    "Harmonization",
    "ImageError",
    "ModelLoadError",
    "Prediction",
    "__version__",
    "load_model",
]

if TYPE_CHECKING:
    from .classes import ColorClasses
    from .hub import DEFAULT_MODEL_DIR, ModelLoadError, load_model
    from .images import ImageError
    from .pipeline import Colorizer, ColorizeResult, Prediction
    from .settings import Decoding, Harmonization


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
