"""Generated bodies against the server's JSON and file routes (``/prompt``,
``/upload/image``, ``/view``, ``/userdata``) on a real loopback server: never a 500, never
a dropped connection, and the server keeps serving. Bounded in examples (a few hundred in
all) and run derandomized, so CI sees the same bodies each time."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from helpers import Counted, Echo, grey_png, need

httpx = need("httpx")
need("fastapi")
hypothesis = need("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ccc_nodes.interfaces.server import ServerConfig, ServerThread  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=20) | st.sampled_from(["nan", "inf", "-inf", "1e999", "", "..", "/etc/passwd", "[", "0"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                                 inner, max_size=4),
                           max_leaves=12)
CLASSES = ["Counted", "Echo", "LoadImage", "PreviewImage", "SaveImage", "CCCColorize", "CCCModelLoader", "Nope", ""]
inputs = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "text", "image", "images", "size", "x"]),
                         json_values | st.tuples(st.sampled_from(["1", "2", "9"]), st.integers(-2, 3)).map(list),
                         max_size=5)
numbers_as_text = st.floats().map(str) | st.integers(-10**400, 10**400).map(lambda n: f"{n}e{n % 1000}")
widget_values = numbers_as_text | scalars
widgets = st.fixed_dictionaries({"class_type": st.just("Counted"), "inputs": st.fixed_dictionaries(
    {"a": widget_values, "b": widget_values, "c": widget_values}, optional={"d": widget_values})})  # each type
nodes = widgets | st.fixed_dictionaries({"class_type": st.sampled_from(CLASSES) | json_values,
                                         "inputs": inputs | json_values})
prompts = st.dictionaries(st.sampled_from(["1", "2", "3"]) | st.text(max_size=5), nodes | json_values, max_size=4)
bodies = st.fixed_dictionaries({"prompt": prompts}, optional={
    "client_id": json_values, "number": json_values, "front": json_values, "prompt_id": json_values,
    "extra_data": json_values, "partial_execution_targets": json_values})
names = st.text(st.characters(codec="utf-8"), min_size=0, max_size=30) | st.sampled_from(
    ["grey.png", "afile", "afile/x.png", "adir.png", "../grey.png", "a/b.png", ".hidden.png", "x.txt", "CON.png", "a\\b.png", "%2e%2e/x.png", "x.png\x00"])


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    config = ServerConfig(base_dir=base, models_dir=base / "models", max_upload_bytes=100_000,
                          max_body_bytes=100_000, max_image_pixels=100_000, max_queue=16,
                          extra_nodes={"Echo": Echo, "Counted": Counted})
    (base / "input").mkdir()
    (base / "input" / "afile").write_bytes(b"a file where a folder may be asked for")
    (base / "input" / "adir.png").mkdir()  # a folder where a file may be asked for
    with ServerThread(config) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.post("/upload/image", files={"image": ("grey.png", grey_png(), "image/png")}).status_code == 200
        yield c
        assert c.get("/prompt").status_code == 200  # still serving, on the same connection
        c.post("/queue", json={"clear": True})


def answered(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:300])
    if r.headers.get("content-type", "").startswith("application/json"):
        json.loads(r.content)  # always encodable, always complete


@pytest.mark.slow
@FUZZ
@given(body=bodies | json_values)
def test_prompt_bodies(client, body):
    answered(client.post("/prompt", json=body))


@pytest.mark.slow
@FUZZ
@given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_prompt_raw_bytes(client, raw):
    answered(client.post("/prompt", content=raw))


@FUZZ
@given(name=names, data=st.binary(max_size=300) | st.just(grey_png(8, 8)),
       fields=st.dictionaries(st.sampled_from(["type", "subfolder", "overwrite"]),
                              names | st.sampled_from(["input", "output", "temp", "true"]), max_size=3))
def test_uploads(client, name, data, fields):
    answered(client.post("/upload/image", files={"image": (name or "x", data, "image/png")}, data=fields))


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["filename", "type", "subfolder", "preview", "channel"]),
                              names | st.sampled_from(["webp;50", "jpeg;0", "a", "rgb", "output", "input"]),
                              max_size=5))
def test_view(client, params):
    answered(client.get("/view", params=params))


@pytest.mark.slow
@FUZZ
@given(path=names, method=st.sampled_from(["GET", "POST", "DELETE"]), body=st.binary(max_size=100),
       query=st.dictionaries(st.sampled_from(["overwrite", "full_info", "dir", "recurse", "split"]),
                             st.sampled_from(["true", "false", "", "workflows", ".."]) | names, max_size=3),
       encode=st.booleans())
def test_userdata(client, path, method, body, query, encode):
    where = urllib.parse.quote(path, safe="" if encode else "/")
    answered(client.request(method, f"/userdata/{where}", params=query, content=body if method == "POST" else None))
    answered(client.get("/userdata", params=query))
    answered(client.get("/v2/userdata", params={"path": path}))
