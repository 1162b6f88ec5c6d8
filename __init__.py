"""ComfyUI custom node pack entry point.

ComfyUI imports ``custom_nodes/<pack>/__init__.py``; with this checkout cloned or linked
as ``custom_nodes/ccc-nodes`` this file is that module and hands ComfyUI the mappings of
``ccc_nodes.interfaces.nodes``. Nothing here is part of the installed ``ccc_nodes`` package, and
nothing imports ``comfy``. See docs/COMFYUI.md.
"""

import importlib.util
import os
import sys

if "ccc_nodes" not in sys.modules:
    # The core is loaded as the top-level package ``ccc_nodes``, as when installed, not as a
    # sub-package of this module (which ComfyUI names after its path): error dialogs then say
    # ``ccc_nodes.core.hub.ModelLoadError``, not ``/path/to/custom_nodes/ccc-nodes.ccc_nodes.core.hub...``.
    # Only that one name is added; the checkout's other folders stay off sys.path.
    _core = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ccc_nodes")
    _spec = importlib.util.spec_from_file_location("ccc_nodes", os.path.join(_core, "__init__.py"),
                                                   submodule_search_locations=[_core])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["ccc_nodes"] = _module
    _spec.loader.exec_module(_module)

from ccc_nodes.interfaces.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./ccc_nodes/interfaces/web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
