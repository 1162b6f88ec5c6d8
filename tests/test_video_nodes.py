"""CCC++ Colorize Sequence: an IMAGE batch of consecutive frames through a node graph in
temporal mode, called directly and through ``ccc serve`` over real loopback HTTP and
websockets (the example workflow examples/workflows/colorize_sequence_api.json)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import need, run_prompt
from PIL import Image

need("cv2")

from ccc_nodes.interfaces.nodes import NODE_CLASS_MAPPINGS, CCCColorize, CCCColorizeSequence, _colorizer

WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "workflows" / "colorize_sequence_api.json"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pan_batch(n=6, w=64, h=48) -> torch.Tensor:
    """IMAGE ``(n, h, w, 3)``: grey crops of a photo panning 2 px per frame."""
    from skimage import color, data

    grey = color.rgb2gray(data.chelsea()).astype(np.float32)
    frames = [np.repeat(grey[40 : 40 + h, 80 + 2 * i : 80 + 2 * i + w, None], 3, axis=2) for i in range(n)]
    return torch.from_numpy(np.stack(frames))


@pytest.fixture(scope="module")
def default():
    return _colorizer("default", None, "cpu", "fp32")


def test_node_is_registered_with_its_widgets():
    assert NODE_CLASS_MAPPINGS["CCCColorizeSequence"] is CCCColorizeSequence
    required = CCCColorizeSequence.INPUT_TYPES()["required"]
    assert required["temporal"][1]["default"] is True and required["carry"][1]["default"] == 0.7


@pytest.mark.slow
def test_temporal_off_is_the_colorize_node_and_on_changes_later_frames(default):
    batch = pan_batch()
    on = CCCColorizeSequence().colorize(default, batch, temporal=True)[0]
    off = CCCColorizeSequence().colorize(default, batch, temporal=False)[0]
    plain = CCCColorize().colorize(default, batch)[0]
    assert on.shape == off.shape == (6, 48, 64, 3) and on.dtype == torch.float32
    assert torch.allclose(off, plain, atol=1e-6)
    assert torch.equal(on[0], off[0])  # the first frame has nothing to carry
    assert all((on[i] - off[i]).abs().max() > 0.01 for i in range(1, 6))


def test_bad_carry_is_a_clear_error(default):
    with pytest.raises(ValueError, match="carry must lie in"):
        CCCColorizeSequence().colorize(default, pan_batch(2), carry=1.0)


# ------------------------------------------------------------------ through ccc serve
httpx = need("httpx")
need("fastapi")
need("uvicorn")


from ccc_nodes.interfaces.server import ServerConfig, ServerThread  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("server")
    config = ServerConfig(base_dir=base / "work", models_dir=base / "models", max_upload_bytes=2_000_000)
    with ServerThread(config) as srv:
        srv.base = base / "work"
        yield srv


@pytest.mark.slow
def test_an_image_batch_goes_through_the_example_workflow(server):
    frames = [Image.fromarray((f.numpy() * 255).round().astype(np.uint8)).convert("L") for f in pan_batch()]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/upload/image", files={"image": ("frames.gif", buf.getvalue(), "image/gif")},
                        data={"overwrite": "true"})
        assert r.status_code == 200
        graph = json.loads(WORKFLOW.read_text())
        graph["1"]["inputs"]["image"] = r.json()["name"]
        graph["2"]["inputs"]["device"] = "cpu"
        outputs = {}
        for temporal in (True, False):
            graph["3"]["inputs"]["temporal"] = temporal
            graph["4"]["inputs"]["filename_prefix"] = f"seq_{temporal}"
            _, msgs, entry = run_prompt(server, client, graph)
            assert entry["status"]["status_str"] == "success", entry["status"]
            assert any(m["type"] == "progress" and m["data"]["node"] == "3" and m["data"]["max"] == 6 for m in msgs)
            saved = entry["outputs"]["4"]["images"]
            assert len(saved) == 6
            outputs[temporal] = [np.asarray(Image.open(io.BytesIO(client.get("/view", params=i).content)), dtype=int)
                                 for i in saved]
    assert all(o.shape == (48, 64, 3) and o.std(-1).mean() > 1.0 for o in outputs[True])  # colour frames
    assert np.array_equal(outputs[True][0], outputs[False][0])
    assert all(np.abs(a - b).max() > 0 for a, b in zip(outputs[True][1:], outputs[False][1:], strict=True))
