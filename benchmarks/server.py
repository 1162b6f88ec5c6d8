"""Server overhead: the same colorization graph through ``POST /prompt`` against calling the
same nodes directly in one process, same run.

    python benchmarks/server.py [--model default] [--size 224] [--image-size 256] [--prompts 20] [--rounds 3]

Graph: LoadImage -> CCC++ Model Loader -> CCC++ Colorize -> SaveImage. Each prompt
changes one widget of the Colorize node (a temperature that argmax decoding does not
use), so every prompt runs Colorize and SaveImage again while LoadImage and the loader
are served from cache, as in the direct loop, where they run once.

1. direct: ``CCCColorize().colorize`` then ``SaveImage().save_images``, N times;
2. server, sequential: post a prompt, wait for its ``executing: null`` on the websocket,
   N times (per-prompt latency);
3. server, queued: post N prompts at once, wait for the last (time per prompt).
The three alternate for ``--rounds`` rounds; medians are reported. Three warm-up prompts
precede 1 and 2.

Prints prompts/s and ms/prompt of each, the ratios server / direct and the overhead per
prompt (server latency - direct time).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from PIL import Image
from skimage import data
from websockets.sync.client import connect

from ccc_nodes import load_model
from ccc_nodes.interfaces import nodes as N
from ccc_nodes.interfaces.server import ServerConfig, ServerThread
from ccc_nodes.interfaces.server.files import Folders
from ccc_nodes.interfaces.server.image_nodes import image_nodes


def graph(model: str, size: int, i: int) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "bench.png"}},
        "2": {"class_type": "CCCModelLoader", "inputs": {"model": model, "device": "auto", "precision": "auto"}},
        "3": {"class_type": "CCCColorize", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "decode": "argmax",
                                                      "temperature": 0.30 + 0.001 * i, "size": size}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bench"}},
    }


def direct(work: Path, model: str, size: int, n: int) -> list[float]:
    """Seconds of each prompt calling the nodes in-process (model and image loaded once)."""
    nodes = image_nodes(Folders(work), 100_000_000)
    (image, _) = nodes["LoadImage"]().load_image("bench.png")
    (ccc,) = N.CCCModelLoader().load(model, "auto", "auto")
    times = []
    for i in range(-3, n):  # three warm-up prompts
        t = time.perf_counter()
        (out,) = N.CCCColorize().colorize(ccc, image, "argmax", 0.30 + 0.001 * i, size)
        nodes["SaveImage"]().save_images(out, "direct")
        times.append(time.perf_counter() - t)
    return times[3:]


def wait_done(ws, pids: set[str]) -> None:
    while pids:
        m = json.loads(ws.recv(timeout=600))
        if m["type"] == "executing" and m["data"]["node"] is None:
            pids.discard(m["data"]["prompt_id"])


def server_runs(srv: ServerThread, model: str, size: int, n: int) -> tuple[list[float], float]:
    """(seconds of each prompt posted one at a time, seconds per prompt all queued at once)."""
    cid = uuid.uuid4().hex
    with httpx.Client(base_url=srv.url, timeout=600) as c, connect(f"ws://{srv.host}:{srv.port}/ws?clientId={cid}") as ws:
        ws.recv(timeout=10)

        def post(i: int) -> str:
            r = c.post("/prompt", json={"prompt": graph(model, size, i), "client_id": cid})
            r.raise_for_status()
            return r.json()["prompt_id"]

        for i in range(-3, 0):  # warm-up: loads the model and the image into the caches
            wait_done(ws, {post(i)})
        times = []
        for i in range(n):
            t = time.perf_counter()
            wait_done(ws, {post(i)})
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        wait_done(ws, {post(n + i) for i in range(n)})
        queued = (time.perf_counter() - t) / n
    return times, queued


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="'default' or a model folder")
    p.add_argument("--size", type=int, default=224, help="network input size")
    p.add_argument("--image-size", type=int, default=256, help="side of the square test image")
    p.add_argument("--prompts", type=int, default=20, help="prompts per phase")
    p.add_argument("--rounds", type=int, default=3, help="direct and server phases alternate this many times")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name = "default"
        if args.model != "default":  # expose a folder as models/ccc/<name>
            (tmp / "models" / "ccc").mkdir(parents=True)
            (tmp / "models" / "ccc" / "bench").symlink_to(Path(args.model).resolve())
            name = "bench"
        load_model(None if args.model == "default" else args.model)  # fail early with a clear message
        os.environ["CCC_MODELS_DIR"] = str(tmp / "models")
        buf = io.BytesIO()
        grey = Image.fromarray(data.astronaut()).convert("L").resize((args.image_size, args.image_size))
        grey.save(buf, format="PNG")
        config = ServerConfig(base_dir=tmp / "work", models_dir=tmp / "models")
        with ServerThread(config) as srv:
            (tmp / "work" / "input" / "bench.png").write_bytes(buf.getvalue())
            d_times, s_times, queued = [], [], []
            for _ in range(args.rounds):  # alternate, so a shared machine's load hits both alike
                d_times += direct(tmp / "work", name, args.size, args.prompts)
                seq, q = server_runs(srv, name, args.size, args.prompts)
                s_times += seq
                queued.append(q)
    base, t_seq, t_queued = statistics.median(d_times), statistics.median(s_times), statistics.median(queued)
    print(f"model={args.model} size={args.size} image={args.image_size}x{args.image_size} "
          f"prompts={args.prompts} x {args.rounds} rounds (medians)")
    print(f"direct nodes        : {1 / base:7.2f} prompts/s  {1000 * base:7.1f} ms/prompt")
    print(f"server, sequential  : {1 / t_seq:7.2f} prompts/s  {1000 * t_seq:7.1f} ms/prompt  "
          f"ratio {base / t_seq:.3f}  overhead {1000 * (t_seq - base):+.1f} ms/prompt")
    print(f"server, queued      : {1 / t_queued:7.2f} prompts/s  {1000 * t_queued:7.1f} ms/prompt  "
          f"ratio {base / t_queued:.3f}  overhead {1000 * (t_queued - base):+.1f} ms/prompt")


if __name__ == "__main__":
    main()
