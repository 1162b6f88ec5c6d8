"""ComfyUI nodes (V1 contract) over the CCC++ core.

The node names follow the data flow of docs/ARCHITECTURE.md::

    CCC++ Model Loader -> CCC_MODEL            CCC++ SAM Loader -> SAM_MODEL
    IMAGE --[Grayscale -> Classes]--> CCC_CLASSES --[SAM Harmonize (+ SAM_MODEL or MASK)]-->
          CCC_CLASSES --[Classes -> Lab]--> IMAGE (colorized) + IMAGE (class map)
    IMAGE + reference IMAGE --[Metrics]--> table (output node)
    IMAGE --[Colorize]--> IMAGE                     (the common case in one node)

Sockets:
  IMAGE: float32 ``(B, H, W, 3)`` in 0..1 (ComfyUI's); MASK: float32 ``(B, H, W)`` in 0..1.
  CCC_MODEL: a :class:`~ccc_nodes.job.colorizer.Colorizer` (network + device + precision),
    cached by (source, revision, device, precision) so a model is loaded once per process.
  CCC_CLASSES: a :class:`ClassBatch`, one :class:`~ccc_nodes.core.prediction.Prediction` per
    image (logits ``(1, K, h, w)`` at model resolution, full-resolution L ``(1, 1, H, W)``).
  SAM_MODEL: a segment-anything ``Sam`` network.

Every node handles batches (B > 1). Nothing here imports ``comfy`` at import time; inside
ComfyUI, model folders come from ``folder_paths`` (``models/ccc`` and ``models/sams``),
``device="auto"`` follows ComfyUI's device choice (``--cpu``), progress goes to its
progress bar. Outside ComfyUI the folders are ``$CCC_MODELS_DIR/ccc`` and ``/sams``
(default ``./models``). The nodes only parse inputs, call the core and format outputs: each is its sockets plus one
call to the core, in :mod:`.colorize`, :mod:`.harmonize`, :mod:`.hints` and :mod:`.metrics`;
:mod:`.sockets` holds what they share.
"""

from ccc_nodes.interfaces.nodes.colorize import (
    CCCClassesToLab,
    CCCColorize,
    CCCColorizeSequence,
    CCCGrayscaleToClasses,
    CCCModelLoader,
)
from ccc_nodes.interfaces.nodes.harmonize import CCCSAMHarmonize, CCCSAMLoader
from ccc_nodes.interfaces.nodes.hints import CCCColorHint, CCCReferencePalette
from ccc_nodes.interfaces.nodes.metrics import CCCMetrics
from ccc_nodes.interfaces.nodes.sockets import (
    ClassBatch,
    class_map_image,
    local_models,
    model_folders,
    progress_hook,
    sam_checkpoints,
    validate_inputs,
)
from ccc_nodes.interfaces.nodes.sockets import _colorizer as _colorizer

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "CCCClassesToLab",
    "CCCColorHint",
    "CCCColorize",
    "CCCColorizeSequence",
    "CCCGrayscaleToClasses",
    "CCCMetrics",
    "CCCModelLoader",
    "CCCReferencePalette",
    "CCCSAMHarmonize",
    "CCCSAMLoader",
    "ClassBatch",
    "class_map_image",
    "local_models",
    "model_folders",
    "progress_hook",
    "sam_checkpoints",
    "validate_inputs",
]

NODE_CLASS_MAPPINGS = {
    "CCCModelLoader": CCCModelLoader,
    "CCCGrayscaleToClasses": CCCGrayscaleToClasses,
    "CCCClassesToLab": CCCClassesToLab,
    "CCCColorize": CCCColorize,
    "CCCSAMLoader": CCCSAMLoader,
    "CCCSAMHarmonize": CCCSAMHarmonize,
    "CCCMetrics": CCCMetrics,
    "CCCColorHint": CCCColorHint,
    "CCCReferencePalette": CCCReferencePalette,
    "CCCColorizeSequence": CCCColorizeSequence,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CCCModelLoader": "CCC++ Model Loader",
    "CCCGrayscaleToClasses": "CCC++ Grayscale → Classes",
    "CCCClassesToLab": "CCC++ Classes → Lab",
    "CCCColorize": "CCC++ Colorize",
    "CCCSAMLoader": "CCC++ SAM Loader",
    "CCCSAMHarmonize": "CCC++ SAM Harmonize",
    "CCCMetrics": "CCC++ Metrics",
    "CCCColorHint": "CCC++ Colour Hint",
    "CCCReferencePalette": "CCC++ Reference Palette",
    "CCCColorizeSequence": "CCC++ Colorize Sequence (video)",
}
