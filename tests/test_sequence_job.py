"""One job for stills and sequences: a clip's frames are a sequence of ``Colorizer.run`` calls
that carry the temporal state, so a colour hint, a reference and harmonisation reach video by
the path a photo takes (the core, the CLI on a video and on a folder of frames, and the
Colorize Sequence node)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import ccc_colorize, make_clip, need, pan
from PIL import Image

from ccc_nodes import Colorizer, Harmonization
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.job.sequence import colorize_sequence
from ccc_nodes.steps.hints import Hint
from ccc_nodes.steps.temporal import TemporalState

pytestmark = pytest.mark.usefixtures("one_torch_thread")
need("cv2")

GREEN = "#1fb41f"
X, Y = 30, 24  # the hint's point in the 64 x 48 frames (the cat's fur, brown without the hint)
HARMONY = Harmonization("classical", dominance=0.05, max_dev=0.0)  # changes many pixels, so its effect shows


@pytest.fixture(scope="module")
def frames():
    from skimage import data

    return pan(data.chelsea(), 4)


@pytest.fixture(scope="module")
def default():
    """The embedded model: its classes vary over the frames (a random model's hardly do)."""
    return Colorizer(None, device="cpu", size=64, batch_size=4)


def uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def job_frames(colorizer, frames, **job) -> list[np.ndarray]:
    return [uint8(rgb) for rgb in colorize_sequence(colorizer, frames, **job)]


def green_at(image: np.ndarray, r: int = 2) -> float:
    """How green the region around the hint's point is: -a* (CIE Lab), averaged."""
    lab = rgb_to_lab(torch.from_numpy(image[Y - r : Y + r + 1, X - r : X + r + 1]).permute(2, 0, 1)[None] / 255.0)
    return float(-lab[0, 1].mean())


def test_the_job_takes_every_frame_of_a_clip_through_each_step(default, frames):
    hint = [Hint.at(X, Y, GREEN)]
    plain = job_frames(default, frames)
    hinted = job_frames(default, frames, hints=hint)
    assert all(green_at(h) > 10 and green_at(h) > green_at(p) + 10 for h, p in zip(hinted, plain, strict=True))
    # frame by frame, the sequence is the photo job on each frame: same hints, same harmonisation
    apart = job_frames(default, frames, temporal=False, hints=hint, harmonization=HARMONY)
    alone = [uint8(default.run(f, hints=hint, harmonization=HARMONY).rgb) for f in frames]
    assert all(np.array_equal(a, b) for a, b in zip(apart, alone, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(apart, job_frames(default, frames, temporal=False, hints=hint),
                                                          strict=True))
    # carried: each run continues the state of the one before
    state = TemporalState()
    carried = [uint8(default.run(f, hints=hint, harmonization=HARMONY, sequence=state).rgb) for f in frames]
    sequence = job_frames(default, frames, hints=hint, harmonization=HARMONY)
    assert all(np.array_equal(a, b) for a, b in zip(carried, sequence, strict=True))
    with pytest.raises(ValueError, match="no object masks"):
        next(colorize_sequence(default, frames, masks=np.ones((48, 64))))


def test_the_cli_gives_a_folder_of_frames_a_hint_and_harmonisation(default, frames, tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(clip / f"f{i:03d}.png")
    out = tmp_path / "out"
    assert ccc_colorize(clip, "-o", out, "--model", "default", "--temporal", "on", "--hint", f"{X},{Y},{GREEN}",
                        "--harmonize", "classical", "--dominance", "0.05", "--max-dev", "0") == 0
    got = [np.asarray(Image.open(p)) for p in sorted(out.rglob("*.png"))]
    want = job_frames(default, [np.asarray(Image.open(p)) for p in sorted(clip.glob("*.png"))],
                      hints=[Hint.at(X, Y, GREEN)], harmonization=HARMONY)
    assert len(got) == len(frames) and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_the_cli_gives_a_video_a_hint_and_harmonisation(frames, tmp_path):
    need("av")
    from test_video import decoded

    src = make_clip(tmp_path / "clip.mp4", frames, audio=False)
    assert ccc_colorize(src, "-o", tmp_path / "plain", "--model", "default") == 0
    assert ccc_colorize(src, "-o", tmp_path / "hinted", "--model", "default", "--hint", f"{X},{Y},{GREEN}",
                        "--harmonize", "classical") == 0
    plain, hinted = decoded(tmp_path / "plain" / "clip.mp4"), decoded(tmp_path / "hinted" / "clip.mp4")
    assert len(plain) == len(hinted) == len(frames)
    assert all(green_at(h) > 10 and green_at(h) > green_at(p) + 10 for h, p in zip(hinted, plain, strict=True))


def test_the_colorize_sequence_node_takes_a_hint_and_harmonisation(default, frames):
    from ccc_nodes.interfaces.nodes import CCCColorizeSequence

    batch = torch.from_numpy(np.stack(frames)).float() / 255.0
    node = CCCColorizeSequence()
    (got,) = node.colorize(default, batch, size=64, harmonize="classical", hint_color=GREEN, hint_x=X, hint_y=Y)
    want = job_frames(default, list(batch.numpy()), hints=[Hint.at(X, Y, GREEN)], harmonization=Harmonization("classical"))
    assert got.shape == (len(frames), 48, 64, 3)
    assert all(np.array_equal(uint8(g.permute(2, 0, 1)[None]), w) for g, w in zip(got, want, strict=True))
    mask = torch.zeros(1, 48, 64)
    mask[0, Y - 4 : Y + 5, X - 4 : X + 5] = 1
    (on_mask,) = node.colorize(default, batch, size=64, hint_color=GREEN, hint_mask=mask)
    assert all(green_at(uint8(g.permute(2, 0, 1)[None])) > 10 for g in on_mask)
    with pytest.raises(ValueError, match="needs a sam_model"):
        node.colorize(default, batch, harmonize="sam")
    with pytest.raises(ValueError, match="needs hint_x, hint_y"):
        node.colorize(default, batch, hint_color=GREEN)


def test_a_clip_the_job_refuses_is_reported_and_the_next_input_done(frames, model_dir, tmp_path, capsys):
    """A hint outside the frames of a clip is one line per input, exit 1, not a traceback that
    leaves the other inputs undone (found by probing the new path)."""
    need("av")
    src = make_clip(tmp_path / "clip.mp4", frames, audio=False)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{i}.png")
    out = tmp_path / "out"
    assert ccc_colorize(src, folder, "-o", out, "--model", model_dir, "--temporal", "on", "--hint", "500,10,#00ff00") == 1
    err = capsys.readouterr().err
    assert f"skipped {src}: colorization failed: hint point (500, 10) lies outside the 64x48 image" in err
    assert f"skipped {folder / 'f0.png'}: colorization failed: hint point (500, 10)" in err
    assert "colorized 0 videos and 0 frames" in err
    assert not [p for p in out.rglob("*") if p.is_file()]  # nothing written, nothing half-written


def test_a_reference_steers_every_frame_as_it_steers_a_photo(default, frames):
    from skimage import data

    reference = data.coffee()
    apart = job_frames(default, frames, temporal=False, reference=reference)
    alone = [uint8(default.run(f, reference=reference).rgb) for f in frames]
    assert all(np.array_equal(a, b) for a, b in zip(apart, alone, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(apart, job_frames(default, frames, temporal=False),
                                                          strict=True))
