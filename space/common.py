"""What the Space's handlers share: the page's settings, its models (one cache, each
loaded once), ZeroGPU, and errors said in words.

The layout (app.py) and the handlers (handlers.py: the photo, video.py: the clip) import
from here; this file imports none of them.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import gradio as gr

from ccc_nodes import load_model
from ccc_nodes.core.cache import cached, source_key
from ccc_nodes.core.hub import DEFAULT_MODEL
from ccc_nodes.core.metrics import MetricUnavailable, load_lpips
from ccc_nodes.core.settings import DECODE_MODES, SIZE_MULTIPLE, Decoding, Harmonization
from ccc_nodes.steps.masks import SAM_CHECKPOINTS, SAM_MODEL_TYPES, load_sam

try:  # ZeroGPU: a GPU is attached only inside functions decorated with spaces.GPU
    import spaces

    ZERO_GPU = True
    REPORT_FROM_DEVICE = False  # the decorated function runs in another process: no progress from inside
except ImportError:  # anywhere else the function runs as it is, on whatever device torch sees
    ZERO_GPU = False
    REPORT_FROM_DEVICE = True


def on_gpu(seconds):
    """``spaces.GPU`` with ``seconds(*args)`` as its duration (ZeroGPU calls it with the
    function's own arguments, and queues shorter requests first); elsewhere the function
    as it is."""
    def wrap(fn):
        return spaces.GPU(duration=seconds)(fn) if ZERO_GPU else fn

    return wrap


log = logging.getLogger("ccc_space")

HERE = Path(__file__).resolve().parent  # the Space's folder (app.py and these files)
MODEL_ENV = "CCC_SPACE_MODEL"
SAM_ENV, SAM_TYPE_ENV = "CCC_SPACE_SAM", "CCC_SPACE_SAM_TYPE"  # SAM checkpoint (Hub repo id or file) and its type
LOCKED_ENV = "CCC_SPACE_LOCKED"  # 1: model and SAM fixed to the configured ones (a public page)
MAX_PIXELS = int(os.environ.get("CCC_SPACE_MAX_PIXELS", "40000000"))  # refuse larger photos
MAX_FILE_SIZE = "50mb"  # Gradio refuses larger uploads before they reach the handler
DISPLAY_SIDE = 1600  # longest side of the pictures shown in the page; the download is full size
MIN_DISPLAY_SIDE = 256  # small photos are shown enlarged (nearest neighbour) to at least this short side
CONCURRENCY = int(os.environ.get("CCC_SPACE_CONCURRENCY", "2"))  # requests run at once; others queue
SIZES = (128, 768)  # input size slider range (multiples of 32; paper: 224)
DECODING, HARMONIZATION = Decoding(), Harmonization()  # the controls' defaults (ccc_nodes.core.settings)
SIZE_STEP = SIZE_MULTIPLE  # the network takes multiples of this
# The other sliders: (minimum, maximum, step, label). run() checks what it is sent against these
# itself (with a message and no traceback), so the sliders pass typed or API values on as they are.
SLIDERS = {
    "temperature": (0.05, 1.0, 0.01, "Temperature"),
    "dominance": (0.05, 1.0, 0.05, "Dominance"),
    "max_dev": (0, 60, 1, "Max deviation"),
    "min_area": (0.0, 0.05, 0.0005, "Min mask area"),
    "points_per_side": (4, 64, 4, "SAM points per side"),
    "hint_strength": (0.0, 1.0, 0.05, "Hint strength"),
    "reference_strength": (0.0, 4.0, 0.1, "Reference strength"),
}
FORMAT_HINT = "Upload a JPEG, PNG, WebP, TIFF or BMP photo."
LPIPS_NA = "LPIPS n/a (its weights are not installed on this server)"

EXAMPLE_DIRS = [HERE / "examples", HERE.parent / "examples"]  # in a Space repo, or in this checkout
OUT_DIR = Path(tempfile.mkdtemp(prefix="ccc-space-"))  # full-resolution downloads, kept an hour


def locked() -> bool:
    """Whether ``$CCC_SPACE_LOCKED`` fixes the model and SAM to the configured ones."""
    return os.environ.get(LOCKED_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def user_error(message: str) -> gr.Error:
    """An error about the request: shown in the page, no traceback in the server log."""
    return gr.Error(message, print_exception=False)


_logged: set = set()


def log_once(key: tuple, message: str, *args, exc: BaseException | None = None) -> None:
    """One warning line per ``key`` for the life of the server (the traceback only at debug level)."""
    if key in _logged:
        return
    if len(_logged) > 1000:  # a bound, for pages where visitors type what they like
        _logged.clear()
    _logged.add(key)
    log.warning(message, *args)
    if exc is not None:
        log.debug("details of: " + message, *args, exc_info=exc)


def public_name(source: str) -> str:
    """What the page shows for a model or checkpoint: a local path by its last part only."""
    source = (source or "").strip()
    if not source or source == DEFAULT_MODEL:
        return source
    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith(("./", "../", "~")) or path.exists():
        return path.name
    return source


# ----------------------------------------------------------------------------- models


def default_model() -> str:
    """The model the page starts with: ``$CCC_SPACE_MODEL`` or the embedded default."""
    return os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


# Networks are loaded once per key into the process's one cache (ccc_nodes.core.cache.MODELS),
# shared by all requests; at most cache.KEEP of each kind stay, so a public page cannot
# fill the memory with models.

def get_model(source: str):
    """The CCC++ model of ``source`` (``default``, a Hub repo id or a folder); raises
    :class:`ModelLoadError` with the core's message (what failed, what to do)."""
    source = (source or "").strip() or default_model()
    return cached(("ccc", source_key(source)), lambda: load_model(source))


def default_sam() -> tuple[str, str]:
    """(checkpoint, type) the page starts with: ``$CCC_SPACE_SAM`` / ``$CCC_SPACE_SAM_TYPE``,
    else an official SAM checkpoint file placed beside this file, else none."""
    checkpoint = os.environ.get(SAM_ENV, "").strip()
    model_type = os.environ.get(SAM_TYPE_ENV, "").strip()
    if not checkpoint:
        for kind, filename in SAM_CHECKPOINTS.items():
            if (HERE / filename).is_file():
                checkpoint, model_type = str(HERE / filename), model_type or kind
                break
    return checkpoint, model_type or SAM_MODEL_TYPES[0]


def get_sam(checkpoint: str, model_type: str):
    """A SAM model (``segment_anything.Sam``); raises whatever loading it raised."""
    def load():
        net = load_sam(checkpoint, model_type=model_type)
        # ZeroGPU: moved to the GPU here, outside the GPU function, as Hugging Face advises
        # (the move is recorded at start-up and replayed when a GPU is attached).
        return net.to("cuda") if ZERO_GPU else net

    return cached(("sam", checkpoint, model_type), load)


def get_lpips():
    """The LPIPS network, or the :class:`MetricUnavailable` saying why there is none (logged once)."""
    def load():
        try:
            return load_lpips()
        except MetricUnavailable as e:
            log.warning("LPIPS is unavailable, its rows show n/a: %s", e)
            return e

    return cached(("lpips",), load)


# ----------------------------------------------------------------------------- inputs


def snap_size(value) -> int:
    """A typed input size -> the nearest multiple of 32 within the slider's range."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise user_error(f"Input size must be a number, got {value!r}.") from None
    if not math.isfinite(value):
        raise user_error(f"Input size must be a number, got {value!r}.")
    snapped = math.floor(value / SIZE_STEP + 0.5) * SIZE_STEP
    return min(max(snapped, SIZES[0]), SIZES[1])


def check_decode(decode) -> None:
    """The photo and the video handlers refuse a decoding the page does not offer, in words."""
    if decode not in DECODE_MODES:
        raise user_error(f"Decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}.")
