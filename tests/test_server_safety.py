"""Regression tests of issue 11 against a real server on loopback: the host rule (DNS
rebinding), the locked model loaders, inert user data and the headers on every response,
the body caps' routes, FLOAT inputs JSON cannot hold, uploads that clash with the folder
tree, and multi-frame images bounded by the pixel limit."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest
from helpers import Counted, graph, grey_png, need, run_prompt
from PIL import Image

httpx = need("httpx")
need("fastapi")
need("uvicorn")


from ccc_nodes.interfaces.server import ServerConfig, ServerThread  # noqa: E402
from ccc_nodes.interfaces.server.safety import host_allowed  # noqa: E402

EVIL = "rebind.evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_model):
    base = tmp_path_factory.mktemp("safety")
    small_model.save_pretrained(base / "models" / "ccc" / "small")
    small_model.save_pretrained(base / "elsewhere" / "model")  # a real model outside the server's folders
    (base / "elsewhere" / ".hidden").write_text("secret")
    config = ServerConfig(base_dir=base / "work", models_dir=base / "models", allowed_hosts=("studio.lan",),
                          locked=True, allowed_repos=("owner/listed",), max_upload_bytes=200_000,
                          max_body_bytes=150_000, max_image_pixels=1_000_000, extra_nodes={"Counted": Counted})
    with ServerThread(config) as srv:
        srv.base, srv.root = base / "work", base
        yield srv


@pytest.fixture(scope="module")
def uploaded(client):
    r = client.post("/upload/image", files={"image": ("grey.png", grey_png(), "image/png")}, data={"overwrite": "true"})
    assert r.status_code == 200, r.text
    return r.json()["name"]


def ws_status(srv, host: str, origin: str | None = None) -> int:
    """The HTTP status a websocket upgrade to /ws gets with this Host (and Origin)."""
    lines = ["GET /ws?clientId=x HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(s.recv(1024).split(b" ", 2)[1])


# ------------------------------------------------------------------ 1. host rule
def test_a_rebound_host_name_is_refused_everywhere(server, client, uploaded):
    port = server.port
    evil = {"Host": f"{EVIL}:{port}", "Origin": f"http://{EVIL}:{port}"}  # same-origin for the page
    assert client.get("/system_stats", headers=evil).status_code == 403
    assert client.get("/history", headers=evil).status_code == 403
    assert client.get("/view", params={"filename": uploaded, "type": "input"}, headers=evil).status_code == 403
    assert client.post("/prompt", json={"prompt": graph(uploaded, model="small")}, headers=evil).status_code == 403
    assert client.post("/userdata/workflows%2Fx.json", content=b"{}", headers=evil).status_code == 403
    assert not (server.base / "user" / "default" / "workflows" / "x.json").exists()
    assert client.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    assert ws_status(server, f"{EVIL}:{port}", f"http://{EVIL}:{port}") == 403
    assert ws_status(server, f"{EVIL}:{port}") == 403
    # Loopback names with any port, and the listed name, are served.
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.8.9.10", f"[::1]:{port}", f"studio.lan:{port}",
                 "LOCALHOST"):
        assert client.get("/system_stats", headers={"Host": host}).status_code == 200, host
    assert ws_status(server, f"localhost:{port}", f"http://localhost:{port}") == 101
    assert ws_status(server, f"studio.lan:{port}") == 101


@pytest.mark.parametrize("host, ok", [
    ("localhost:8188", True), ("127.0.0.1", True), ("127.255.0.1:1", True), ("[::1]:8188", True),
    ("localhost.", True), ("studio.lan:80", True), ("STUDIO.LAN", True),
    ("rebind.evil.example:8188", False), ("128.0.0.1", False), ("localhost.evil.example", False),
    ("127.0.0.1.evil.example", False), ("", False), ("localhost:notaport", False), ("a@localhost", False),
    ("evil.example/localhost", False), ("[::2]:80", False), ("0.0.0.0:8188", False),
])
def test_the_host_rule(host, ok):
    assert host_allowed(host, ("studio.lan",)) is ok


def test_with_a_token_the_host_is_not_restricted(tmp_path):
    with ServerThread(ServerConfig(base_dir=tmp_path, token="t0k")) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        headers = {"Host": f"{EVIL}:{srv.port}", "Authorization": "Bearer t0k"}
        assert c.get("/system_stats", headers=headers).status_code == 200
        assert c.get("/system_stats", headers={"Host": f"{EVIL}:{srv.port}"}).status_code == 401


# ------------------------------------------------------------------ 2. locked loaders
def test_locked_loaders_refuse_every_other_path_alike(server, client, uploaded, tmp_path):
    messages = set()
    for given in ("/etc", "/etc/passwd", str(server.root / "elsewhere" / ".hidden"), str(server.root / "elsewhere"),
                  str(server.root / "elsewhere" / "model"), str(tmp_path / "absent"), "owner/unlisted", "~/.bashrc"):
        g = graph(uploaded, prefix="locked", model="small", size=64)
        g["2"]["inputs"]["repo_or_path"] = given
        _, msgs, entry = run_prompt(server, client, g)
        error = next(m["data"] for m in msgs if m["type"] == "execution_error")
        assert error["node_type"] == "CCCModelLoader" and entry["status"]["status_str"] == "error"
        assert "locked" in error["exception_message"] and given not in error["exception_message"]
        messages.add(error["exception_message"])
    assert len(messages) == 1  # nothing tells existence, file or folder apart
    assert not list((server.base / "output").glob("locked*"))
    # The server's own models load, by name or by their folder.
    for given in ("small", str(server.root / "models" / "ccc" / "small")):
        g = graph(uploaded, prefix="mine", model="default", size=64)
        g["2"]["inputs"]["repo_or_path"] = given
        _, _, entry = run_prompt(server, client, g)
        assert entry["status"]["status_str"] == "success", given


def test_sam_loader_is_locked_too(server):
    from ccc_nodes.interfaces.server.model_nodes import locked_source

    with pytest.raises(Exception, match="locked") as refused:
        locked_source("/etc/passwd", ("owner/listed",), {})
    assert "/etc" not in str(refused.value)
    assert locked_source("owner/listed", ("owner/listed",), {}) == "owner/listed"
    loader = server.app.state.server.registry["CCCSAMLoader"]
    with pytest.raises(Exception, match="locked"):
        loader().load("vit_b", "cpu", None, str(server.root / "elsewhere" / "model" / "model.safetensors"))


def test_serve_is_locked_by_default_beyond_loopback():
    import argparse

    from ccc_nodes.interfaces.server.cli import add_parser, server_config

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())

    def config(*argv):
        return server_config(parser.parse_args(["serve", *argv]), None)

    assert config().locked is False
    assert config("--host", "0.0.0.0").locked is True
    assert config("--host", "192.168.1.5").locked is True and "192.168.1.5" in config("--host", "192.168.1.5").allowed_hosts
    assert config("--host", "0.0.0.0", "--no-locked").locked is False
    assert config("--locked", "--allow-repo", "o/n").allowed_repos == ("o/n",)
    assert config("--allow-host", "a.lan", "--allow-host", "b.lan").allowed_hosts == ("a.lan", "b.lan", "127.0.0.1")


# ------------------------------------------------------------------ 3. inert user data, headers everywhere
def test_user_data_is_served_inert(client):
    page = b"<html><script>fetch('/prompt', {method: 'POST'})</script></html>"
    for name in ("page.html", "page.svg", "page.json.html", "page"):
        assert client.post(f"/userdata/workflows%2F{name}", content=page).status_code == 200
        r = client.get(f"/userdata/workflows%2F{name}")
        assert r.content == page
        assert r.headers["content-type"] == "application/octet-stream", name
        assert r.headers["content-disposition"].startswith("attachment"), name
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"] and "default-src 'none'" in r.headers[
            "content-security-policy"]
    assert client.post("/userdata/workflows%2Fw.json", content=b'{"a": 1}').status_code == 200
    r = client.get("/api/userdata/workflows%2Fw.json")
    assert r.headers["content-type"] == "application/json" and r.json() == {"a": 1}
    assert "sandbox" in r.headers["content-security-policy"]


def test_every_response_has_nosniff_and_a_csp(server, client):
    responses = [client.get("/"), client.get("/system_stats"), client.get("/view", params={"filename": "absent.png"}),
                 client.post("/prompt", content=b"{"), client.get("/nowhere"),
                 client.get("/system_stats", headers={"Host": EVIL})]
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        csp = r.headers["content-security-policy"]
        assert ("frame-ancestors 'none'" in csp and "object-src 'none'" in csp) or "default-src 'none'" in csp, r.url
        assert "*" not in csp and "http:" not in csp


# ------------------------------------------------------------------ 7, 8, 11
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "NaN", "-1e400"])
def test_float_inputs_json_cannot_hold_get_400_and_the_connection_lives(client, value):
    g = {"1": {"class_type": "Counted", "inputs": {"a": 1, "b": value, "c": "x"}}}
    r = client.post("/prompt", json={"prompt": g})
    assert r.status_code == 400
    error = r.json()["node_errors"]["1"]["errors"][0]
    assert error["type"] == "invalid_input_type" and error["extra_info"]["received_value"] == value
    assert client.get("/prompt").status_code == 200  # the same keep-alive connection


def test_raw_json_numbers_out_of_range_are_refused(client):
    body = b'{"prompt": {"1": {"class_type": "Counted", "inputs": {"a": 1, "b": 1e999, "c": "x"}}}}'
    r = client.post("/prompt", content=body)
    assert r.status_code == 400 and r.json()["error"]["type"] in ("invalid_prompt", "prompt_outputs_failed_validation")
    assert client.get("/prompt").status_code == 200


def test_uploads_that_clash_with_the_folder_tree_get_409(server, client):
    (server.base / "input" / "afile").write_bytes(b"x")
    (server.base / "input" / "adir.png").mkdir()
    for fields, name in (({"subfolder": "afile"}, "g.png"), ({"subfolder": "afile/deeper"}, "g.png"),
                         ({}, "adir.png"), ({"overwrite": "true"}, "adir.png")):
        r = client.post("/upload/image", files={"image": (name, grey_png(), "image/png")}, data=fields)
        assert r.status_code == 409, (fields, name, r.text)
        assert "is a file" in r.json()["error"]["message"] or "is a folder" in r.json()["error"]["message"]
    assert (server.base / "input" / "afile").read_bytes() == b"x" and (server.base / "input" / "adir.png").is_dir()
    assert not [p for p in (server.base / "input").iterdir() if p.name.startswith(".part")]
    assert client.get("/prompt").status_code == 200


def test_the_upload_cap_applies_to_the_upload_routes_only(client):
    body = b"x" * 170_000  # over the body cap (150 kB), under the upload cap (200 kB)
    for path in ("/userdata/workflows%2Fupload%2Fimage", "/userdata/upload/image", "/prompt/upload/image",
                 "/api/userdata/upload/image"):
        assert client.post(path, content=body).status_code == 413, path
    for path in ("/upload/image", "/api/upload/image"):
        r = client.post(path, files={"image": ("big.png", body, "image/png")})
        assert r.status_code == 400 and "big.png" in r.json()["error"]["message"], path  # past the cap: not an image


# ------------------------------------------------------------------ 5. multi-frame bombs
def gif(frames: int, size: int) -> bytes:
    buf = io.BytesIO()
    seq = [Image.new("L", (size, size), 40 * i % 255) for i in range(frames)]
    seq[0].save(buf, format="GIF", save_all=True, append_images=seq[1:])
    return buf.getvalue()


def test_all_frames_together_are_bounded_by_the_pixel_limit(server, client):
    bomb = gif(64, 256)  # each frame 65 kP, far under the 1 MP limit; all 64 together 4.2 MP
    assert len(bomb) < 60_000
    r = client.post("/upload/image", files={"image": ("bomb.gif", bomb, "image/gif")})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "bomb.gif" in message and "64 frames of 256x256" in message and "over the limit of 1 MP" in message
    assert str(server.base) not in message
    assert not [p for p in (server.base / "input").iterdir() if p.name.startswith(("bomb", ".part"))]
    # A file placed in input/ by other means is refused by LoadImage before it is decoded.
    (server.base / "input" / "placed.gif").write_bytes(bomb)
    g = {"1": {"class_type": "LoadImage", "inputs": {"image": "placed.gif"}},
         "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    _, msgs, entry = run_prompt(server, client, g)
    error = next(m["data"] for m in msgs if m["type"] == "execution_error")
    assert error["node_type"] == "LoadImage" and "64 frames" in error["exception_message"]
    # Within the limit together, a multi-frame file still loads as a batch.
    r = client.post("/upload/image", files={"image": ("ok.gif", gif(12, 256), "image/gif")})
    assert r.status_code == 200, r.text
    _, _, entry = run_prompt(server, client, {**g, "1": {"class_type": "LoadImage", "inputs": {"image": r.json()["name"]}}})
    assert entry["status"]["status_str"] == "success" and len(entry["outputs"]["2"]["images"]) == 12


# ------------------------------------------------------------------ 15
@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="Linux's /proc/meminfo is the figure compared with")
def test_system_stats_reports_real_free_memory(client):
    meminfo = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        meminfo[key] = int(rest.split()[0]) * 1024
    stats = client.get("/system_stats").json()["system"]
    assert stats["ram_total"] == meminfo["MemTotal"]
    assert 0 < stats["ram_free"] < stats["ram_total"]
    assert abs(stats["ram_free"] - meminfo["MemAvailable"]) < 0.2 * meminfo["MemTotal"]  # the system's figure, moving


# ------------------------------------------------------------------ 9: uploads off the event loop
@pytest.mark.slow
def test_other_requests_are_served_while_an_upload_is_checked(tmp_path, monkeypatch):
    import threading

    from ccc_nodes.interfaces.server import imagefiles

    # The image check is held (as a large image's decode would hold it) until the test has
    # seen another request served, so the order is the server's doing, not the machine's load.
    checking, release = threading.Event(), threading.Event()
    real_check = imagefiles.check_frames

    def held_check(*args, **kwargs):
        checking.set()
        release.wait(60)
        return real_check(*args, **kwargs)

    monkeypatch.setattr(imagefiles, "check_frames", held_check)
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 120, 150)).save(buf, "PNG")
    with ServerThread(ServerConfig(base_dir=tmp_path)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        request = c.build_request("POST", "/upload/image", files={"image": ("big.png", buf.getvalue(), "image/png")})
        head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
        with socket.create_connection((srv.host, srv.port), timeout=60) as s:
            s.sendall(f"POST /upload/image HTTP/1.1\r\n{head}\r\n".encode() + request.read())
            assert checking.wait(60), "the upload's image check never started"
            try:
                assert c.get("/prompt").status_code == 200  # served meanwhile, not after the upload
                s.setblocking(False)
                try:
                    early = s.recv(1 << 16)
                except BlockingIOError:
                    early = b""
                assert early == b"", "the upload was answered before its check finished"
            finally:
                release.set()
            s.setblocking(True)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += s.recv(1 << 16)
        assert answer.startswith(b"HTTP/1.1 200")
        assert (tmp_path / "input" / "big.png").is_file()


# ------------------------------------------------------------------ 10: interrupt per image
class Stop(Exception):
    pass


@pytest.mark.parametrize("node", ["CCCColorize", "CCCClassesToLab"])
def test_colorize_asks_for_an_interrupt_before_each_image_it_decodes(small_model, node):
    import torch

    from ccc_nodes.interfaces import nodes
    from ccc_nodes.job.colorizer import Colorizer

    colorizer = Colorizer(small_model, device="cpu", size=64)
    images = torch.rand(4, 40, 56, 3)
    calls = []

    def hook(done, total):  # the host's hook: the server's raises on /interrupt
        calls.append((done, total))
        if stop_at is not None and len(calls) == stop_at:
            raise Stop()

    stop_at = None
    token = nodes.progress_hook.set(hook)
    try:
        if node == "CCCColorize":
            run_node = lambda: nodes.CCCColorize().colorize(colorizer, images, size=64)  # noqa: E731
        else:
            classes = nodes.CCCGrayscaleToClasses().predict(colorizer, images, size=64)[0]
            calls.clear()
            run_node = lambda: nodes.CCCClassesToLab().decode(classes)  # noqa: E731
        run_node()
        asked = len(calls)
        assert asked >= (8 if node == "CCCColorize" else 4)  # predicting and decoding each of the 4 images
        stop_at = asked - 1  # an interrupt before the last image is decoded stops the node
        calls.clear()
        with pytest.raises(Stop):
            run_node()
    finally:
        nodes.progress_hook.reset(token)
