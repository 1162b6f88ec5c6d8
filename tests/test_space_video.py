"""The Space's video section: a clip in, frame-by-frame and temporal clips out (with the
sound), through the handler and through the page's API on loopback (gradio_client);
limits and unreadable files are messages in the page."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import audio_packets, make_clip, need, pan, serve, space_client

gr = need("gradio")
av = need("av")
need("cv2")


from ccc_nodes.job.video import probe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from skimage import data

    return make_clip(tmp_path_factory.mktemp("space_clip") / "clip.mp4", pan(data.chelsea(), 8))


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]


@pytest.mark.slow
def test_the_handler_gives_both_clips_with_sound(app, model, clip):
    single, temporal = app.run_video(str(clip), model, 224, "argmax", progress=lambda *a, **k: None)
    for path in (single, temporal):
        info = probe(path)
        assert (info.width, info.height, info.frames, info.fps) == (64, 48, 8, 12)
        assert audio_packets(path) == audio_packets(clip)
    a, b = decoded(single), decoded(temporal)
    # the first frame has nothing to carry: the same picture, but for the encoder's noise, which
    # depends on the frames after it (lookahead): small on average, a few levels at edges
    first = np.abs(a[0] - b[0]).mean()
    assert first < 1.5 and all(np.abs(x - y).mean() > 2 * first for x, y in zip(a[1:], b[1:], strict=True))
    assert max(np.abs(x - y).max() for x, y in zip(a[1:], b[1:], strict=True)) > 10


def test_limits_and_bad_files_are_page_messages(app, model, tmp_path):
    from skimage import data

    long = make_clip(tmp_path / "long.mp4", pan(data.chelsea(), 12, step=0) * 10, fps=10, audio=False)  # 12 s
    with pytest.raises(gr.Error, match=r"12\.0 s \(120 frames\): Clips up to 10 s"):
        app.run_video(str(long), model, 224, "argmax", progress=lambda *a, **k: None)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 500)
    with pytest.raises(gr.Error, match="not a video this page can read"):
        app.run_video(str(junk), model, 224, "argmax", progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="Upload a short video clip first"):
        app.run_video(None, model, 224, "argmax", progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match=r"Decode must be one of .*, got 'bogus'"):  # refused in words before any work
        app.run_video(str(junk), model, 224, "bogus", progress=lambda *a, **k: None)
    assert app.VIDEO_LIMITS.startswith("Clips up to 10 s and 300 frames")


@pytest.mark.slow
def test_the_page_states_the_limit_and_serves_the_api(app, model, clip):
    from gradio_client import handle_file

    demo, url = serve(app, model)
    try:
        config = demo.config
        texts = [c.get("props", {}).get("value") for c in config["components"]]
        assert any(isinstance(t, str) and app.VIDEO_LIMITS in t for t in texts)
        client = space_client(url)
        single, temporal = client.predict(handle_file(str(clip)), model, 224, "argmax",
                                          api_name="/colorize_video")
        for out in (single, temporal):
            path = out["video"] if isinstance(out, dict) else out
            assert probe(path).frames == 8
    finally:
        demo.close()
