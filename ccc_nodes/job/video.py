"""Video files in, colorized video files out, through PyAV (the ``video`` extra).

    info = colorize_video(colorizer, "clip.mp4", "out/clip.mp4", temporal=True)

The output keeps the input's size, frame rate and frame count; its audio streams are
copied packet for packet (not re-encoded). Frames are decoded, colorized in batches
(:func:`ccc_nodes.job.sequence.colorize_sequence`) and encoded as they come, so memory stays
bounded however long the clip. The output is written to a hidden ``.NAME.RANDOM.part.EXT``
beside it, made anew (:func:`~ccc_nodes.core.images.part_file`), and renamed when complete: a
failure (a corrupt input, Ctrl-C) leaves nothing under the output's name.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ccc_nodes.core.extras import install_hint
from ccc_nodes.core.images import MAX_PIXELS, folders_for, part_file, pixels
from ccc_nodes.core.signals import raise_pending

__all__ = [
    "VIDEO_HINT",
    "VIDEO_SUFFIXES",
    "VideoError",
    "VideoInfo",
    "colorize_video",
    "frame_order",
    "is_video",
    "probe",
    "require_av",
]

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
VIDEO_HINT = install_hint("video", "video")
# Video encoder by output suffix (software encoders in PyAV's wheels), with its options.
_ENCODERS = {".webm": ("libvpx-vp9", {"crf": "24", "b": "0", "row-mt": "1"}),
             ".avi": ("mpeg4", {"qscale": "2"}), ".mpg": ("mpeg2video", {"qscale": "2"}),
             ".mpeg": ("mpeg2video", {"qscale": "2"}), ".wmv": ("mpeg4", {"qscale": "2"}),
             ".flv": ("flv", {"qscale": "2"})}
_DEFAULT_ENCODER = ("libx264", {"crf": "18", "preset": "medium"})  # mp4, m4v, mov, mkv, ts


class VideoError(ValueError):
    """A video cannot be read or written; the message names the file and says why."""


def require_av():
    """The ``av`` module, or a :class:`VideoError` naming the extra to install."""
    try:
        import av
    except ImportError as e:
        raise VideoError(VIDEO_HINT) from e
    return av


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file (by its suffix; GIFs are read as images)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def frame_order(paths: list[Path]) -> list[Path]:
    """Numbered frames in their natural order (``f2.png`` before ``f10.png``)."""
    def key(p: Path):
        return [(0, int(t), "") if t.isdigit() else (1, 0, t.casefold()) for t in re.split(r"(\d+)", str(p))]

    return sorted(paths, key=key)


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds: frame size, average frame rate, frame count (0: the file does not
    say), and its audio streams' codecs."""

    width: int
    height: int
    fps: Fraction
    frames: int
    audio: tuple[str, ...]


def _open(path: Path):
    av = require_av()
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: not a video PyAV can read ({getattr(e, 'strerror', None) or e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: holds no video stream")
    return container


def _info(container, path: Path) -> VideoInfo:
    v = container.streams.video[0]
    fps = v.average_rate or v.guessed_rate or v.base_rate
    if not v.width or not v.height or not fps:
        raise VideoError(f"{path}: video stream has no frame size or frame rate")
    audio = tuple(a.codec_context.name for a in container.streams.audio)
    return VideoInfo(v.width, v.height, Fraction(fps), int(v.frames or 0), audio)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count and audio of a video file (a :class:`VideoError` if it
    cannot be read)."""
    path = Path(path)
    with _open(path) as container:
        return _info(container, path)


def colorize_video(
    colorizer,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    temporal: bool = True,
    settings=None,
    progress: Callable[[int, int], None] | None = None,
    max_pixels: int = MAX_PIXELS,
    max_frames: int = 0,
    **job: Any,
) -> VideoInfo:
    """Colorize the video ``src`` into ``dst`` (its suffix picks the container) -> the
    output's :class:`VideoInfo`.

    Arguments:
      colorizer: a :class:`~ccc_nodes.job.colorizer.Colorizer`.
      temporal: carry colour classes along the motion (METHOD.md s. 14), else frame by frame.
      settings: :class:`~ccc_nodes.steps.temporal.TemporalSettings` (default: its defaults).
      progress: called with (frames done, frame count or 0) after each frame.
      max_pixels: refuse frames larger than this.
      max_frames: refuse videos with more frames than this (0: no limit).
      job: the rest of the job for every frame (``hints``, ``reference``, ``harmonization``,
        ``sam``): :func:`~ccc_nodes.job.sequence.colorize_sequence`'s.
    """
    from ccc_nodes.core.prediction import to_output
    from ccc_nodes.job.sequence import colorize_sequence
    from ccc_nodes.steps.temporal import TEMPORAL_DEFAULTS

    av = require_av()
    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        raise VideoError(f"{dst}: the output's name is taken by a folder")
    tmp = None
    container = _open(src)
    try:
        info = _info(container, src)
        if max_pixels and info.width * info.height > max_pixels:
            raise VideoError(f"{src}: refused, {info.width}x{info.height} frames are over the limit of "
                             f"{pixels(max_pixels)}")
        if max_frames and info.frames > max_frames:
            raise VideoError(f"{src}: {info.frames} frames, over the limit of {max_frames}")
        written = 0
        try:
            with folders_for(dst):  # a failed video leaves no folder it made
                try:
                    tmp, file = part_file(dst, keep_suffix=True)  # FFmpeg writes to the file made here, never by name
                    with file, av.open(file, "w") as out:
                        vout, clock = _video_stream(out, dst.suffix.lower(), info, container.streams.video[0].time_base)
                        if rotation := _rotation(src):
                            vout.set_display_rotation(rotation)  # a phone's portrait clip stays upright
                        pairs = [(a, _audio_stream(out, a, dst)) for a in container.streams.audio]
                        times: deque[Fraction | None] = deque()  # each decoded frame's time, until it is written
                        frames = _decode(container, out, dict(pairs), src, max_frames, max_pixels, times)
                        like = np.zeros((1, 1, 3), np.uint8)
                        for rgb in colorize_sequence(colorizer, frames, temporal, settings or TEMPORAL_DEFAULTS, **job):
                            frame = av.VideoFrame.from_ndarray(to_output(rgb, like, None), format="rgb24")
                            frame = frame.reformat(format=vout.pix_fmt)
                            frame.pts, frame.time_base = clock.pts(times.popleft()), clock.time_base
                            out.mux(vout.encode(frame))
                            written += 1
                            raise_pending()  # a stop FFmpeg's write callback dropped
                            if progress is not None:
                                progress(written, info.frames)
                        out.mux(vout.encode(None))
                    if written == 0:
                        raise VideoError(f"{src}: holds no decodable frame")
                    raise_pending()  # one that came while the last frames and the trailer were written
                    os.replace(tmp, dst)
                finally:
                    if tmp is not None:
                        tmp.unlink(missing_ok=True)
        except av.FFmpegError as e:
            raise VideoError(f"{dst}: could not write the video ({e})") from e
        except OSError as e:  # e.g. a folder made under the output's name during the run
            raise VideoError(f"{dst}: could not write the video ({e})") from e
    finally:
        container.close()
    return VideoInfo(info.width, info.height, info.fps, written, info.audio)


# Containers of one constant frame rate (and MPEG-1/2 know only the standard ones): their
# frames are laid at the mean rate.
_CONSTANT_RATE = {".avi", ".mpg", ".mpeg"}


class _Clock:
    """Each output frame's pts in the encoder's time base: the input frame's own time, so a
    variable frame rate stays as it was and in step with the copied sound; strictly rising
    (:data:`_CONSTANT_RATE` containers: one frame after another at the mean rate)."""

    def __init__(self, suffix: str, in_base: Fraction | None, fps: Fraction):
        self.keep = suffix not in _CONSTANT_RATE
        if not self.keep:
            self.time_base = 1 / fps
        elif in_base and in_base.denominator <= 65535:  # MPEG-4 part 2's largest
            self.time_base = in_base
        else:
            self.time_base = Fraction(1, 1000)
        self.step = max(1, round(1 / (fps * self.time_base)))
        self.last: int | None = None

    def pts(self, t: Fraction | None) -> int:
        """The pts of the frame the input shows at ``t`` seconds (None: one frame after the last)."""
        follows = 0 if self.last is None else self.last + self.step
        pts = round(t / self.time_base) if t is not None and self.keep else follows
        if self.last is not None and pts <= self.last:
            pts = self.last + 1
        self.last = pts
        return pts


def _video_stream(out, suffix: str, info: VideoInfo, in_base: Fraction | None) -> tuple[Any, _Clock]:
    codec, options = _ENCODERS.get(suffix, _DEFAULT_ENCODER)
    stream = out.add_stream(codec, rate=info.fps)
    stream.width, stream.height = info.width, info.height
    clock = _Clock(suffix, Fraction(in_base) if in_base else None, info.fps)
    stream.codec_context.time_base = stream.time_base = clock.time_base
    # 4:2:0 needs even sizes; x264 keeps odd ones in 4:4:4, the others take 4:2:0 as they can
    odd = info.width % 2 or info.height % 2
    stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
    stream.options = dict(options)
    return stream, clock


def _audio_stream(out, audio, dst: Path):
    """An output stream for ``audio``'s packets, copied as they are."""
    try:
        return out.add_stream_from_template(audio)
    except ValueError as e:  # e.g. AAC into WebM
        raise VideoError(f"{dst}: cannot hold the input's {audio.codec_context.name} sound ({e}); "
                         "choose a container that does (the input's own suffix)") from e


def _rotation(path: Path) -> float:
    """The rotation (degrees) the video's display matrix asks for, read from its first frame."""
    av = require_av()
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return float(frame.rotation or 0)
    except av.FFmpegError:
        pass  # the run's own decoding says what is wrong
    return 0.0


def _decode(container, out, audio: dict[Any, Any], src: Path, max_frames: int, max_pixels: int,
            times: deque[Fraction | None]) -> Iterator[np.ndarray]:
    """The video's frames as RGB uint8 ``(H, W, 3)``, each one's time (seconds, None if the
    file gives none) appended to ``times``; audio packets met on the way are muxed into
    their output streams as they come (interleaved, nothing buffered). Every frame's size is
    checked against ``max_pixels`` before it is converted: a stream may grow past the size
    its header gave."""
    av = require_av()
    video = container.streams.video[0]
    count = 0
    try:
        for packet in container.demux(video, *audio):
            if packet.stream is not video:
                if packet.dts is not None:  # the demuxer's final empty packet has none
                    packet.stream = audio[packet.stream]
                    out.mux(packet)
                continue
            for frame in packet.decode():
                count += 1
                if max_frames and count > max_frames:
                    raise VideoError(f"{src}: more than {max_frames} frames, over the limit")
                if max_pixels and frame.width * frame.height > max_pixels:
                    raise VideoError(f"{src}: refused, frame {count} is {frame.width}x{frame.height}, over the limit "
                                     f"of {pixels(max_pixels)} (the stream grew past the size its header gave)")
                times.append(None if frame.pts is None or frame.time_base is None else frame.pts * frame.time_base)
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as e:
        raise VideoError(f"{src}: corrupt video after {count} frames ({getattr(e, 'strerror', None) or e})") from e


def colorize_sequences(
    colorizer,
    videos: list[tuple[Path, Path]],
    frames: list[tuple[Path, Path]],
    save: Callable[[Any, Path], Any],
    temporal: bool = True,
    settings=None,
    quiet: bool = False,
    max_pixels: int = MAX_PIXELS,
    per_folder: bool = True,
    hints_for: Callable[[Path], list] | None = None,
    **job: Any,
) -> tuple[int, int, list[tuple[str, str]]]:
    """The ``ccc colorize`` job for sequences: each video ``(src, dst)`` into a video, and the
    image files of ``frames`` ``(src, dst)`` as one sequence per folder, in natural order
    (``per_folder=False``: each image on its own), each output written by ``save(image, dst)``.
    Progress in frames on stderr. ``hints_for(path)`` gives the hints of a video, of a folder
    of frames or (``per_folder=False``) of an image; ``job`` (``reference``,
    ``harmonization``, ``sam``) is every sequence's (:func:`colorize_video`).
    -> (videos done, frames done, [(input, why it failed)])."""
    from tqdm.auto import tqdm

    from ccc_nodes.core.images import ImageError, open_image
    from ccc_nodes.job.bulk import OUT_OF_MEMORY
    from ccc_nodes.job.sequence import sequence_results
    from ccc_nodes.steps.hints import HintError, check_fits
    from ccc_nodes.steps.temporal import TEMPORAL_DEFAULTS

    settings = settings or TEMPORAL_DEFAULTS
    hints_for = hints_for or (lambda path: [])
    failures: list[tuple[str, str]] = []
    videos_done = frames_done = 0
    for src, dst in videos:
        with tqdm(desc=src.name, unit="frame", disable=quiet, leave=False) as bar:
            def report(done: int, total: int, bar=bar) -> None:
                bar.total = total or None
                bar.update(done - bar.n)

            try:
                colorize_video(colorizer, src, dst, temporal, settings, report, max_pixels, hints=hints_for(src), **job)
                videos_done += 1
            except VideoError as e:
                failures.append((str(src), str(e).removeprefix(f"{src}: ")))
            except MemoryError:  # the half-written output is removed; the next input is done
                failures.append((str(src), OUT_OF_MEMORY))
            except (ValueError, RuntimeError) as e:  # the job refused (a hint outside the frame, ...)
                failures.append((str(src), f"colorization failed: {e}"))
    folders: dict[Path, list[tuple[Path, Path]]] = {}
    for src, dst in frames:
        folders.setdefault(src.parent if per_folder else src, []).append((src, dst))
    for folder, pairs in folders.items():
        order = {s: d for s, d in pairs}
        ordered = frame_order(list(order))
        hints = hints_for(folder)
        queue: deque[tuple[Path, Any]] = deque()  # read, not yet written
        taken: set[Path] = set()  # read (then queued, or reported)

        def read(paths: list[Path], queue=queue, taken=taken, hints=hints) -> Iterator[Any]:
            for path in paths:
                taken.add(path)
                try:
                    image = open_image(path, max_pixels)
                    check_fits(hints, (image.height, image.width))  # a frame the hints miss is that frame's failure
                except ImageError as e:
                    failures.append((str(path), str(e).removeprefix(f"{path}: ")))
                    continue
                except HintError as e:
                    failures.append((str(path), f"colorization failed: {e}"))
                    continue
                except MemoryError:
                    failures.append((str(path), OUT_OF_MEMORY))
                    continue
                queue.append((path, image))
                yield image

        def stopped(why: str, queue=queue, taken=taken, ordered=ordered) -> None:
            """The sequence stopped: the frames read and not written failed for ``why``, the
            frames never read are named too (every frame is done or reported)."""
            at = queue[0][0].name if queue else None
            failures.extend((str(path), why) for path, _ in queue)
            queue.clear()
            failures.extend((str(path), "not done: the sequence stopped" + (f" at {at}" if at else "")) for path in ordered
                            if path not in taken)

        with tqdm(total=len(pairs), desc=folder.name or str(folder), unit="frame", disable=quiet, leave=False) as bar:
            try:
                for result in sequence_results(colorizer, read(ordered), temporal, settings, hints=hints, **job):
                    path, image = queue.popleft()
                    try:
                        save(result.image(image), order[path])  # with the frame's alpha, as a photo's
                        frames_done += 1
                    except OSError as e:
                        failures.append((str(path), f"could not write {order[path]}: {e}"))
                    bar.update(1)
            except MemoryError:  # frames written so far are whole; the sequence stops, the next is done
                stopped(OUT_OF_MEMORY + " (the frames before it are written)")
            except (ValueError, RuntimeError) as e:  # the job refused, the device failed, ...
                stopped(f"colorization failed: {e}")
    return videos_done, frames_done, failures
