"""CCC++ colorization: the Gradio Space.

Upload a photo (grey, or colour: then it is turned grey and kept as the reference), pick
a model and the decoding, optionally harmonise with object masks, and compare. The page
only parses inputs, calls ``ccc_nodes`` and formats the results (ARCHITECTURE.md).

Run locally::

    python space/app.py [--host 127.0.0.1] [--port 7860] [--model default|owner/name|path]

Environment: ``CCC_SPACE_MODEL`` (the model the page starts with and the examples use),
``CCC_SPACE_SAM`` / ``CCC_SPACE_SAM_TYPE`` (SAM checkpoint for harmonisation; else an
official ``sam_vit_*.pth`` beside this file), ``CCC_SPACE_MAX_PIXELS`` (largest photo
accepted), ``PORT`` / ``GRADIO_SERVER_PORT`` and ``GRADIO_SERVER_NAME`` (where to listen).
On a Hugging Face Space with ZeroGPU the network runs under ``@spaces.GPU``; without the
``spaces`` package or a GPU it runs on the CPU, unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page

import gradio as gr
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ccc_figures import bin_table, class_grid, class_map_picture, to_uint8

from ccc_nodes import ColorClasses, Colorizer, ImageError, ModelLoadError, load_model
from ccc_nodes.cache import ModelCache
from ccc_nodes.evaluate import eval_crop
from ccc_nodes.harmonize import HARMONIZE_DEFAULTS, harmonize
from ccc_nodes.hub import DEFAULT_MODEL
from ccc_nodes.images import open_image, to_rgb
from ccc_nodes.masks import (
    SAM_CHECKPOINTS,
    SAM_MODEL_TYPES,
    SamLoadError,
    generate_masks,
    grey_image,
    load_sam,
    overlay,
)
from ccc_nodes.metrics import MetricUnavailable, compare, load_lpips
from ccc_nodes.pipeline import DECODE_MODES

try:  # ZeroGPU: a GPU is attached only inside functions decorated with spaces.GPU
    import spaces

    on_gpu = spaces.GPU(duration=60)
except ImportError:  # anywhere else the function runs as it is, on whatever device torch sees

    def on_gpu(fn):
        return fn


log = logging.getLogger("ccc_space")

MODEL_ENV = "CCC_SPACE_MODEL"
SAM_ENV, SAM_TYPE_ENV = "CCC_SPACE_SAM", "CCC_SPACE_SAM_TYPE"  # SAM checkpoint (Hub repo id or file) and its type
MAX_PIXELS = int(os.environ.get("CCC_SPACE_MAX_PIXELS", "40000000"))  # refuse larger photos
MAX_FILE_SIZE = "50mb"  # Gradio refuses larger uploads before they reach the handler
DISPLAY_SIDE = 1600  # longest side of the pictures shown in the page; the download is full size
CONCURRENCY = int(os.environ.get("CCC_SPACE_CONCURRENCY", "2"))  # requests run at once; others queue
SIZES = (128, 768)  # input size slider range (multiples of 32; paper: 224)
HARMONIZE = ("off", "SAM", "classical")
COLOUR_SPREAD = 4 / 255  # a photo is colour if its channels differ by more than this on average
EVAL_SIDE = 256  # metrics protocol (METHOD.md s. 10): shorter side resized to 256, centre crop

EXAMPLE_DIRS = [HERE / "examples", HERE.parent / "examples"]  # in a Space repo, or in this checkout
OUT_DIR = Path(tempfile.mkdtemp(prefix="ccc-space-"))  # full-resolution downloads, kept an hour

# ----------------------------------------------------------------------------- models


def default_model() -> str:
    """The model the page starts with: ``$CCC_SPACE_MODEL`` or the embedded default."""
    return os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


# Networks loaded once per key and shared by all requests; at most 3 of each kind stay, so
# a public page cannot fill the memory with models.
MODELS = ModelCache(keep=3)
cached = MODELS.get


def get_model(source: str):
    """The CCC++ model of ``source`` (``default``, a Hub repo id or a folder); raises
    :class:`ModelLoadError` with the core's message (what failed, what to do)."""
    source = (source or "").strip() or default_model()
    return cached(("ccc", source), lambda: load_model(source))


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
    return checkpoint, model_type or "vit_b"


def get_sam(checkpoint: str, model_type: str):
    """A SAM model (``segment_anything.Sam``); raises :class:`SamLoadError`."""
    return cached(("sam", checkpoint, model_type), lambda: load_sam(checkpoint, model_type=model_type))


def get_lpips():
    """The LPIPS network, or the :class:`MetricUnavailable` saying why there is none."""
    def load():
        try:
            return load_lpips()
        except MetricUnavailable as e:
            return e

    return cached(("lpips",), load)


# ----------------------------------------------------------------------------- inputs


def read_photo(path: str | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The uploaded file -> (RGB ``(H, W, 3)`` in [0, 1], reference RGB or None, name).

    A colour photo is kept as the reference; the network only ever sees its L
    (METHOD.md s. 1). Raises :class:`gr.Error` with a message fit for the page.
    """
    if not path:
        raise gr.Error("Upload a photo first, or click one of the examples.")
    name = Path(path).name
    try:
        rgb, _alpha = to_rgb(open_image(path, MAX_PIXELS), MAX_PIXELS)
    except ImageError as e:
        raise gr.Error(str(e).replace(str(path), name) + ". Upload a JPEG, PNG, WebP, TIFF or BMP photo.") from e
    spread = float((rgb.max(axis=2) - rgb.min(axis=2)).mean())
    reference = rgb if spread > COLOUR_SPREAD else None
    return rgb, reference, name


def _fit(image: np.ndarray | None, side: int = DISPLAY_SIDE) -> np.ndarray | None:
    """Shrink a uint8 picture so its longest side is at most ``side`` (for display only)."""
    if image is None or max(image.shape[:2]) <= side:
        return image
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def _save_png(image: np.ndarray, stem: str) -> str:
    """Write the full-resolution result for download; drop downloads older than an hour."""
    now = time.time()
    for old in OUT_DIR.glob("*.png"):
        if now - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True)
    path = OUT_DIR / f"{stem}-colour-{uuid.uuid4().hex[:8]}.png"
    Image.fromarray(image).save(path)
    return str(path)


# ----------------------------------------------------------------------------- the work


@on_gpu
def colorize_on_device(
    source: str, rgb: np.ndarray, size: int, decode: str, masks_from: str | None, params: dict, sam: tuple | None
) -> dict:
    """The network (and harmonisation) on the best device.

    Arguments:
      source: the model (already loaded into the cache by the caller).
      rgb: the photo ``(H, W, 3)`` in [0, 1] (only its L is used).
      size, decode: the Colorizer's input size and decode mode.
      masks_from: None (no harmonisation), ``"sam"`` or ``"classical"``.
      params: harmonisation thresholds (:func:`ccc_nodes.harmonize.harmonize`) and
        ``points_per_side`` for SAM.
      sam: (checkpoint, type) of the SAM model when ``masks_from == "sam"`` (loaded into
        the cache by the caller).

    Returns plain arrays (ZeroGPU runs this in another process): ``grey`` and ``colour``
    uint8 ``(H, W, 3)``, ``classes`` ``(1, h, w)``, ``masks`` (overlay picture or None),
    ``note``.
    """
    colorizer = Colorizer(get_model(source), size=size, decode=decode)
    pred = colorizer.predict(rgb)[0]
    out = {"grey": grey_image(pred, None), "masks": None, "note": ""}
    if masks_from is None:
        return out | {"colour": to_uint8(pred.rgb(decode)[0].permute(1, 2, 0)), "classes": pred.class_map}
    thresholds = {k: params[k] for k in ("min_area", "dominance", "max_dev")}
    if masks_from == "sam":
        net = get_sam(*sam).to(colorizer.device)
        masks = generate_masks(pred, "sam", sam=net, points_per_side=int(params["points_per_side"]))
    else:
        masks = generate_masks(pred, "classical")
    result = harmonize(pred, masks, **thresholds)  # Algorithm 1 (METHOD.md s. 9)
    note = (f"Harmonised with {result.source} masks: {result.masks_used} of {len(masks)} masks had a dominant "
            f"class; {result.changed:.1%} of the pixels were recoloured.")
    return out | {
        "colour": to_uint8(result.rgb(decode)[0].permute(1, 2, 0)),
        "classes": result.harmonized_classes,
        "masks": np.asarray(overlay(pred, masks)),
        "note": note,
    }


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
    on the evaluation view. LPIPS is ``n/a`` when its weights are not installed, and the
    note says what to install or where to put them."""
    lpips = get_lpips()
    missing = isinstance(lpips, Exception)
    values = compare(eval_crop(colour, EVAL_SIDE)[None], eval_crop(reference, EVAL_SIDE)[None], classes,
                     lpips=None if missing else lpips)
    rows = []
    for key, label, meaning in METRIC_ROWS:
        if key in values:
            rows.append([label, f"{values[key]:.4g}", meaning])
        elif key == "lpips":
            rows.append([label, "n/a", f"{meaning}; its weights are not installed (see the notes)"])
    return rows, f"LPIPS n/a: {lpips}" if missing else ""


def slider_value(before: np.ndarray, after: np.ndarray):
    """What the before/after output takes: a pair for ImageSlider, captions for a Gallery."""
    if hasattr(gr, "ImageSlider"):
        return (before, after)
    return [(before, "before (the grey input)"), (after, "after (colorized)")]


def _masks_source(harmonize_with: str, sam_checkpoint: str, sam_type: str) -> tuple[str | None, tuple | None, str]:
    """The harmonisation choice -> (mask source, SAM (checkpoint, type) or None, note). SAM is loaded here,
    before any GPU time is taken; without a usable checkpoint the page falls back to the
    classical segmentation and says why (METHOD.md s. 9, step 1)."""
    if harmonize_with == "off":
        return None, None, ""
    if harmonize_with == "classical":
        return "classical", None, ""
    checkpoint = (sam_checkpoint or "").strip()
    if not checkpoint:
        note = (f"SAM: no checkpoint given (fill in 'SAM checkpoint' or set ${SAM_ENV}); "
                "used a classical segmentation instead.")
        return "classical", None, note
    try:
        get_sam(checkpoint, sam_type)
    except SamLoadError as e:
        return "classical", None, f"SAM could not be loaded ({e}); used a classical segmentation instead."
    return "sam", (checkpoint, sam_type), ""


def run(photo, model, size, decode, harmonize_with, dominance, max_dev, min_area, sam_checkpoint, sam_type,
        points_per_side):
    """The page's one action: photo and controls -> before/after, class map, masks
    overlay, metrics, full-resolution download, notes."""
    rgb, reference, name = read_photo(photo)
    source = (model or "").strip() or default_model()
    try:
        net = get_model(source)
    except ModelLoadError as e:
        raise gr.Error(str(e)) from e
    if harmonize_with not in HARMONIZE:
        raise gr.Error(f"Harmonisation must be one of {', '.join(HARMONIZE)}, got {harmonize_with!r}.")
    if sam_type not in SAM_MODEL_TYPES:
        raise gr.Error(f"SAM type must be one of {', '.join(SAM_MODEL_TYPES)}, got {sam_type!r}.")
    masks_from, sam, sam_note = _masks_source(harmonize_with, sam_checkpoint, sam_type)
    if sam_note:
        gr.Warning(sam_note)
    params = {"dominance": float(dominance), "max_dev": float(max_dev), "min_area": float(min_area),
              "points_per_side": int(points_per_side)}
    try:
        out = colorize_on_device(source, rgb, int(size), decode, masks_from, params, sam)
    except (ValueError, ImageError) as e:  # bad sizes, modes or thresholds: the core says which
        raise gr.Error(str(e)) from e
    except Exception as e:  # anything else: logged in full here, one line in the page
        log.exception("colorization failed")
        raise gr.Error(f"Colorization failed ({type(e).__name__}: {e}). Try a smaller photo or input size.") from e

    grey, colour = out["grey"], out["colour"]
    h, w = grey.shape[:2]
    notes = [(f"**{name}**: {w}x{h} px, model `{source}` ({net.encoder_name} encoder, K = {net.classes.K} classes), "
              f"input {int(size)}, {decode}.")]
    notes += [n for n in (sam_note, out["note"]) if n]
    if reference is not None:
        table, metrics_note = metrics_table(colour, reference, net.classes)
        notes.append("Colour photo: it was turned grey and kept as the reference; metrics on the evaluation "
                     f"view (shorter side {EVAL_SIDE}, centre crop).")
        notes += [metrics_note] if metrics_note else []
    else:
        table = []
        notes.append("Grey photo: upload a colour photo to see metrics against it.")
    return (
        slider_value(_fit(grey), _fit(colour)),
        _fit(class_map_picture(out["classes"], net.classes, (h, w))),
        _fit(out["masks"]),
        table,
        _save_png(colour, Path(name).stem),
        "\n\n".join(notes),
    )


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

METHOD = """
## How it works
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
   (Zhang et al. 2016, T = 0.38). The a\\*b\\* map is upsampled and joined with the
   full-resolution L, so large photos keep every detail of their lightness.
5. **Harmonisation (Algorithm 1).** Object masks (SAM, or a classical segmentation)
   are visited largest first; where one class holds at least *dominance* of a mask,
   pixels farther than *max deviation* from it take its colour, with a feathered edge.
6. **Metrics (Eq. 19-27).** Against a colour reference, on the evaluation view (shorter
   side 256, centre crop): MSE, PSNR, SSIM, LPIPS, UIQI; TAR (pixels in the reference's
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
    try:
        return get_model(source).classes, f"the classes of model `{source}`"
    except ModelLoadError as e:
        log.warning("no model for the method figure: %s", e)
        return ColorClasses(bin_size=6), f"all bins (model `{source}` could not be loaded: see the error on Colorize)"


def build_demo(model: str | None = None) -> gr.Blocks:
    """The page. ``model`` overrides ``$CCC_SPACE_MODEL`` / the embedded default."""
    if model:
        os.environ[MODEL_ENV] = str(model)
    start = default_model()
    examples = _find_examples()
    with gr.Blocks(title="CCC++ colorization", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                photo = photo_input(label="Photo (grey or colour)", sources=["upload", "clipboard"], elem_id="photo")
                model_box = gr.Dropdown(
                    choices=sorted({start, DEFAULT_MODEL}), value=start, allow_custom_value=True, label="Model",
                    info="'default' (embedded), a Hub repo id (owner/name) or a local model folder",
                )
                size = gr.Slider(*SIZES, value=224, step=32, label="Input size",
                                 info="square side the network sees (paper: 224); colour is upsampled to the photo")
                decode = gr.Radio(list(DECODE_MODES), value="argmax", label="Decode")
                harmonize = gr.Radio(list(HARMONIZE), value="off", label="Harmonisation",
                                     info="make each object's colour consistent (Algorithm 1)")
                with gr.Accordion("Harmonisation settings", open=False):
                    dominance = gr.Slider(0.05, 1.0, value=HARMONIZE_DEFAULTS["dominance"], step=0.05,
                                          label="Dominance", info="share of a mask its most frequent class must hold")
                    max_dev = gr.Slider(0, 60, value=HARMONIZE_DEFAULTS["max_dev"], step=1,
                                        label="Max deviation (a*b*)",
                                        info="pixels farther than this from the mask's class are recoloured")
                    min_area = gr.Slider(0.0, 0.05, value=HARMONIZE_DEFAULTS["min_area"], step=0.0005,
                                         label="Min mask area", info="fraction of the image; smaller masks are skipped")
                    sam_start, sam_start_type = default_sam()
                    sam_checkpoint = gr.Textbox(value=sam_start, label="SAM checkpoint",
                                                info="Hub repo id or .pth file; empty: classical masks instead")
                    sam_type = gr.Radio(list(SAM_MODEL_TYPES), value=sam_start_type, label="SAM type")
                    points = gr.Slider(4, 64, value=32, step=4, label="SAM points per side",
                                       info="prompt grid of the automatic mask generator (fewer: faster)")
                button = gr.Button("Colorize", variant="primary", elem_id="colorize")
            with gr.Column(scale=2):
                if hasattr(gr, "ImageSlider"):
                    before_after = gr.ImageSlider(label="Before / after", type="numpy", elem_id="before-after")
                else:  # older Gradio: the two pictures side by side
                    before_after = gr.Gallery(label="Before / after", columns=2, elem_id="before-after")
                with gr.Row():
                    class_pic = gr.Image(label="Class map (each class at its bin centre)", elem_id="class-map")
                    masks_pic = gr.Image(label="Harmonisation masks", elem_id="masks")
                metrics = gr.Dataframe(headers=["metric", "value", "meaning"], label="Metrics against the reference",
                                       interactive=False, elem_id="metrics")
                download = gr.File(label="Full-resolution result (PNG)", elem_id="download")
                notes = gr.Markdown(elem_id="notes")
        inputs = [photo, model_box, size, decode, harmonize, dominance, max_dev, min_area,
                  sam_checkpoint, sam_type, points]
        outputs = [before_after, class_pic, masks_pic, metrics, download, notes]
        button.click(run, inputs, outputs, api_name="colorize")
        if examples:
            gallery = gr.Examples(
                examples=[[p] for p, _ in examples], example_labels=[label for _, label in examples],
                inputs=[photo], label="Examples (click one to run it)", examples_per_page=len(examples),
            )
            gallery.load_input_event.then(run, inputs, outputs, api_visibility="undocumented")
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
