"""The video section: a short clip colorized twice with the model, size and decoding
chosen for the photo, frame by frame and in temporal mode (the core's ``colorize_video``),
to be shown side by side. app.py wires up ``run_video`` and says ``VIDEO_LIMITS`` in the page.
"""

from __future__ import annotations

import uuid

import gradio as gr
from common import (
    OUT_DIR,
    REPORT_FROM_DEVICE,
    check_decode,
    default_model,
    get_model,
    locked,
    on_gpu,
    snap_size,
    user_error,
)

from ccc_nodes import Colorizer, ModelLoadError

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
    from ccc_nodes.job.video import colorize_video

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


def run_video(clip, model, size, decode, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """The video section's handler: limits checked first, then the core's colorize_video twice."""
    from ccc_nodes.job.video import VideoError, probe

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
