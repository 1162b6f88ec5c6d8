"""Video and temporal mode on real files made here with PyAV (H.264 + AAC, a few frames):
the codec round trip keeps size, rate, frame count and the audio packets; the temporal
mode resets at scene cuts, holds one batch however long the sequence, and flickers less
than frame by frame; bad inputs are one-line errors that leave nothing behind."""

from __future__ import annotations

import re
import sys
import weakref
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import audio_packets, ccc_colorize, make_clip, need, pan

av = need("av")
need("cv2")


from ccc_nodes.core.color import rgb_to_L
from ccc_nodes.interfaces.cli import main
from ccc_nodes.job.colorizer import Colorizer
from ccc_nodes.job.sequence import colorize_sequence
from ccc_nodes.job.video import VideoError, colorize_video, frame_order, probe, require_av
from ccc_nodes.steps.temporal import TemporalSettings, TemporalState, WarpingError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def chelsea():
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="module")
def colorizer(small_model):
    """For the file handling: a small random model (fast)."""
    return Colorizer(small_model, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def trained():
    """For the temporal behaviour: the embedded default model (a random one predicts nearly
    the same distribution whatever the frame, so there would be nothing to stabilise)."""
    return Colorizer(None, device="cpu", batch_size=4, size=128)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, chelsea):
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", pan(chelsea, 10))


# ------------------------------------------------------------------ codec round trip
@pytest.mark.parametrize("temporal", [True, False])
def test_round_trip_keeps_size_rate_frames_and_audio(colorizer, clip, tmp_path, temporal):
    dst = tmp_path / "out" / "clip.mp4"
    done = []
    info = colorize_video(colorizer, clip, dst, temporal=temporal, progress=lambda i, n: done.append((i, n)))
    src, out = probe(clip), probe(dst)
    assert (out.width, out.height, out.fps, out.frames) == (64, 48, Fraction(12), 10) == \
           (src.width, src.height, src.fps, src.frames)
    assert info.frames == 10 and done == [(i, 10) for i in range(1, 11)]
    assert out.audio == ("aac",) and audio_packets(dst) == audio_packets(clip)  # copied, not re-encoded
    frames = decoded(dst)
    assert len(frames) == 10
    # the lightness is the input's (up to the codec), and the colour is the model's
    def L(f):
        return rgb_to_L(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255)

    assert max(float((L(a) - L(b)).abs().mean()) for a, b in zip(decoded(clip), frames, strict=True)) < 2.0
    assert np.mean([f.astype(np.float32).std(-1).mean() for f in frames]) > 1.0
    assert [p.name for p in dst.parent.iterdir()] == ["clip.mp4"]


def test_odd_sizes_and_other_containers(colorizer, tmp_path, chelsea):
    src = make_clip(tmp_path / "odd.mkv", pan(chelsea, 4, size=(63, 47)), fps=25, audio=False)
    for suffix in (".mkv", ".webm", ".avi", ".mov"):
        dst = tmp_path / f"out{suffix}"
        colorize_video(colorizer, src, dst, temporal=False)
        out = decoded(dst)
        assert len(out) == 4 and out[0].shape == (47, 63, 3), suffix
        assert probe(dst).fps == 25


@pytest.mark.slow
def test_cli_video_and_numbered_frames(small_model, clip, tmp_path, chelsea, capsys):
    from PIL import Image

    model = tmp_path / "model"
    small_model.save_pretrained(model)
    out = tmp_path / "out"
    assert main(["colorize", str(clip), "-o", str(out), "--model", str(model), "-q"]) == 0
    assert probe(out / "clip.mp4").frames == 10 and audio_packets(out / "clip.mp4") == audio_packets(clip)
    assert "colorized 1 video" in capsys.readouterr().err
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, im in enumerate(pan(chelsea, 11)):
        Image.fromarray(im).convert("L").save(frames / f"f{i}.png")
    args = ["-q"]  # the embedded default model
    assert main(["colorize", str(frames), "-o", str(out / "seq"), "--temporal", "on", *args]) == 0
    written = sorted(p.name for p in (out / "seq").iterdir())
    assert written == sorted(f"f{i}.png" for i in range(11))
    # frame by frame on the same folder gives the same first frame, and other later ones
    assert main(["colorize", str(frames), "-o", str(out / "single"), *args]) == 0
    first = [np.asarray(Image.open(out / d / "f0.png")) for d in ("seq", "single")]
    last = [np.asarray(Image.open(out / d / "f10.png")).astype(int) for d in ("seq", "single")]
    assert np.array_equal(*first) and np.abs(last[0] - last[1]).max() > 0


def test_frame_order_is_natural():
    names = [Path(f"f{i}.png") for i in (10, 2, 1, 0, 11)]
    assert [p.name for p in frame_order(names)] == ["f0.png", "f1.png", "f2.png", "f10.png", "f11.png"]


# ------------------------------------------------------------------ temporal mode
def test_scene_cut_resets_the_carry(trained, chelsea):
    from skimage import data

    a = pan(chelsea, 5)
    b = pan(data.astronaut(), 5, x=150, y=100)
    state = TemporalState()
    temporal = list(colorize_sequence(trained, a + b, state=state))
    single = list(colorize_sequence(trained, a + b, temporal=False))
    assert state.cuts == [0, 5]  # the first frame, then the cut
    same = [torch.equal(t, s) for t, s in zip(temporal, single, strict=True)]
    assert same == [True, False, False, False, False, True, False, False, False, False]


def test_carry_zero_is_frame_by_frame(trained, chelsea):
    frames = pan(chelsea, 4)
    zero = colorize_sequence(trained, frames, settings=TemporalSettings(carry=0.0))
    single = colorize_sequence(trained, frames, temporal=False)
    assert all(torch.equal(a, b) for a, b in zip(zero, single, strict=True))


@pytest.mark.slow
def test_temporal_flickers_less(trained, chelsea):
    frames = pan(chelsea, 12, size=(128, 96), step=1)
    greys = [np.round(f.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8) for f in frames]
    errors = {}
    for temporal in (False, True):
        metric = WarpingError()
        for rgb, grey in zip(colorize_sequence(trained, frames, temporal=temporal), greys, strict=True):
            metric.update(rgb[0].permute(1, 2, 0).numpy(), grey)
        errors[temporal] = metric.compute()
    assert errors[True] < 0.8 * errors[False], errors


@pytest.mark.slow
def test_memory_is_bounded_over_a_long_sequence(small_model, chelsea):
    """However long the sequence, the input frames alive at once are one batch (the ones
    being colorized), and the carried state does not grow with the length."""
    colorizer = Colorizer(small_model, device="cpu", batch_size=4, size=64)  # 16 x 16 logits: quick
    frames = pan(chelsea, 2, size=(96, 64))
    made = freed = 0
    alive = []

    def gone():
        nonlocal freed
        freed += 1

    def endless(n):
        nonlocal made
        for i in range(n):
            frame = frames[i % 2].copy()
            weakref.finalize(frame, gone)
            made += 1
            yield frame

    state = TemporalState()
    for out in colorize_sequence(colorizer, endless(300), state=state):
        alive.append(made - freed)
        del out
    assert len(alive) == 300 and made == 300
    assert max(alive) <= colorizer.batch_size  # never more than the batch being colorized
    assert state.cuts == [0] and isinstance(state.reliable_share, float)
    assert sum(t.numel() for t in vars(state).values() if isinstance(t, torch.Tensor)) == colorizer.classes.K * 16 * 16


# ------------------------------------------------------------------ bad input
def test_corrupt_and_unsupported_inputs_are_clear_errors(colorizer, clip, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match=r"junk\.mp4: not a video PyAV can read"):
        colorize_video(colorizer, junk, tmp_path / "out" / "junk.mp4")
    sound = tmp_path / "sound.mp4"
    with av.open(str(sound), "w") as out:
        a = out.add_stream("aac", rate=8000)
        a.layout = "mono"
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        tone.sample_rate, tone.pts = 8000, 0
        out.mux(a.encode(tone))
        out.mux(a.encode(None))
    with pytest.raises(VideoError, match="holds no video stream"):
        colorize_video(colorizer, sound, tmp_path / "out" / "sound.mp4")
    with pytest.raises(VideoError, match="no such file"):
        colorize_video(colorizer, tmp_path / "absent.mp4", tmp_path / "out" / "absent.mp4")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_frames_that_grow_past_the_header_are_refused_frame_by_frame(colorizer, chelsea, tmp_path, capsys):
    """Issue 21 (3): an MPEG-TS stream whose header says 64x48 and whose later frames are
    larger (two segments joined, as broadcast streams change resolution) was checked by its
    header only: every decoded frame's size is checked, and the CLI reports and goes on."""
    small = make_clip(tmp_path / "a.ts", pan(chelsea, 4, size=(64, 48)), audio=False)
    large = make_clip(tmp_path / "b.ts", pan(chelsea, 4, size=(256, 192)), audio=False)
    grows = tmp_path / "grows.ts"
    grows.write_bytes(small.read_bytes() + large.read_bytes())
    assert decoded(grows)[-1].shape == (192, 256, 3) and probe(grows).width == 64  # the header tells the first size
    with pytest.raises(VideoError, match=r"frame 5 is 256x192, over the limit of 12,288 pixels"):
        colorize_video(colorizer, grows, tmp_path / "out" / "deeper" / "grows.mp4", max_pixels=64 * 48 * 4)
    assert not (tmp_path / "out").exists()  # nor the folders made for it (images leave none either)


def test_truncated_video_leaves_nothing_half_written(colorizer, clip, tmp_path):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the moov atom (at the end) is gone
    out = tmp_path / "out"
    with pytest.raises(VideoError, match=r"cut\.mp4"):
        colorize_video(colorizer, cut, out / "cut.mp4")
    assert not out.exists()


def test_interrupted_write_leaves_nothing(colorizer, clip, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4").write_bytes(b"an older output")

    def stop(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        colorize_video(colorizer, clip, out / "clip.mp4", progress=stop)
    assert [p.name for p in out.iterdir()] == ["clip.mp4"]
    assert (out / "clip.mp4").read_bytes() == b"an older output"  # not replaced by half a video


def test_cli_bad_video_is_one_line(small_model, tmp_path, capsys):
    model = tmp_path / "model"
    small_model.save_pretrained(model)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    assert main(["colorize", str(junk), "-o", str(out), "--model", str(model), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {junk}: not a video PyAV can read" in err and err.count("junk.mp4") == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert not out.exists() or list(out.iterdir()) == []


def test_without_the_video_extra(monkeypatch, clip, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails as if not installed
    from ccc_nodes.core.extras import install_command

    with pytest.raises(VideoError, match=re.escape(install_command("video"))):
        require_av()
    assert main(["colorize", str(clip), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: video needs the 'video' extra: {install_command('video')}"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_images_beside_a_video_are_colorized_one_by_one(clip, tmp_path, chelsea):
    """Only --temporal on makes a folder one clip: two photos given beside a video are each
    colorized on their own, exactly as `ccc colorize` does without a video."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, im in enumerate(pan(chelsea, 2, size=(128, 96), step=3)):  # similar enough to be carried
        Image.fromarray(im).save(photos / f"p{i}.png")
    beside, alone = tmp_path / "beside", tmp_path / "alone"
    assert main(["colorize", str(clip), str(photos / "p0.png"), str(photos / "p1.png"), "-o", str(beside), "-q",
                 "--size", "128"]) == 0
    assert main(["colorize", str(photos / "p0.png"), str(photos / "p1.png"), "-o", str(alone), "-q",
                 "--size", "128"]) == 0
    assert (beside / "clip.mp4").is_file()
    for name in ("p0.png", "p1.png"):
        assert np.array_equal(np.asarray(Image.open(beside / name)), np.asarray(Image.open(alone / name)))


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_convention_and_reliability(method, chelsea):
    """src(p) ~ dst(p + flow(p)): content moved 3 px right gives flow x ~ +3 (the sign the
    warp of the carried classes relies on); the forward-backward check trusts the interior
    and refuses what moved in from outside the frame."""
    from ccc_nodes.steps.temporal import flow_pair, optical_flow, reliable

    grey = np.round(chelsea.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    src, dst = grey[50:170, 100:260], grey[50:170, 97:257]  # dst's content is src's, 3 px to the right
    flow = optical_flow(src, dst, method)
    inner = flow[10:-10, 10:-10]
    assert abs(float(np.median(inner[..., 0])) - 3.0) < 0.3 and abs(float(np.median(inner[..., 1]))) < 0.3
    backward, forward = flow_pair(src, dst, method)  # frame t = dst, t-1 = src
    ok = reliable(backward, forward)
    assert ok[10:-10, 10:-10].mean() > 0.9 and ok[:, :2].mean() < 0.5  # the left strip came from outside


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_stopped_video_run_leaves_nothing_half_written(tmp_path, chelsea, how):
    import signal
    import subprocess
    import time

    clip = make_clip(tmp_path / "long.mp4", pan(chelsea, 240, size=(320, 240), step=1), audio=False)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ccc_nodes.interfaces.cli", "colorize", str(clip), "-o", str(out), "-q",
                             "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list(out.glob(".*.part*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, how), err
    assert "Traceback" not in err
    assert not out.exists()  # neither the output nor its temporary, nor the folder the run made for them


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_a_signal_inside_ffmpegs_write_callback_still_stops_the_run(small_model, clip, tmp_path, monkeypatch, capsys,
                                                                    how):
    """FFmpeg writes the video through a Python file object; a stop raised while Python runs
    in that callback cannot leave it (PyAV drops it). The run must stop all the same."""
    import io
    import signal

    from ccc_nodes.job import video

    sig = getattr(signal, how)
    sent = []

    class SignalledFile(io.FileIO):
        def write(self, data):
            if not sent:
                sent.append(sig)
                signal.raise_signal(sig)  # the CLI's handler raises here, inside the callback
            return super().write(data)

    def part_file(dst, keep_suffix=False):
        tmp, file = real(dst, keep_suffix)
        file.close()
        return tmp, SignalledFile(tmp, "wb")

    real = video.part_file
    monkeypatch.setattr(video, "part_file", part_file)
    model = tmp_path / "model"
    small_model.save_pretrained(model)
    out = tmp_path / "out"
    argv = ["colorize", str(clip), "-o", str(out), "--model", str(model), "-q", "--device", "cpu"]
    assert main(argv) == 128 + sig  # 130, 143: stopped by the signal (SIGTERM no longer ends the process at once)
    assert sent == [sig]
    assert not out.exists()  # neither the output nor its temporary, nor the folder made for them
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted: outputs already finished are kept" in err


# ------------------------------------------------------------------ issue 21: inputs and outputs
def videos(root: Path, chelsea, frames: dict[str, int]) -> dict[str, Path]:
    """Real clips ``root/NAME`` of ``frames[NAME]`` frames each (told apart by their frame
    counts), by NAME."""
    made = {}
    for name, n in frames.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        made[name] = make_clip(root / name, pan(chelsea, n), audio=False)
    return made


@pytest.mark.parametrize("order", ["outside first", "inside first"])
def test_an_input_video_inside_the_output_folder_is_never_overwritten(model_dir, chelsea, tmp_path, capsys, order):
    v = videos(tmp_path, chelsea, {"v/clip.mp4": 4, "v/out/clip.mp4": 3})
    outside, inside = v["v/clip.mp4"], v["v/out/clip.mp4"]
    before = inside.read_bytes()
    inputs = [outside, inside] if order == "outside first" else [inside, outside]
    assert ccc_colorize(*inputs, "-o", inside.parent, "--model", model_dir) == 1
    err = capsys.readouterr().err
    assert inside.read_bytes() == before  # neither the outside clip's output nor its own is written over it
    assert f"skipped {outside}: output {inside} would overwrite an input" in err
    assert f"skipped {inside}: output {inside} would overwrite an input" in err
    assert "colorized 0 videos and 0 frames; 2 skipped" in err
    assert sorted(p.name for p in inside.parent.iterdir()) == ["clip.mp4"]


def test_a_frame_folder_never_writes_over_an_input_video(model_dir, chelsea, tmp_path, capsys):
    """Videos and frame folders meet the one rule together: a frame whose output would be
    a video of the run (a hard link to it) is left out, and so is a video whose output is
    a frame of the run."""
    import os

    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, im in enumerate(pan(chelsea, 3)):
        Image.fromarray(im).convert("L").save(frames / f"f{i}.png")
    clip = make_clip(tmp_path / "clip.mp4", pan(chelsea, 3), audio=False)
    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)  # a folder beside another input keeps its name, as with images
    os.link(clip, out / "frames" / "f1.png")  # f1's output is the video's file
    os.link(frames / "f2.png", out / "clip.mp4")  # the video's output is frame f2's file
    before = clip.read_bytes(), (frames / "f2.png").read_bytes()
    assert ccc_colorize(clip, frames, "-o", out, "--model", model_dir, "--temporal", "on") == 1
    err = capsys.readouterr().err
    assert (clip.read_bytes(), (frames / "f2.png").read_bytes()) == before
    assert f"skipped {clip}: output {out / 'clip.mp4'} would overwrite an input" in err
    assert f"skipped {frames / 'f1.png'}: output {out / 'frames' / 'f1.png'} would overwrite an input" in err
    assert "colorized 0 videos and 2 frames" in err and (out / "frames" / "f0.png").is_file()
    assert (out / "clip.mp4").samefile(frames / "f2.png") and (out / "frames" / "f1.png").samefile(clip)


def test_two_videos_of_one_name_keep_the_first_and_report_the_second(model_dir, chelsea, tmp_path, capsys):
    v = videos(tmp_path, chelsea, {"va/clip.mp4": 4, "vb/clip.mp4": 3})
    out = tmp_path / "vo"
    assert ccc_colorize(v["va/clip.mp4"], v["vb/clip.mp4"], "-o", out, "--model", model_dir) == 1
    err = capsys.readouterr().err
    assert probe(out / "clip.mp4").frames == 4  # the first one's, not replaced by the second
    assert "colorized 1 video and 0 frames" in err and "; 1 skipped" in err
    assert f"skipped {v['vb/clip.mp4']}: its output {out / 'clip.mp4'} is already taken by {v['va/clip.mp4']}" in err
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]


def test_an_output_name_taken_by_a_folder_is_reported_before_the_work(model_dir, chelsea, tmp_path, capsys,
                                                                       monkeypatch):
    import ccc_nodes.job.video as video

    v = videos(tmp_path, chelsea, {"a/clip.mp4": 3, "a/other.mp4": 2})
    out = tmp_path / "out"
    (out / "clip.mp4").mkdir(parents=True)
    (out / "clip.mp4" / "mine.txt").write_text("kept")
    started = []
    real = video.colorize_video
    monkeypatch.setattr(video, "colorize_video", lambda c, src, *a, **k: started.append(src) or real(c, src, *a, **k))
    assert ccc_colorize(v["a/clip.mp4"], v["a/other.mp4"], "-o", out, "--model", model_dir) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "IsADirectoryError" not in err
    assert started == [v["a/other.mp4"]]  # refused before any of its frames were colorized
    assert f"skipped {v['a/clip.mp4']}: output {out / 'clip.mp4'} is a folder" in err
    assert "colorized 1 video and 0 frames" in err and probe(out / "other.mp4").frames == 2
    assert (out / "clip.mp4" / "mine.txt").read_text() == "kept"
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "other.mp4"]


def test_a_link_planted_at_the_temporary_name_is_never_written_through(colorizer, clip, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in (".clip.part.mp4", ".clip.mp4.part"):  # the names a run used to write through
        (out / name).symlink_to(victim)
    colorize_video(colorizer, clip, out / "clip.mp4", temporal=False)
    assert victim.read_text() == "precious"
    assert probe(out / "clip.mp4").frames == 10 and not (out / "clip.mp4").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == [".clip.mp4.part", ".clip.part.mp4", "clip.mp4"]


def test_a_quoted_glob_that_matches_videos_colorizes_them_as_videos(model_dir, chelsea, tmp_path, capsys):
    videos(tmp_path, chelsea, {"in/clip.mp4": 3, "in/clip.mkv": 2})
    out = tmp_path / "out"
    assert ccc_colorize(tmp_path / "in" / "clip.m*", "-o", out, "--model", model_dir) == 0  # the shell left it unexpanded
    err = capsys.readouterr().err
    assert "colorized 2 videos and 0 frames" in err and "skipped" not in err.replace("0 skipped", "")
    assert len(decoded(out / "clip.mp4")) == 3 and len(decoded(out / "clip.mkv")) == 2


def test_videos_inside_a_folder_input_are_colorized_with_the_layout_kept(model_dir, chelsea, tmp_path, capsys):
    from PIL import Image

    videos(tmp_path, chelsea, {"in/clip.mp4": 3, "in/sub/one.mkv": 2})
    Image.fromarray(chelsea[:48, :64]).convert("L").save(tmp_path / "in" / "small.png")
    out = tmp_path / "out"
    assert ccc_colorize(tmp_path / "in", "-o", out, "--model", model_dir) == 0
    err = capsys.readouterr().err
    assert "colorized 2 videos and 1 frame into" in err and "; 0 skipped" in err
    assert len(decoded(out / "clip.mp4")) == 3 and len(decoded(out / "sub" / "one.mkv")) == 2
    assert Image.open(out / "small.png").size == (64, 48)


def test_a_folder_of_only_videos_is_not_said_to_hold_nothing(model_dir, chelsea, tmp_path, capsys):
    videos(tmp_path, chelsea, {"in/a.mp4": 2})
    assert ccc_colorize(tmp_path / "in", "-o", tmp_path / "out", "--model", model_dir) == 0
    err = capsys.readouterr().err
    assert "holds no" not in err and "colorized 1 video and 0 frames" in err
    (tmp_path / "empty").mkdir()
    assert ccc_colorize(tmp_path / "empty", "-o", tmp_path / "out2", "--model", model_dir) == 1
    assert f"skipped {tmp_path / 'empty'}: folder holds no images or videos" in capsys.readouterr().err


@pytest.mark.parametrize("temporal", ["on", "beside a video"])
def test_sequences_keep_alpha_as_photos_do(model_dir, chelsea, tmp_path, capsys, temporal):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    grey = Image.fromarray(chelsea[:48, :64]).convert("L")
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1)), "L")
    rgba = grey.convert("RGBA")
    rgba.putalpha(ramp)
    rgba.save(frames / "f1.png")
    la = grey.convert("LA")
    la.putalpha(ramp)
    la.save(frames / "f2.png")
    grey.save(frames / "f3.png")
    out = tmp_path / "out"
    if temporal == "on":
        assert ccc_colorize(frames, "-o", out, "--model", model_dir, "--temporal", "on") == 0
    else:
        clip = make_clip(tmp_path / "clip.mp4", pan(chelsea, 2), audio=False)
        assert ccc_colorize(frames / "f1.png", frames / "f2.png", frames / "f3.png", clip, "-o", out,
                            "--model", model_dir) == 0
    capsys.readouterr()
    for name in ("f1.png", "f2.png"):
        im = Image.open(out / name)
        assert im.mode == "RGBA", name
        assert np.array_equal(np.asarray(im.getchannel("A")), np.asarray(ramp)), name  # the input's alpha, as it was
    assert Image.open(out / "f3.png").mode == "RGB"


def _frames(folder: Path, chelsea, n: int, small: dict[int, tuple[int, int]] | None = None) -> list[Path]:
    """``folder/frame_1.png`` .. ``frame_N.png`` (64x48 grey, or the size ``small`` gives a frame)."""
    from PIL import Image

    folder.mkdir(parents=True)
    paths = []
    for i, im in enumerate(pan(chelsea, n), start=1):
        frame = Image.fromarray(im).convert("L")
        if small and i in small:
            frame = frame.resize(small[i])
        frame.save(folder / f"frame_{i}.png")
        paths.append(folder / f"frame_{i}.png")
    return paths


def test_a_hint_outside_one_frame_of_a_folder_is_that_frames_failure(model_dir, chelsea, tmp_path, capsys):
    frames = _frames(tmp_path / "late", chelsea, 12, small={10: (32, 24)})
    out = tmp_path / "out"
    assert ccc_colorize(frames[0].parent, "-o", out, "--model", model_dir, "--temporal", "on", "--batch", "4",
                        "--hint", "40,30,#ff0000") == 1
    err = capsys.readouterr().err
    assert "colorized 0 videos and 11 frames" in err and "; 1 skipped" in err, err
    assert f"skipped {frames[9]}: colorization failed: hint point (40, 30) lies outside the 32x24 image" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in frames if f != frames[9])


def test_every_frame_of_a_folder_is_done_or_reported_when_the_hint_fits_none(model_dir, chelsea, tmp_path, capsys):
    frames = _frames(tmp_path / "frames", chelsea, 12)
    assert ccc_colorize(frames[0].parent, "-o", tmp_path / "out", "--model", model_dir, "--temporal", "on",
                        "--batch", "4", "--hint", "500,30,#ff0000") == 1
    err = capsys.readouterr().err
    assert "colorized 0 videos and 0 frames; 12 skipped" in err
    assert all(f"skipped {f}: colorization failed: hint point (500, 30) lies outside the 64x48 image" in err
               for f in frames)


def test_a_sequence_that_stops_part_way_reports_the_frames_it_did_not_do(model_dir, chelsea, tmp_path, capsys,
                                                                         monkeypatch):
    from ccc_nodes.job.colorizer import Colorizer as C

    frames = _frames(tmp_path / "frames", chelsea, 12)
    calls = []
    real = C.run

    def run(self, *a, **k):  # the second batch fails, as a device running out of memory would
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the device ran out of memory")
        return real(self, *a, **k)

    monkeypatch.setattr(C, "run", run)
    out = tmp_path / "out"
    assert ccc_colorize(frames[0].parent, "-o", out, "--model", model_dir, "--temporal", "on", "--batch", "4") == 1
    err = capsys.readouterr().err
    assert "colorized 0 videos and 4 frames" in err and "; 8 skipped" in err, err
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in frames[:4])
    for f in frames[4:8]:
        assert f"skipped {f}: colorization failed: the device ran out of memory" in err
    for f in frames[8:]:
        assert f"skipped {f}: not done: the sequence stopped at frame_5.png" in err


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [round(float(f.pts * f.time_base), 3) for f in c.decode(video=0)]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4", ".webm", ".flv"])
def test_a_variable_frame_rate_keeps_each_frames_time(colorizer, chelsea, tmp_path, suffix):
    """Before, frames were laid at the mean rate: a clip whose frames come at 0, .1, .2, .3,
    1.3 .. 1.6 s came out at 0 .. 0.7 s, its picture ending a second before its copied sound.
    (AVI and MPEG-PS hold one constant rate: there the frames follow at the mean rate.)"""
    times = [0.0, 0.1, 0.2, 0.3, 1.3, 1.4, 1.5, 1.6]
    src = make_clip(tmp_path / "vfr.mkv", pan(chelsea, len(times)), fps=10, times=times, audio=suffix != ".webm")
    assert frame_times(src) == times
    out = tmp_path / f"out{suffix}"
    colorize_video(colorizer, src, out, temporal=False)
    got = frame_times(out)  # FLV, which has no negative times, shifts both streams past the sound's priming
    assert [round(t - got[0], 3) for t in got] == times


def test_sound_a_container_cannot_hold_is_a_video_error(colorizer, clip, tmp_path):
    with pytest.raises(VideoError, match=r"out\.webm: cannot hold the input's aac sound"):
        colorize_video(colorizer, clip, tmp_path / "out.webm")
    assert list(tmp_path.iterdir()) == []


def test_a_rotated_clip_keeps_its_rotation(colorizer, chelsea, tmp_path):
    """A phone's portrait clip is stored sideways with a display matrix; before, the output
    lost it and played sideways."""
    src = make_clip(tmp_path / "portrait.mp4", pan(chelsea, 3), rotation=-90)
    out = tmp_path / "out.mp4"
    colorize_video(colorizer, src, out, temporal=False)
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert [f.rotation for f in frames] == [-90] * 3
    assert (frames[0].width, frames[0].height) == (64, 48)  # the stored frame, as the input's
