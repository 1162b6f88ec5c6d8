"""The tests' shared helper functions (fixtures live in conftest.py). Test files import
them as ``from helpers import ...`` and never from each other or from conftest.

Optional packages (the extras) are imported inside the helpers that need them, so a test
file that uses none of them runs on any install.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]  # the checkout
EXAMPLES = REPO / "examples"


# ------------------------------------------------------------------ what a run may skip
def in_ci() -> bool:
    """CI sets ``CI=true`` (.ci/run does): the dev extra and Chromium are installed there."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing(reason: str) -> NoReturn:
    """A dev dependency or tool a test needs is absent: a skip on a developer's machine, a
    failure in CI, where nothing the dev extra and .ci/run install may go silently untested."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: what the dev extra or .ci/run installs must be there)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def need(module: str, install: str = "pip install -e '.[dev]'") -> ModuleType:
    """Import ``module`` or go through :func:`missing`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing(f"{module} is not installed ({install}): {e}")


def chromium() -> str:
    """Debian's Chromium for the browser tests, with the Playwright package that drives it
    (or :func:`missing`)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("Chromium is not installed (apt-get install chromium)")
    need("playwright.sync_api")
    return path


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BROWSER_TIMEOUT_MS = 120_000  # a shared 2-core CI machine: generous, never part of what is tested


# Set on the server before the editor opens: no minimap over the output; no restore of a
# previous or default workflow and no new-user template browser, which the editor would
# otherwise do in the background after window.app exists (and which could replace the
# graph a test has just loaded, or open a dialog over the Run button).
EDITOR_SETTINGS = {"Comfy.Minimap.Visible": False, "Comfy.Workflow.Persist": False, "Comfy.TutorialCompleted": True}


def quiet_editor(client) -> None:
    """Apply EDITOR_SETTINGS through the server's settings API (``client``: httpx, on the server)."""
    for key, value in EDITOR_SETTINGS.items():
        r = client.post(f"/api/settings/{key}", json=value)
        assert r.status_code == 200, r.text


def close_dialogs(page) -> None:
    """Dismiss what ComfyUI's editor pops up on start (e.g. its default graph's missing nodes)."""
    for _ in range(4):
        if page.locator(".p-dialog-mask").count() == 0:
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


# ------------------------------------------------------------------ models
SMALL_ENCODER = "mobilenetv3_small_050"


def make_model(kept=None, bin_size=6, seed=0):
    """A small real CCCNet (random weights, nothing downloaded)."""
    import torch

    from ccc_nodes.core.modeling import CCCNet

    torch.manual_seed(seed)
    return CCCNet(encoder=SMALL_ENCODER, decoder_channels=(32, 32, 32), bin_size=bin_size, kept=kept).eval()


def tiny_sam(seed: int = 0):
    """A SAM with segment-anything's own modules, shrunk (64 px input, 1 block, width 32)."""
    need("segment_anything", "pip install -e '.[sam]'")
    from tiny_models import tiny_sam as build

    return build(seed)


# ------------------------------------------------------------------ ccc colorize
def ccc_colorize(*args) -> int:
    """``ccc colorize ARGS`` in this process, small and quiet: 64 px input, CPU."""
    from ccc_nodes.interfaces.cli import main

    return main(["colorize", *map(str, args), "--size", "64", "--device", "cpu", "-q"])


# ------------------------------------------------------------------ the Hugging Face Hub
HUB_REPO = "ccc-test/tiny-ccc"
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_cache(cache: Path, model_dir: Path, repo: str = HUB_REPO, commit: str = HUB_COMMIT) -> Path:
    """Lay out a model folder the way huggingface_hub's cache stores a download."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    for i, f in enumerate(sorted(p for p in model_dir.iterdir() if p.is_file())):
        blob = root / "blobs" / f"{i:040x}"
        shutil.copy(f, blob)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snap


def run_with_unreachable_hub(cache: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh process whose Hub endpoint is a closed loopback port (no
    HF_HUB_OFFLINE: huggingface_hub believes it may go online), warnings logged to stderr."""
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import logging, sys; logging.basicConfig(level=logging.WARNING)\n" + code
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_CACHE": str(cache),
           "HF_HOME": str(cache.parent / "hf_home")}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


class FakeHub:
    """A Hub on loopback that serves one model folder as ``repo`` at one commit: the two
    requests huggingface_hub makes for a file (HEAD for its metadata, GET for its bytes).
    Real HTTP, real huggingface_hub client code; ``requests`` counts what was asked."""

    def __init__(self, folder: Path, repo: str = HUB_REPO, commit: str = HUB_COMMIT):
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        files = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                prefix = f"/{repo}/resolve/"
                name = self.path.split("?")[0].removeprefix(prefix).split("/", 1)[-1]
                if not self.path.startswith(prefix) or name not in files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = files[name]
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):  # noqa: N802 - http.server's names
                self._answer(False)

            def do_GET(self):  # noqa: N802
                self._answer(True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ ccc serve
WORKFLOW = EXAMPLES / "workflows" / "colorize_api.json"


class Echo:
    """A test output node that answers its text at once."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "echo"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def echo(self, text):
        return {"ui": {"text": [text]}}


class Counted:
    """A test output node that counts its INPUT_TYPES calls (a model loader's scan the disk)."""

    calls = 0

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        cls.calls += 1
        return {"required": {"a": ("INT", {"default": 0, "min": 0}), "b": ("FLOAT", {"default": 0.0}),
                             "c": ("STRING", {"default": ""})}, "optional": {"d": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def run(self, a, b, c, d=False):
        return {"ui": {"text": [c]}}


def grey_png(h=48, w=64, frames=1, fmt="PNG") -> bytes:
    from skimage import data

    im = Image.fromarray(data.astronaut()).convert("L").resize((w, h))
    buf = io.BytesIO()
    if frames > 1:
        seq = [im.rotate(90 * i) for i in range(frames)]
        seq[0].save(buf, format=fmt, save_all=True, append_images=seq[1:])
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


def upload(client, data: bytes, name: str, **fields):
    return client.post("/upload/image", files={"image": (name, data, "image/png")}, data=fields)


def graph(image="grey.png", prefix="ccc", model="small", size=64):
    g = json.loads(WORKFLOW.read_text())
    g["1"]["inputs"]["image"] = image
    g["2"]["inputs"]["model"] = model
    g["3"]["inputs"]["size"] = size
    g["4"]["inputs"]["filename_prefix"] = prefix
    return g


def run_prompt(server, client, prompt, timeout=120):
    """Post a prompt as one websocket client; return (prompt_id, messages for it, history entry)."""
    import time
    import uuid

    from websockets.sync.client import connect

    cid = uuid.uuid4().hex
    with connect(f"ws://{server.host}:{server.port}/ws?clientId={cid}") as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "status" and first["data"]["sid"] == cid
        r = client.post("/prompt", json={"prompt": prompt, "client_id": cid})
        assert r.status_code == 200, r.text
        pid = r.json()["prompt_id"]
        msgs = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = json.loads(ws.recv(timeout=timeout))
            if m["type"] != "status":
                assert m["data"]["prompt_id"] == pid
                msgs.append(m)
            if m["type"] == "executing" and m["data"]["node"] is None:
                break
    entry = client.get(f"/history/{pid}").json()[pid]
    return pid, msgs, entry


# ------------------------------------------------------------------ the Space
def load_app():
    """space/app.py as a module (it is a script beside its helpers, not a package)."""
    import importlib.util

    if "ccc_space_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("ccc_space_app", REPO / "space" / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["ccc_space_app"] = module
        spec.loader.exec_module(module)
    return sys.modules["ccc_space_app"]


def space_model(tmp_path_factory) -> str:
    """The embedded default once it is there; until then a small model saved here."""
    from ccc_nodes import DEFAULT_MODEL_DIR

    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return "default"
    folder = tmp_path_factory.mktemp("space_model")
    make_model(kept=list(range(200, 1100, 3))).save_pretrained(folder)
    return str(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app, model: str):
    """Build the page for ``model`` and serve it on a free loopback port -> (demo, url)."""
    demo = app.build_demo(model)
    _, url, _ = app.launch(demo, "127.0.0.1", free_port(), block=False)
    return demo, url


def space_client(url: str):
    """A gradio_client ``Client`` for the served page, with a timeout a loaded 2-core
    machine keeps to (httpx's default of 5 s is not: the page is served by the test's process)."""
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": 120})


# ------------------------------------------------------------------ video files
def pan(image: np.ndarray, n: int, size=(64, 48), step=2, y=40, x=80) -> list[np.ndarray]:
    """n crops of ``image`` moving ``step`` pixels right per frame (a synthetic pan)."""
    w, h = size
    return [np.ascontiguousarray(image[y : y + h, x + step * i : x + step * i + w]) for i in range(n)]


def make_clip(path: Path, frames: list[np.ndarray], fps=12, audio=True, codec="libx264",
              times: list[float] | None = None, rotation: float = 0) -> Path:
    """A real video file: frames encoded with ``codec``, plus a mono AAC tone if ``audio``;
    ``times`` (seconds, one per frame) makes it variable-rate, ``rotation`` (degrees) sets
    its display matrix as a phone does."""
    from fractions import Fraction

    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv444p" if w % 2 or h % 2 else "yuv420p"
        if times is not None:
            v.codec_context.time_base = v.time_base = Fraction(1, 1000)
        if rotation:
            v.set_display_rotation(rotation)
        a = None
        if audio:
            a = out.add_stream("aac", rate=8000)
            a.layout = "mono"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i if times is None else round(times[i] * 1000)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            t = np.arange(int(8000 * (len(frames) / fps if times is None else times[-1] + 1 / fps))) / 8000
            tone = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                              format="fltp", layout="mono")
            tone.sample_rate, tone.pts = 8000, 0
            out.mux(a.encode(tone))
            out.mux(a.encode(None))
    return path


def audio_packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]


# ------------------------------------------------------------------ training data and commands
# The smallest real configuration: timm's mobilenetv3_small_050, 64 px crops, 4 images a step.
TINY = ["--encoder", "mobilenetv3_small_050", "--decoder-channels", "16,16,16", "--size", "64", "--store-size", "72",
        "--batch", "4", "--min-fraction", "0.001", "--log-every", "1", "--no-progress", "--no-tensorboard", "--lr", "1e-3",
        "--warmup", "2"]


def photos() -> list[np.ndarray]:
    from skimage import data

    return [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]


def crops(n: int, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    """``n`` colour crops ``(size, size, 3)`` from scikit-image's sample photos."""
    rng = np.random.default_rng(seed)
    src = photos()
    out = []
    for i in range(n):
        im = src[i % len(src)]
        y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
        out.append(np.ascontiguousarray(im[y : y + size, x : x + size]))
    return out


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def image_tree(root: Path, n: int = 16, bad: bool = True) -> Path:
    """An ImageNet-style tree ``root/class_x/NNN.jpg`` (+ one corrupt file and one grey
    picture stored as RGB when ``bad``)."""
    for i, arr in enumerate(crops(n)):
        d = root / f"class_{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:03d}.jpg").write_bytes(jpeg(arr))
    if bad:
        (root / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        Image.fromarray(np.full((80, 80, 3), 120, np.uint8)).save(root / "class_1" / "grey.png")
    return root


def tar_shards(root: Path, n: int = 12, shards: int = 3) -> list[Path]:
    """WebDataset-style shards ``root/train-000.tar ...``: keys with .jpg and .cls members."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    imgs = crops(n, seed=1)
    for s in range(shards):
        path = root / f"train-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s, n, shards):
                for name, data in ((f"{i:06d}.jpg", jpeg(imgs[i])), (f"{i:06d}.cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def env() -> dict:
    """Environment for subprocesses: run from the checkout, one thread each (2-core CI)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def python() -> str:
    return sys.executable
