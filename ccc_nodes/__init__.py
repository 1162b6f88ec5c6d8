"""CCC++ colorization: colour-classified colorization with object-selective harmonisation.

Core API::

    from ccc_nodes import Colorizer
    Colorizer()(PIL.Image.open("grey.jpg")).save("colour.png")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .classes import ColorClasses
from .hub import DEFAULT_MODEL_DIR, ModelLoadError, load_model
from .images import ImageError
from .pipeline import Colorizer, Prediction

__all__ = [
    "DEFAULT_MODEL_DIR",
    "ColorClasses",
    "Colorizer",
    "ImageError",
    "ModelLoadError",
    "Prediction",
    "__version__",
    "load_model",
]
