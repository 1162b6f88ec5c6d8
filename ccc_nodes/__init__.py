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
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the submodule that defines it
_EXPORTS = {
    "ColorClasses": "core.classes",
    "DEFAULT_MODEL_DIR": "core.hub",
    "ModelLoadError": "core.hub",
    "load_model": "core.hub",
    "ImageError": "core.images",
    "Colorizer": "job.colorizer",
    "ColorizeResult": "job.colorizer",
    "Prediction": "core.prediction",
    "Decoding": "core.settings",
    "Harmonization": "core.settings",
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
    from ccc_nodes.core.classes import ColorClasses
    from ccc_nodes.core.hub import DEFAULT_MODEL_DIR, ModelLoadError, load_model
    from ccc_nodes.core.images import ImageError
    from ccc_nodes.core.prediction import Prediction
    from ccc_nodes.core.settings import Decoding, Harmonization
    from ccc_nodes.job.colorizer import Colorizer, ColorizeResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


# The modules' names before the package was built in floors (docs/ARCHITECTURE.md): importing
# one still works, with a DeprecationWarning naming the module to import instead.
MOVED = {
    "settings": "core.settings", "color": "core.color", "classes": "core.classes", "images": "core.images",
    "extras": "core.extras", "cache": "core.cache", "hub": "core.hub", "modeling": "core.modeling",
    "onnx_runtime": "core.onnx_runtime", "loss": "core.loss", "perceptual": "core.perceptual",
    "metrics": "core.metrics", "metrics_report": "core.report", "hints": "steps.hints", "masks": "steps.masks",
    "harmonize": "steps.harmonize", "temporal": "steps.temporal", "bulk": "job.bulk", "video": "job.video",
    "evaluate": "job.evaluate", "hint_eval": "job.hint_eval", "cli": "interfaces.cli",
    "nodes": "interfaces.nodes", "server": "interfaces.server",
    "pipeline": "core.prediction",  # its job, Colorizer, is in job.colorizer (and here: ccc_nodes.Colorizer)
}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``ccc_nodes.<old name>`` (and below) as the module it became."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, rest = fullname.partition(".")
        old = rest.partition(".")[0]
        if package != __name__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        old, _, below = spec.name.partition(".")[2].partition(".")
        new = f"{__name__}.{MOVED[old]}" + (f".{below}" if below else "")
        warnings.warn(f"{spec.name} is now {new}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)  # the same module object under both names

    def exec_module(self, module: Any) -> None:
        pass  # already run under its own name


if not any(isinstance(f, _Moved) for f in sys.meta_path):
    sys.meta_path.insert(0, _Moved())  # before the path finder, which would load a second copy below a moved package
