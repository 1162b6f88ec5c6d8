"""CCC++ colorization: the Gradio Space.

Upload a photo (grey, or colour: then it is turned grey and kept as the reference), pick
a model and the decoding, optionally harmonise with object masks, and compare. The page
only parses inputs, calls ``ccc_nodes`` and formats the results (docs/ARCHITECTURE.md).

Run locally::

    python space/app.py [--host 127.0.0.1] [--port 7860] [--model default|owner/name|path]

Environment: ``CCC_SPACE_MODEL`` (the model the page starts with and the examples use),
``CCC_SPACE_SAM`` / ``CCC_SPACE_SAM_TYPE`` (SAM checkpoint for harmonisation; else an
official ``sam_vit_*.pth`` beside this file), ``CCC_SPACE_LOCKED=1`` (a public page: the
model and SAM boxes are fixed to these, whatever a visitor sends), ``CCC_SPACE_MAX_PIXELS``
(largest photo accepted), ``PORT`` / ``GRADIO_SERVER_PORT`` and ``GRADIO_SERVER_NAME``
(where to listen). On a Hugging Face Space with ZeroGPU the network runs under
``@spaces.GPU``; without the ``spaces`` package or a GPU it runs on the CPU, unchanged.

Messages in the page name the visitor's own inputs only: what the server has (or lacks)
on its disk goes to the server log. Errors about a request are shown without a traceback
in the log; anything unexpected is logged once, with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ccc_figures import bin_table, class_grid, class_map_picture, to_uint8

from ccc_nodes import ColorClasses, Colorizer, ImageError, ModelLoadError, load_model
from ccc_nodes.cache import MODELS, cached, source_key  # noqa: F401 - app.MODELS: the cache this page fills
from ccc_nodes.color import lab_to_rgb
from ccc_nodes.hints import HINT_DEFAULTS, MAX_HINTS, HintError, check_count, format_hint, palette_prior, parse_hints
from ccc_nodes.hub import DEFAULT_MODEL
from ccc_nodes.images import EVAL_SIZE, ImageTooLarge, eval_crop, is_grey, open_image, to_rgb
from ccc_nodes.masks import SAM_CHECKPOINTS, SAM_MODEL_TYPES, grey_image, load_sam, overlay
from ccc_nodes.metrics import MetricUnavailable, compare, load_lpips
from ccc_nodes.settings import (
    DECODE_MODES,
    HARMONIZE_CHOICES,
    INPUT_SIZE,
    SIZE_MULTIPLE,
    Decoding,
    Harmonization,
    harmonization_for,
)

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


def photo_seconds(source, rgb, size, decoding, harmonization, *rest, **kwargs) -> int:
    """GPU seconds to ask for one photo: the network and join (a few seconds, more for
    large photos and inputs), plus SAM's automatic masks, which grow with its point grid."""
    seconds = 5 + 2 * rgb.shape[0] * rgb.shape[1] / 1e6 + 4 * (size / 224) ** 2
    if harmonization is not None and harmonization.masks == "sam":
        seconds += 10 + 30 * (harmonization.points_per_side / 32) ** 2
    return int(min(120, seconds))


log = logging.getLogger("ccc_space")

MODEL_ENV = "CCC_SPACE_MODEL"
SAM_ENV, SAM_TYPE_ENV = "CCC_SPACE_SAM", "CCC_SPACE_SAM_TYPE"  # SAM checkpoint (Hub repo id or file) and its type
LOCKED_ENV = "CCC_SPACE_LOCKED"  # 1: model and SAM fixed to the configured ones (a public page)
MAX_PIXELS = int(os.environ.get("CCC_SPACE_MAX_PIXELS", "40000000"))  # refuse larger photos
MAX_FILE_SIZE = "50mb"  # Gradio refuses larger uploads before they reach the handler
DISPLAY_SIDE = 1600  # longest side of the pictures shown in the page; the download is full size
MIN_DISPLAY_SIDE = 256  # small photos are shown enlarged (nearest neighbour) to at least this short side
CONCURRENCY = int(os.environ.get("CCC_SPACE_CONCURRENCY", "2"))  # requests run at once; others queue
SIZES = (128, 768)  # input size slider range (multiples of 32; paper: 224)
DECODING, HARMONIZATION = Decoding(), Harmonization()  # the controls' defaults (ccc_nodes.settings)
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


# Networks are loaded once per key into the process's one cache (ccc_nodes.cache.MODELS),
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


def _too_big(name: str, pixels: int) -> str:
    return f"{name}: the photo is {pixels / 1e6:.3g} MP; this Space takes up to {MAX_PIXELS / 1e6:.3g} MP: shrink it."


def read_photo(path: str | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str]:
    """The uploaded file -> (RGB ``(H, W, 3)`` in [0, 1], reference RGB or None, alpha
    ``(H, W)`` in [0, 1] or None, name).

    A colour photo is kept as the reference; the network only ever sees its L
    (METHOD.md s. 1). Raises :class:`gr.Error` with a message fit for the page.
    """
    if not path:
        raise user_error("Upload a photo first, or click one of the examples.")
    name = Path(path).name
    try:
        rgb, alpha = to_rgb(open_image(path, MAX_PIXELS), MAX_PIXELS)  # the size is checked before decoding
    except ImageTooLarge as e:
        raise user_error(_too_big(name, e.pixels)) from e
    except ImageError as e:
        raise user_error(f"{str(e).replace(str(path), name)}. {FORMAT_HINT}") from e
    reference = None if is_grey(rgb) else rgb  # the one grey rule (training, ccc evaluate, the Metrics node)
    return rgb, reference, alpha, name


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


def slider_number(name: str, value) -> float:
    """A slider's value, checked against :data:`SLIDERS`; raises :class:`gr.Error` saying the range."""
    lo, hi, _, label = SLIDERS[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise user_error(f"{label} must be a number, got {value!r}.") from None
    if not lo <= number <= hi:  # also refuses NaN
        raise user_error(f"{label} must lie in [{lo:g}, {hi:g}], got {value!r}.")
    return number


def lenient(control):
    """Let a slider or radio pass any value on: run() rounds or checks it itself, with a
    message and no traceback (Gradio's own range and choice checks log one). Set on the
    instance, as in photo_input."""
    control.preprocess = lambda value: value
    return control


def display_size(h: int, w: int) -> tuple[int, int]:
    """(H, W) of the pictures shown for a photo of ``h x w``: shrunk to a longest side of
    :data:`DISPLAY_SIDE`, or a small photo enlarged by a whole factor to a shorter side of
    at least :data:`MIN_DISPLAY_SIDE` (as far as :data:`DISPLAY_SIDE` allows)."""
    if max(h, w) > DISPLAY_SIDE:
        scale = DISPLAY_SIDE / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))
    factor = min(math.ceil(MIN_DISPLAY_SIDE / min(h, w)), DISPLAY_SIDE // max(h, w))
    return (h * factor, w * factor) if factor > 1 else (h, w)


def _fit(image: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """A uint8 picture at ``size = (H, W)`` for display: shrunk with Lanczos, enlarged with
    nearest neighbour (so a tiny photo's pixels stay sharp)."""
    if image is None or tuple(image.shape[:2]) == tuple(size):
        return image
    h, w = image.shape[:2]
    resample = Image.NEAREST if size[0] >= h and size[1] >= w else Image.LANCZOS
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample))


def _save_png(image: np.ndarray, stem: str, alpha: np.ndarray | None = None) -> str:
    """Write the full-resolution result for download (with the photo's alpha, if it had
    one); drop downloads older than an hour."""
    now = time.time()
    for old in OUT_DIR.glob("*.png"):
        if now - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True)
    path = OUT_DIR / f"{stem}-colour-{uuid.uuid4().hex[:8]}.png"
    picture = Image.fromarray(image, "RGB")
    if alpha is not None:
        picture.putalpha(Image.fromarray(np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8), "L"))
    picture.save(path, compress_level=3)  # large photos: a little bigger, much faster than the default 6
    return str(path)


# ----------------------------------------------------------------------------- the work


@on_gpu(photo_seconds)
def colorize_on_device(
    source: str, rgb: np.ndarray, size: int, decoding: Decoding, harmonization: Harmonization | None,
    sam: tuple | None, shown: tuple[int, int], report=None, hints: str = "", reference: np.ndarray | None = None,
    reference_strength: float = HINT_DEFAULTS["reference_strength"],
) -> dict:
    """The core's job (:meth:`Colorizer.run`) on the best device.

    Arguments:
      source: the model (already loaded into the cache by the caller).
      rgb: the photo ``(H, W, 3)`` in [0, 1] (only its L is used).
      size, decoding: the network's input size and the decoding.
      harmonization: the harmonisation settings (mask source ``"sam"`` or
        ``"classical"``), or None for none.
      sam: (checkpoint, type) of the SAM model for SAM masks (loaded into the cache by the caller).
      shown: (H, W) of the display pictures: the grey picture and the mask overlay are
        drawn at that size (not at the photo's, then shrunk).
      report: called with a stage name when harmonisation starts (None on ZeroGPU).
      hints: point hints, one ``X,Y,#RRGGBB[,S]`` per line (photo pixels).
      reference: a reference photo ``(h, w, 3)`` whose palette steers the colours, or None.
      reference_strength: its weight.

    Returns plain arrays (ZeroGPU runs this in another process): ``grey`` uint8 at
    ``shown``, ``colour`` uint8 ``(H, W, 3)`` at full size, ``class_map`` (the class map
    to show), ``masks`` (overlay picture or None), ``notes``.
    """
    colorizer = Colorizer(get_model(source), size=size, decoding=decoding)
    prior = None if reference is None else palette_prior(reference, colorizer.classes, reference_strength)
    if report is not None and harmonization is not None:
        report("Harmonising")
    net = get_sam(*sam).to(colorizer.device) if sam is not None else None
    result = colorizer.run(rgb, hints=parse_hints(hints), reference=prior, harmonization=harmonization, sam=net)
    L = result.prediction.L.float()
    if tuple(L.shape[-2:]) != tuple(shown) and shown[0] <= L.shape[-2]:  # shrink; enlarging is _fit's
        L = F.interpolate(L, size=tuple(shown), mode="bilinear", antialias=True, align_corners=False)
    return {"grey": grey_image(L, None), "colour": to_uint8(result.rgb[0].permute(1, 2, 0)),
            "class_map": result.class_map, "masks": None if result.masks is None else np.asarray(overlay(L, result.masks)),
            "notes": result.notes}


METRIC_ROWS = (  # key, label, what it says (METHOD.md s. 10, paper Eq. 19-27)
    ("mse", "MSE", "mean squared RGB error (lower is closer)"),
    ("psnr", "PSNR (dB)", "peak signal-to-noise ratio (higher is closer)"),
    ("ssim", "SSIM", "structural similarity (1 = same)"),
    ("lpips", "LPIPS", "learned perceptual distance, AlexNet (lower is closer)"),
    ("uiqi", "UIQI", "universal image quality index (1 = same)"),
    ("tar", "TAR (%)", "pixels whose colour class equals the reference's (Eq. 21)"),
    ("cnr", "CNR", "distinct classes used / distinct classes in the reference (Eq. 19)"),
    ("ccar", "CCAR (%)", "share of the model's K classes this result uses (Eq. 20)"),
    ("ccar_gt", "CCAR reference (%)", "share of the K classes the reference uses"),
    ("cf", "CF", "colourfulness of the result (Hasler & Suesstrunk)"),
    ("cf_gt", "CF reference", "colourfulness of the reference"),
    ("delta_cf", "delta-CF", "|CF - CF reference| (lower is closer)"),
)


def metrics_table(colour: np.ndarray, reference: np.ndarray, classes: ColorClasses) -> tuple[list[list[str]], str]:
    """Result and reference RGB ``(H, W, 3)`` -> (rows of metric, value, meaning; note),
    on the evaluation view. LPIPS is ``n/a`` when its weights are not installed: the note
    says so, and the server log says what is missing."""
    lpips = get_lpips()
    missing = isinstance(lpips, Exception)
    values = compare(eval_crop(colour, EVAL_SIZE)[None], eval_crop(reference, EVAL_SIZE)[None], classes,
                     lpips=None if missing else lpips)
    rows = []
    for key, label, meaning in METRIC_ROWS:
        if key in values:
            rows.append([label, f"{values[key]:.4g}", meaning])
        elif key == "lpips":
            rows.append([label, "n/a", f"{meaning}; its weights are not installed on this server"])
    return rows, f"{LPIPS_NA}." if missing else ""


def slider_value(before: np.ndarray, after: np.ndarray):
    """What the before/after output takes: a pair for ImageSlider, captions for a Gallery."""
    if hasattr(gr, "ImageSlider"):
        return (before, after)
    return [(before, "before (the grey input)"), (after, "after (colorized)")]


CLASSICAL_FALLBACK = "used classical (Felzenszwalb) segmentation instead"


def _masks_source(harmonize_with: str, sam_checkpoint: str, sam_type: str) -> tuple[str | None, tuple | None, str]:
    """The harmonisation choice -> (mask source, SAM (checkpoint, type) or None, note). SAM is
    loaded here, before any GPU time is taken; whatever stops it (no checkpoint, a missing
    or broken file, no network) falls back to the classical segmentation, with a short
    note in the page and one line in the server log (METHOD.md s. 9, step 1)."""
    if harmonize_with == "off":
        return None, None, ""
    if harmonize_with == "classical":
        return "classical", None, ""
    checkpoint = (sam_checkpoint or "").strip()
    if not checkpoint:
        if locked():
            return "classical", None, f"SAM is not set up on this server; {CLASSICAL_FALLBACK}."
        return "classical", None, f"SAM needs a checkpoint (the 'SAM checkpoint' box); {CLASSICAL_FALLBACK}."
    try:
        get_sam(checkpoint, sam_type)
    except Exception as e:  # noqa: BLE001 - any failure to read a checkpoint: the page goes on without SAM
        log_once(("sam", checkpoint, sam_type), "SAM %s (%s) could not be loaded, classical masks are used: %s",
                 checkpoint, sam_type, e, exc=e)
        if locked():
            return "classical", None, f"SAM could not be loaded on this server; {CLASSICAL_FALLBACK}."
        return "classical", None, (f"SAM could not load {checkpoint!r} as a {sam_type} checkpoint (the server log "
                                   f"says why); {CLASSICAL_FALLBACK}.")
    return "sam", (checkpoint, sam_type), ""


def clear_outputs():
    """The first step of every run: no picture, table, download or note of an earlier run
    stays on the page, so an error never sits next to an old result."""
    return None, None, None, gr.update(value=[], visible=False), gr.update(value=None, visible=False), ""


def reveal(table, download):
    """The last step of every run: the metrics table shows only when it has rows (a colour
    photo), the download only when there is a file."""
    rows = table.values.tolist() if hasattr(table, "values") else (table or [])
    has_rows = any(str(cell).strip() for row in rows for cell in row)
    return gr.update(visible=has_rows), gr.update(visible=bool(download))


def run(photo, model, size, decode, harmonize_with, dominance, max_dev, min_area, sam_checkpoint, sam_type,
        points_per_side, temperature=DECODING.temperature, hints="", reference=None,
        reference_strength=HINT_DEFAULTS["reference_strength"], progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """The page's one action: photo and controls -> before/after, class map, masks
    overlay, metrics (no rows without a reference), full-resolution download, notes
    (also the API, ``/colorize``). Errors about the request are :class:`gr.Error` without a traceback
    in the log; anything else is logged once and reported in one line."""
    try:
        return _run(photo, model, size, decode, harmonize_with, dominance, max_dev, min_area, sam_checkpoint,
                    sam_type, points_per_side, temperature, progress, hints, reference, reference_strength)
    except gr.Error:
        raise
    except Exception as e:
        log.exception("colorization failed")
        raise user_error(f"Colorization failed on the server ({type(e).__name__}). "
                         "Try a smaller photo or input size.") from e


EXAMPLE_RUNS: dict[tuple, tuple] = {}  # (example photo, every control) -> the outputs of that run
EXAMPLE_RUNS_KEPT = 32


def run_example(photo, *controls, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """:func:`run` for a click on an example: the first click with given controls runs it,
    later ones get the same outputs at once, while the download is still on disk (Gradio's
    lazily cached examples)."""
    key = (photo, *map(repr, controls))
    hit = EXAMPLE_RUNS.get(key)
    if hit is not None and (not hit[4] or Path(hit[4]).is_file()):
        return hit
    out = run(photo, *controls, progress=progress)
    if len(EXAMPLE_RUNS) >= EXAMPLE_RUNS_KEPT:
        EXAMPLE_RUNS.pop(next(iter(EXAMPLE_RUNS)))
    EXAMPLE_RUNS[key] = out
    return out


def _run(photo, model, size, decode, harmonize_with, dominance, max_dev, min_area, sam_checkpoint, sam_type,
         points_per_side, temperature, progress, hints="", palette=None,
         palette_strength=HINT_DEFAULTS["reference_strength"]):
    is_locked = locked()
    progress(0.0, desc="Reading the photo")
    rgb, reference, alpha, name = read_photo(photo)
    try:
        n_hints = len(parse_hints(hints))
    except HintError as e:
        raise user_error(f"{e}.") from e
    palette_rgb = read_photo(palette)[0] if palette else None
    palette_strength = slider_number("reference_strength", palette_strength)
    h, w = rgb.shape[:2]
    source = default_model() if is_locked else ((model or "").strip() or default_model())
    shown_source = public_name(source) if is_locked else source
    progress(0.1, desc="Loading the model")
    try:
        net = get_model(source)
    except ModelLoadError as e:
        if not is_locked:  # the visitor's own choice: the core's message says what failed
            raise user_error(str(e)) from e
        log_once(("model", source), "model %s could not be loaded: %s", source, e, exc=e)
        raise user_error("The model could not be loaded on this server; please try again later.") from e
    if harmonize_with not in HARMONIZE_CHOICES:
        raise user_error(f"Harmonisation must be one of {', '.join(HARMONIZE_CHOICES)}, got {harmonize_with!r}.")
    check_decode(decode)
    if is_locked:
        sam_checkpoint, sam_type = default_sam()
    if sam_type not in SAM_MODEL_TYPES:
        raise user_error(f"SAM type must be one of {', '.join(SAM_MODEL_TYPES)}, got {sam_type!r}.")
    net_size = snap_size(size)
    masks_from, sam, sam_note = _masks_source(harmonize_with, sam_checkpoint, sam_type)
    if sam_note:
        gr.Warning(sam_note)
    shown = display_size(h, w)

    def report(stage: str) -> None:
        progress(0.55, desc=stage)

    progress(0.2, desc="Colorizing" + (" and harmonising" if masks_from and not REPORT_FROM_DEVICE else ""))
    try:
        decoding = Decoding(decode, slider_number("temperature", temperature))
        harmonization = harmonization_for(
            masks_from, dominance=slider_number("dominance", dominance), max_dev=slider_number("max_dev", max_dev),
            min_area=slider_number("min_area", min_area),
            points_per_side=round(slider_number("points_per_side", points_per_side)))
        out = colorize_on_device(source, rgb, net_size, decoding, harmonization, sam, shown,
                                 report if REPORT_FROM_DEVICE else None, hints or "", palette_rgb, palette_strength)
    except (ValueError, ImageError) as e:  # bad thresholds or modes: the core says which
        log.warning("colorization refused the request: %s", e)
        raise user_error(str(e)) from e

    colour = out["colour"]
    notes = [(f"**{name}**: {w}x{h} px, model `{shown_source}` ({net.encoder_name} encoder, "
              f"K = {net.classes.K} classes), input {net_size}, {decoding.describe()}.")]
    if float(size) != net_size:
        notes.append(f"Input size {float(size):g} was rounded to {net_size}: the network takes multiples of "
                     f"{SIZE_STEP} from {SIZES[0]} to {SIZES[1]}.")
    notes += [n for n in (sam_note, *out["notes"]) if n]
    if n_hints or palette_rgb is not None:
        steer = [f"{n_hints} colour hint{'s' if n_hints != 1 else ''}"] if n_hints else []
        steer += [f"the reference palette (strength {palette_strength:g})"] if palette_rgb is not None else []
        notes.append(f"Steered by {' and '.join(steer)}.")
    if reference is not None:
        progress(0.75, desc="Measuring against the reference")
        table, metrics_note = metrics_table(colour, reference, net.classes)
        notes.append("Colour photo: it was turned grey and kept as the reference; metrics on the evaluation "
                     f"view (shorter side {EVAL_SIZE}, centre crop).")
        notes += [metrics_note] if metrics_note else []
    else:
        table = []
        notes.append("Grey photo: upload a colour photo to see metrics against it.")
    if alpha is not None:
        notes.append("The photo's transparency is kept in the PNG download.")
    progress(0.9, desc="Saving the full-resolution PNG")
    download = _save_png(colour, Path(name).stem, alpha)
    return (
        slider_value(_fit(out["grey"], shown), _fit(colour, shown)),
        class_map_picture(out["class_map"], net.classes, shown),
        _fit(out["masks"], shown),
        table,
        download,
        "\n\n".join(notes),
    )


# ----------------------------------------------------------------------------- hints

HINT_COLOR = "#c0392b"  # the colour picker's start
HINT_SIDE = 640  # longer side of the picture hints are placed on


def _picker_scale(path: str) -> tuple[float, tuple[int, int]]:
    """Photo pixels per picker pixel, and the photo's (H, W)."""
    with open_image(path, MAX_PIXELS) as im:
        w, h = im.size
    return max(1.0, max(h, w) / HINT_SIDE), (h, w)


def hint_view(photo, hints):
    """The photo in grey, at most HINT_SIDE px, with each hint drawn as a ring in its colour."""
    if not photo:
        return None
    try:
        rgb = read_photo(photo)[0]
    except gr.Error:
        return None
    try:
        marks = parse_hints(hints)
    except HintError:  # a line being typed: draw nothing until it reads; the run says what is wrong
        marks = []
    scale = max(1.0, max(rgb.shape[:2]) / HINT_SIDE)
    grey = grey_image(Image.fromarray(to_uint8(rgb)), HINT_SIDE)
    im = Image.fromarray(grey)
    draw = ImageDraw.Draw(im)
    for m in marks:
        x, y = m.point[0] / scale, m.point[1] / scale
        colour = tuple(int(v * 255) for v in lab_to_rgb(torch.tensor([60.0, *m.ab]).view(3, 1, 1))[:, 0, 0])
        draw.ellipse((x - 7, y - 7, x + 7, y + 7), outline="white", width=3)
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
    return np.asarray(im)


def add_hint(photo, hints, colour, strength, evt: gr.SelectData):
    """A click on the picker -> one more line ``X,Y,#RRGGBB,S`` in photo pixels."""
    if not photo or evt.index is None:
        return hints
    scale, (h, w) = _picker_scale(photo)
    x, y = min(round(evt.index[0] * scale), w - 1), min(round(evt.index[1] * scale), h - 1)
    lines = [line for line in (hints or "").strip().splitlines() if line.strip()]
    try:
        check_count(len(lines) + 1)  # the core's limit, said at the click rather than at the run
        line = format_hint(x, y, _hex(colour), slider_number("hint_strength", strength))
    except HintError as e:
        raise user_error(f"{e}.") from e
    return "\n".join([*(hints or "").strip().splitlines(), line]).strip()


def _hex(colour: str) -> str:
    """Gradio's colour picker gives #rrggbb, or rgba(r, g, b, a) in some versions."""
    c = (colour or "").strip()
    if c.startswith("rgb"):
        vals = [float(v) for v in c[c.index("(") + 1 : c.index(")")].split(",")[:3]]
        return "#" + "".join(f"{round(v):02x}" for v in vals)
    return c


# ----------------------------------------------------------------------------- the page


def photo_input(**kwargs) -> gr.Image:
    """A ``gr.Image`` whose file is read by the core: an upload PIL cannot open reaches
    :func:`read_photo`, which names the problem, instead of failing inside Gradio.
    (Set on the instance: a subclass would make Gradio write a ``.pyi`` beside this file.)"""
    photo = gr.Image(type="filepath", image_mode=None, **kwargs)
    gradio_preprocess = photo.preprocess

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except (OSError, ValueError, Image.DecompressionBombError):
            return payload.path

    photo.preprocess = preprocess
    return photo


INTRO = """
# CCC++ colorization
Colour-classified colorization: every pixel of a grey photo is classified into one of K
a\\*b\\* colour classes, decoded to colour and joined with the photo's own full-resolution
lightness. Upload a grey photo, or a colour one to compare against it, then **Colorize**.
"""

METHOD = f"""
1. **Colour space.** The photo's L\\* (CIE Lab) is all the network sees; it predicts a\\*b\\*.
2. **Colour classes (Eq. 9-12).** The a\\*b\\* plane is cut into square bins of side 6
   (36 x 36 = 1296 bins). Only bins frequent in a reference set of photos are kept as
   classes; each dropped bin folds into its nearest kept one. The grid below is drawn
   from the loaded model's own classes.
3. **Network (Tables III-IV).** An image encoder (DenseNet-121 in the paper; the loaded
   model's is named under the result) and a convolutional decoder give one class
   distribution per 4 x 4 pixels; trained with per-batch class rebalancing so
   rare colours are not washed out.
4. **Decoding (Eq. 17-18).** *argmax* takes the centre of the most probable class (the
   paper); *annealed-mean* averages the class centres under a sharpened softmax
   (Zhang et al. 2016, temperature T = {DECODING.temperature:g} by default: lower is closer to argmax,
   1 is the plain mean); *confident* keeps the argmax colour where the network is sure of
   its hue and mutes it where it hesitates between hues. The a\\*b\\* map is upsampled and joined with the
   full-resolution L, so large photos keep every detail of their lightness.
5. **Harmonisation (Algorithm 1).** Object masks (SAM, or a classical segmentation)
   are visited largest first; where one class holds at least *dominance* of a mask,
   pixels farther than *max deviation* from it take its colour, with a feathered edge.
6. **Metrics (Eq. 19-27).** Against a colour reference, on the evaluation view (shorter
   side {EVAL_SIZE}, centre crop): MSE, PSNR, SSIM, LPIPS, UIQI; TAR (pixels in the reference's
   class), CNR and CCAR (how many classes are used); colourfulness and its difference.
"""


def _find_examples() -> list[tuple[str, str]]:
    """(path, label) for the bundled examples: grey photos, then their colour originals."""
    for folder in EXAMPLE_DIRS:
        grey = sorted((folder / "grey").glob("*.jpg"))
        if grey:
            ref = sorted((folder / "reference").glob("*.jpg"))
            return [(str(p), f"{p.stem} (grey)") for p in grey] + [(str(p), f"{p.stem} (colour)") for p in ref]
    return []


def _classes_of(source: str) -> tuple[ColorClasses, str]:
    """The classes the method figure draws, and the words for where they come from."""
    try:
        return get_model(source).classes, f"the classes of model {public_name(source)}"
    except ModelLoadError as e:
        log.warning("no model for the method figure: %s", e)
        return ColorClasses(bin_size=6), "all bins: the model could not be loaded"


def harmonize_control(sam_ready: bool, is_locked: bool) -> dict:
    """Choices ((label, value)) and info of the harmonisation control: when SAM cannot be
    used, its choice and the info say so (choosing it gives classical masks)."""
    info = "make each object's colour consistent (Algorithm 1)"
    if sam_ready:
        sam_label = "SAM"
    elif is_locked:
        sam_label, info = "SAM (not set up)", info + "; SAM is not set up on this server: classical masks are used"
    else:
        sam_label, info = "SAM (no checkpoint)", info + "; SAM needs a checkpoint, else classical masks are used"
    return {"choices": [("off", "off"), (sam_label, "sam"), ("classical", "classical")], "info": info}


def slider(name: str, value: float, **kwargs) -> gr.Slider:
    """A lenient slider with the range, step and label of :data:`SLIDERS`."""
    lo, hi, step, label = SLIDERS[name]
    return lenient(gr.Slider(lo, hi, value=value, step=step, **{"label": label, **kwargs}))


# ----------------------------------------------------------------------------- video
VIDEO_MAX_SECONDS = 10  # longer clips are refused (each is colorized twice: frame by frame and temporal)
VIDEO_MAX_FRAMES = 300
VIDEO_MAX_PIXELS = 1280 * 720  # per frame
VIDEO_LIMITS = (f"Clips up to {VIDEO_MAX_SECONDS} s and {VIDEO_MAX_FRAMES} frames, frames up to 1280x720; "
                "the sound is kept.")


def clip_seconds(source, clip, size, decode, progress=None) -> int:
    """GPU seconds to ask for a clip: both passes over at most VIDEO_MAX_FRAMES frames."""
    return 120


@on_gpu(clip_seconds)
def colorize_clip_on_device(source: str, clip: str, size: int, decode: str, progress=None) -> tuple[str, str]:
    """The clip colorized frame by frame and in temporal mode (METHOD.md s. 14) -> two MP4 paths."""
    from ccc_nodes.video import colorize_video

    colorizer = Colorizer(get_model(source), size=size, decoding=decode)
    stem = uuid.uuid4().hex[:8]
    paths = []
    for n, temporal in enumerate((False, True)):
        dst = OUT_DIR / f"{stem}-{'temporal' if temporal else 'frame-by-frame'}.mp4"
        colorize_video(colorizer, clip, dst, temporal=temporal, max_pixels=VIDEO_MAX_PIXELS,
                       max_frames=VIDEO_MAX_FRAMES,
                       progress=None if progress is None else lambda i, total, n=n: progress(n, i, total))
        paths.append(str(dst))
    return paths[0], paths[1]


def check_decode(decode) -> None:
    """The photo and the video handlers refuse a decoding the page does not offer, in words."""
    if decode not in DECODE_MODES:
        raise user_error(f"Decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}.")


def run_video(clip, model, size, decode, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """The video section's handler: limits checked first, then the core's colorize_video twice."""
    from ccc_nodes.video import VideoError, probe

    if not clip:
        raise user_error("Upload a short video clip first.")
    check_decode(decode)
    try:
        info = probe(clip)
    except VideoError as e:
        raise user_error(f"That file is not a video this page can read: {str(e).split(': ', 1)[-1]}") from None
    seconds = info.frames / float(info.fps) if info.frames else 0.0
    if seconds > VIDEO_MAX_SECONDS or info.frames > VIDEO_MAX_FRAMES:
        raise user_error(f"The clip is {seconds:.1f} s ({info.frames} frames): {VIDEO_LIMITS}")
    if info.width * info.height > VIDEO_MAX_PIXELS:
        raise user_error(f"The clip's frames are {info.width}x{info.height}: {VIDEO_LIMITS}")
    source = model if not locked() else default_model()
    try:
        get_model(source)
    except ModelLoadError as e:
        raise user_error(str(e)) from None

    def report(n: int, done: int, total: int) -> None:
        progress((n + done / max(total, 1)) / 2, desc=("frame by frame" if n == 0 else "temporal") +
                 f": frame {done}" + (f" of {total}" if total else ""))

    try:
        return colorize_clip_on_device(source, clip, snap_size(size), decode,
                                       report if REPORT_FROM_DEVICE else None)
    except VideoError as e:
        raise user_error(f"The clip could not be colorized: {str(e).split(': ', 1)[-1]}") from None


def build_demo(model: str | None = None) -> gr.Blocks:
    """The page. ``model`` overrides ``$CCC_SPACE_MODEL`` / the embedded default;
    ``$CCC_SPACE_LOCKED`` fixes the model and SAM boxes to the configured ones."""
    if model:
        os.environ[MODEL_ENV] = str(model)
    start = default_model()
    is_locked = locked()
    sam_start, sam_start_type = default_sam()
    examples = _find_examples()
    with gr.Blocks(title="CCC++ colorization", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                photo = photo_input(label="Photo (grey or colour)", sources=["upload", "clipboard"], elem_id="photo",
                                    height=230)
                if examples:  # a Dataset, not gr.Examples: its click would swap the photo box for a plain
                    # gr.Image in the session, without photo_input's tolerant preprocess
                    gallery = gr.Dataset(
                        components=[photo], samples=[[p] for p, _ in examples], type="index",
                        sample_labels=[label for _, label in examples], label="Examples (click one to run it)",
                        samples_per_page=len(examples), elem_id="examples",
                    )
                if is_locked:
                    model_box = gr.Dropdown(choices=[public_name(start)], value=public_name(start),
                                            allow_custom_value=True, interactive=False, label="Model",
                                            info="fixed on this server", elem_id="model")
                else:
                    model_box = gr.Dropdown(
                        choices=sorted({start, DEFAULT_MODEL}), value=start, allow_custom_value=True, label="Model",
                        info="'default' (embedded), a Hub repo id (owner/name) or a model folder",
                        elem_id="model",
                    )
                size = lenient(gr.Slider(*SIZES, value=INPUT_SIZE, step=SIZE_STEP, label="Input size", elem_id="size",
                                         info="the network's square input side, a multiple of 32 (paper: 224)"))
                decode = lenient(gr.Radio(list(DECODE_MODES), value=DECODING.mode, label="Decode", elem_id="decode"))
                temperature = slider("temperature", DECODING.temperature, label="Temperature (annealed-mean)",
                                     visible=False, elem_id="temperature",
                                     info="lower: closer to argmax; 1: the plain mean of the class centres")
                harmonize = lenient(gr.Radio(value="off", label="Harmonisation", elem_id="harmonize",
                                             **harmonize_control(bool(sam_start), is_locked)))
                button = gr.Button("Colorize", variant="primary", elem_id="colorize")
                with gr.Accordion("Colour hints", open=True, elem_id="hint-settings"):
                    hint_picker = gr.Image(label="Click the photo to place a hint", interactive=False,
                                           elem_id="hint-picker", height=230, type="numpy")
                    with gr.Row():
                        hint_color = gr.ColorPicker(value=HINT_COLOR, label="Hint colour", elem_id="hint-color")
                        hint_strength = slider("hint_strength", HINT_DEFAULTS["strength"], label="Hint strength",
                                               elem_id="hint-strength")
                    hints_box = gr.Textbox(value="", label=f"Hints (x, y, colour, strength; one per line, at most "
                                                           f"{MAX_HINTS}; edit or delete freely)", lines=3, elem_id="hints",
                                           placeholder="click the photo above, or type 120,80,#c0392b,1")
                    with gr.Row():
                        undo_hint = gr.Button("Remove last", size="sm", elem_id="hint-undo")
                        clear_hints = gr.Button("Clear hints", size="sm", elem_id="hint-clear")
                    palette = photo_input(label="Reference image: its palette steers the colours",
                                          sources=["upload", "clipboard"], elem_id="reference", height=140)
                    palette_strength = slider("reference_strength", HINT_DEFAULTS["reference_strength"],
                                              label="Reference strength", elem_id="reference-strength")
                with gr.Accordion("Harmonisation settings", open=False, elem_id="harmonize-settings"):
                    dominance = slider("dominance", HARMONIZATION.dominance,
                                       info="share of a mask its most frequent class must hold")
                    max_dev = slider("max_dev", HARMONIZATION.max_dev, label="Max deviation (a*b*)",
                                     info="pixels farther than this from the mask's class are recoloured")
                    min_area = slider("min_area", HARMONIZATION.min_area,
                                      info="fraction of the image; smaller masks are skipped")
                    if is_locked:
                        sam_checkpoint = gr.Textbox(value=public_name(sam_start), label="SAM checkpoint",
                                                    interactive=False, elem_id="sam-checkpoint",
                                                    placeholder="none on this server: classical masks are used",
                                                    info="fixed on this server")
                        sam_type = lenient(gr.Radio(list(SAM_MODEL_TYPES), value=sam_start_type, label="SAM type",
                                                    interactive=False, elem_id="sam-type"))
                    else:
                        sam_checkpoint = gr.Textbox(value=sam_start, label="SAM checkpoint", elem_id="sam-checkpoint",
                                                    info="Hub repo id or .pth file; empty: classical masks instead")
                        sam_type = lenient(gr.Radio(list(SAM_MODEL_TYPES), value=sam_start_type, label="SAM type",
                                                    elem_id="sam-type"))
                    points = slider("points_per_side", HARMONIZATION.points_per_side,
                                    info="prompt grid of the automatic mask generator (fewer: faster)")
            with gr.Column(scale=2):
                if hasattr(gr, "ImageSlider"):
                    before_after = gr.ImageSlider(label="Before / after", type="numpy", elem_id="before-after")
                else:  # older Gradio: the two pictures side by side
                    before_after = gr.Gallery(label="Before / after", columns=2, elem_id="before-after")
                with gr.Row():
                    class_pic = gr.Image(label="Class map (each class at its bin centre)", elem_id="class-map",
                                         interactive=False, height=260)
                    masks_pic = gr.Image(label="Harmonisation masks", elem_id="masks", interactive=False, height=260)
                notes = gr.Markdown(elem_id="notes")
                download = gr.File(label="Download: the full-resolution result (PNG)", elem_id="download",
                                   interactive=False, visible=False)
                metrics = gr.Dataframe(headers=["metric", "value", "meaning"], label="Metrics against the reference",
                                       interactive=False, wrap=True, column_widths=["25%", "88px", "48%"], type="array",
                                       max_height=2400, visible=False, elem_id="metrics")
        inputs = [photo, model_box, size, decode, harmonize, dominance, max_dev, min_area,
                  sam_checkpoint, sam_type, points, temperature, hints_box, palette, palette_strength]
        outputs = [before_after, class_pic, masks_pic, metrics, download, notes]
        hidden = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
        shows = ([metrics, download], [metrics, download])
        button.click(clear_outputs, None, outputs, **hidden).then(run, inputs, outputs, api_name="colorize").then(
            reveal, *shows, **hidden)
        if examples:
            gallery.click(lambda index: examples[index][0], gallery, photo, **hidden).then(
                clear_outputs, None, outputs, **hidden).then(
                run_example, inputs, outputs, api_visibility="undocumented").then(reveal, *shows, **hidden)
        decode.change(lambda d: gr.update(visible=d == "annealed-mean"), decode, temperature, **hidden)
        photo.change(hint_view, [photo, hints_box], hint_picker, **hidden)
        hints_box.change(hint_view, [photo, hints_box], hint_picker, **hidden)
        hint_picker.select(add_hint, [photo, hints_box, hint_color, hint_strength], hints_box, **hidden)
        undo_hint.click(lambda text: "\n".join((text or "").strip().splitlines()[:-1]), hints_box, hints_box,
                        **hidden)
        clear_hints.click(lambda: "", None, hints_box, **hidden)
        if not is_locked:
            sam_checkpoint.change(lambda c: gr.update(**harmonize_control(bool((c or "").strip()), False)),
                                  sam_checkpoint, harmonize, **hidden)
        with gr.Accordion("Video: frame by frame and temporal, side by side", open=False, elem_id="video-section"):
            gr.Markdown("A short clip in: it is colorized twice with the model, size and decoding chosen above, "
                        "frame by frame and in temporal mode (each frame's colour classes blended with the "
                        "previous frames' carried along the optical flow, reset at scene cuts), so you can see "
                        f"the flicker go. {VIDEO_LIMITS}", elem_id="video-limits")
            with gr.Row():
                clip_in = gr.Video(label="Clip (grey or colour)", sources=["upload"], elem_id="clip")
                clip_single = gr.Video(label="Frame by frame", interactive=False, elem_id="clip-frame-by-frame")
                clip_temporal = gr.Video(label="Temporal", interactive=False, elem_id="clip-temporal")
            clip_button = gr.Button("Colorize the clip", variant="primary", elem_id="colorize-clip")
            clip_button.click(run_video, [clip_in, model_box, size, decode], [clip_single, clip_temporal],
                              api_name="colorize_video")
        classes, which = _classes_of(start)
        with gr.Accordion("How it works", open=True):
            gr.Markdown(METHOD)
            with gr.Row():
                gr.Image(class_grid(classes), elem_id="class-grid", interactive=False,
                         label=f"a*b* bin grid at L* = 65: {classes.K} of {classes.num_bins} bins kept, "
                               f"outlined ({which})")
                gr.Dataframe(bin_table(), headers=["bin size", "bins per axis", "classes", "max error", "mean error"],
                             label="Table II, measured: quantisation error of a*b* per channel (s/2 max, s/4 mean)",
                             interactive=False)
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)


def launch(demo: gr.Blocks, host: str | None = None, port: int | None = None, block: bool = True):
    """Serve the page; ``host``/``port`` default to Gradio's env variables (then PORT)."""
    if port is None and os.environ.get("PORT"):
        port = int(os.environ["PORT"])
    return demo.launch(
        server_name=host, server_port=port, max_file_size=MAX_FILE_SIZE, show_error=True, ssr_mode=False,
        allowed_paths=[str(d) for d in EXAMPLE_DIRS if d.is_dir()], prevent_thread_lock=not block, quiet=not block,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the CCC++ colorization page.")
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $PORT, $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--model", help=f"model to start with (default: ${MODEL_ENV} or the embedded default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    launch(build_demo(args.model), args.host, args.port)


if __name__ == "__main__":
    main()
