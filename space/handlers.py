"""The photo's handlers: what the page's controls call (app.py wires them up). Each
parses its inputs, calls ``ccc_nodes`` and formats the results; errors about a request
are :class:`gr.Error` in words (common.user_error), anything else is logged once.

``run`` is the page's one action (and the API, ``/colorize``); ``run_example`` serves an
example click; ``hint_view`` and ``add_hint`` drive the hint picker.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F
from ccc_figures import class_map_picture, to_uint8
from common import (
    DECODING,
    DISPLAY_SIDE,
    FORMAT_HINT,
    LPIPS_NA,
    MAX_PIXELS,
    MIN_DISPLAY_SIDE,
    OUT_DIR,
    REPORT_FROM_DEVICE,
    SIZE_STEP,
    SIZES,
    SLIDERS,
    check_decode,
    default_model,
    default_sam,
    get_lpips,
    get_model,
    get_sam,
    locked,
    log,
    log_once,
    on_gpu,
    public_name,
    snap_size,
    user_error,
)
from PIL import Image, ImageDraw

from ccc_nodes import ColorClasses, Colorizer, ImageError, ModelLoadError
from ccc_nodes.core.color import lab_to_rgb
from ccc_nodes.core.images import EVAL_SIZE, ImageTooLarge, eval_crop, is_grey, open_image, to_rgb
from ccc_nodes.core.metrics import compare
from ccc_nodes.core.settings import HARMONIZE_CHOICES, Decoding, Harmonization, harmonization_for
from ccc_nodes.steps.hints import HINT_DEFAULTS, HintError, check_count, format_hint, palette_prior, parse_hints
from ccc_nodes.steps.masks import SAM_MODEL_TYPES, grey_image, overlay

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


def photo_seconds(source, rgb, size, decoding, harmonization, *rest, **kwargs) -> int:
    """GPU seconds to ask for one photo: the network and join (a few seconds, more for
    large photos and inputs), plus SAM's automatic masks, which grow with its point grid."""
    seconds = 5 + 2 * rgb.shape[0] * rgb.shape[1] / 1e6 + 4 * (size / 224) ** 2
    if harmonization is not None and harmonization.masks == "sam":
        seconds += 10 + 30 * (harmonization.points_per_side / 32) ** 2
    return int(min(120, seconds))


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
