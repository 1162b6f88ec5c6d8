"""ComfyUI custom node pack entry point.

ComfyUI imports ``custom_nodes/<pack>/__init__.py``; with this checkout cloned or linked
as ``custom_nodes/ccc-nodes`` this file is that module and hands ComfyUI the mappings of
``ccc_nodes.nodes``. Nothing here is part of the installed ``ccc_nodes`` package, and
nothing imports ``comfy``. See docs/COMFYUI.md.
"""

if __package__:  # imported by ComfyUI as the pack's package
    from .ccc_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # imported as a plain module, e.g. by pytest collecting a checkout whose folder name is no identifier
    from ccc_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./ccc_nodes/web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
