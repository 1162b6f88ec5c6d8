"""CCC++ colorization: the Gradio Space.

Upload a photo (grey, or colour: then it is turned grey and kept as the reference), pick
a model and the decoding, optionally harmonise with object masks, and compare. The page
only parses inputs, calls ``ccc_nodes`` and formats the results (docs/ARCHITECTURE.md).

This file is the layout: it builds the page and wires its controls to the handlers in
``handlers.py`` (the photo) and ``video.py`` (the clip), which share ``common.py`` (the
settings, the models, errors in words). Imports point that way only.

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
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page

import gradio as gr
from PIL import Image

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import common
import handlers
from ccc_figures import bin_table, class_grid, class_map_picture
from common import (
    CONCURRENCY,
    DECODING,
    DISPLAY_SIDE,
    EXAMPLE_DIRS,
    HARMONIZATION,
    LOCKED_ENV,
    MAX_FILE_SIZE,
    MODEL_ENV,
    SAM_ENV,
    SIZE_STEP,
    SIZES,
    SLIDERS,
    default_model,
    default_sam,
    get_model,
    locked,
    log,
    public_name,
    snap_size,
)
from handlers import (
    EXAMPLE_RUNS,
    _hex,
    add_hint,
    clear_outputs,
    display_size,
    hint_view,
    photo_seconds,
    read_photo,
    reveal,
    run,
    run_example,
)
from video import VIDEO_LIMITS, run_video

from ccc_nodes import ColorClasses, ModelLoadError
from ccc_nodes.core.cache import MODELS, cached
from ccc_nodes.core.hub import DEFAULT_MODEL
from ccc_nodes.core.images import EVAL_SIZE, eval_crop, is_grey
from ccc_nodes.core.metrics import MetricUnavailable, compare
from ccc_nodes.core.settings import DECODE_MODES, INPUT_SIZE
from ccc_nodes.steps.hints import HINT_DEFAULTS, MAX_HINTS
from ccc_nodes.steps.masks import SAM_MODEL_TYPES, grey_image

# The page (build_demo, launch, main), and what the tests take from here that lives in the
# handlers' modules (app.MODELS: the cache this page fills; app.common and app.handlers: the
# modules whose names the tests patch).
__all__ = [
    "DISPLAY_SIDE", "EXAMPLE_RUNS", "LOCKED_ENV", "MODELS", "MODEL_ENV", "SAM_ENV", "VIDEO_LIMITS",
    "MetricUnavailable", "_hex", "add_hint", "bin_table", "build_demo", "cached", "class_grid", "class_map_picture",
    "clear_outputs", "common", "compare", "default_sam", "display_size", "eval_crop", "get_model", "grey_image",
    "handlers", "hint_view", "is_grey", "launch", "main", "photo_seconds", "read_photo", "reveal", "run",
    "run_example", "run_video", "snap_size",
]


# ----------------------------------------------------------------------------- the page


def lenient(control):
    """Let a slider or radio pass any value on: run() rounds or checks it itself, with a
    message and no traceback (Gradio's own range and choice checks log one). Set on the
    instance, as in photo_input."""
    control.preprocess = lambda value: value
    return control


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


HINT_COLOR = "#c0392b"  # the hint colour picker's start

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
