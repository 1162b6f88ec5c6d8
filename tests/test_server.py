"""The ComfyUI-compatible server, over real loopback HTTP and websockets: workflows run
end to end, messages and history have ComfyUI's shapes, unchanged nodes are cached,
invalid graphs get ComfyUI's 400 answers, files never leave their folders, uploads are
capped, a failing node fails only its prompt, and 20 concurrent clients lose nothing."""

import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import Counted, Echo, graph, grey_png, need, run_prompt, upload
from PIL import Image

httpx = need("httpx")
need("fastapi")
need("uvicorn")
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from ccc_nodes.core.settings import DECODE_MODES  # noqa: E402
from ccc_nodes.interfaces.server import ServerConfig, ServerThread  # noqa: E402


class Gate:
    """A test node that waits until the test opens its gate (to hold the executor busy),
    reporting progress so that /interrupt can stop it."""

    event = threading.Event()

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"tag": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "wait"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def wait(self, tag):
        from ccc_nodes.interfaces.nodes import progress_hook

        for i in range(600):
            if Gate.event.wait(0.05):
                return {"ui": {"text": [tag]}}
            progress_hook.get()(i, 600)
        raise TimeoutError("gate never opened")


class Odd(Echo):
    """A test output node whose ui holds values JSON cannot: NaN, infinity, a numpy scalar, an object."""

    def echo(self, text):
        import numpy as np

        return {"ui": {"values": [float("nan"), float("-inf"), 1.5], "scalar": [np.float32(2.5)], "thing": [Ellipsis]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_model):
    base = tmp_path_factory.mktemp("server")
    small_model.save_pretrained(base / "models" / "ccc" / "small")
    config = ServerConfig(base_dir=base / "work", models_dir=base / "models", max_upload_bytes=200_000,
                          max_image_pixels=1_000_000, max_nodes=50,
                          extra_nodes={"Gate": Gate, "Echo": Echo, "Odd": Odd, "Counted": Counted})
    with ServerThread(config) as srv:
        srv.base = base / "work"
        srv.models = base / "models"
        yield srv


@pytest.fixture(scope="module")
def uploaded(client):
    r = upload(client, grey_png(), "grey.png", overwrite="true")
    assert r.status_code == 200
    return r.json()["name"]


def test_a_workflow_colorizes_through_prompt_ws_history_and_view(server, client, uploaded):
    pid, msgs, entry = run_prompt(server, client, graph(uploaded, prefix="first"))
    kinds = [m["type"] for m in msgs]
    assert kinds[:2] == ["execution_start", "execution_cached"] and kinds[-2:] == ["execution_success", "executing"]
    assert [m["data"]["node"] for m in msgs if m["type"] == "executing"] == ["2", "1", "3", "4", None]
    assert any(m["type"] == "progress" and m["data"]["node"] == "3" and m["data"]["max"] == 1 for m in msgs)
    executed = [m["data"] for m in msgs if m["type"] == "executed"]
    assert len(executed) == 1 and executed[0]["node"] == "4"
    image = executed[0]["output"]["images"][0]
    assert image == {"filename": "first_00001_.png", "subfolder": "", "type": "output"}
    # History: ComfyUI's entry shape.
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["outputs"] == {"4": {"images": [image]}}
    assert entry["prompt"][1] == pid and entry["prompt"][4] == ["4"]
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    # The output: a colour PNG at the input's size, with the graph in its metadata; /api/view too.
    for prefix in ("", "/api"):
        r = client.get(f"{prefix}/view", params=image)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (64, 48) and out.mode == "RGB"
    assert json.loads(out.info["prompt"])["3"]["class_type"] == "CCCColorize"
    assert (server.base / "output" / "first_00001_.png").is_file()
    preview = client.get("/view", params={**image, "preview": "webp;50"})
    assert preview.headers["content-type"] == "image/webp"


def test_unchanged_nodes_are_served_from_cache(server, client, uploaded):
    run_prompt(server, client, graph(uploaded, prefix="cached"))
    _, msgs, entry = run_prompt(server, client, graph(uploaded, prefix="cached"))
    cached = next(m for m in msgs if m["type"] == "execution_cached")["data"]["nodes"]
    assert sorted(cached) == ["1", "2", "3", "4"]
    assert not [m for m in msgs if m["type"] == "executing" and m["data"]["node"] is not None]
    assert entry["outputs"]["4"]["images"][0]["filename"] == "cached_00001_.png"  # reported, not re-saved
    # Change one widget: only that node and those after it run again.
    _, msgs, _ = run_prompt(server, client, graph(uploaded, prefix="cached2"))
    assert [m["data"]["node"] for m in msgs if m["type"] == "executing"] == ["4", None]


def test_free_with_unload_models_drops_the_loaded_networks(server, client, uploaded):
    from ccc_nodes.core.cache import MODELS

    run_prompt(server, client, graph(uploaded, prefix="before-free"))
    assert any(k[0] == "ccc" for k in MODELS)
    assert client.post("/free", json={"free_memory": True}).status_code == 200
    assert any(k[0] == "ccc" for k in MODELS)  # free_memory drops cached outputs only
    assert client.post("/api/free", json={"unload_models": True}).status_code == 200
    assert not any(k[0] == "ccc" for k in MODELS)
    _, _, entry = run_prompt(server, client, graph(uploaded, prefix="after-free"))  # loaded again when needed
    assert entry["outputs"]["4"]["images"][0]["filename"].startswith("after-free")


def test_batches_flow_through_every_node(server, client):
    r = upload(client, grey_png(frames=3, fmt="TIFF"), "three.tif", overwrite="true")
    assert r.status_code == 200
    g = {
        "1": {"class_type": "LoadImage", "inputs": {"image": r.json()["name"]}},
        "2": {"class_type": "CCCModelLoader", "inputs": {"model": "small", "device": "cpu", "precision": "fp32"}},
        "3": {"class_type": "CCCGrayscaleToClasses", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "size": 64}},
        "4": {"class_type": "CCCSAMHarmonize", "inputs": {"classes": ["3", 0], "mask": ["1", 1], "min_area": 0.0,
                                                          "dominance": 0.3, "max_dev": 12.0, "sigma": 1.0}},
        "5": {"class_type": "CCCClassesToLab", "inputs": {"classes": ["4", 0], "decode": "annealed-mean", "temperature": 0.38}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "batch/out"}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["5", 1]}},
        "8": {"class_type": "CCCMetrics", "inputs": {"image": ["5", 0], "reference": ["1", 0], "ccc_model": ["2", 0]}},
    }
    _, _msgs, entry = run_prompt(server, client, g)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["6"]["images"]
    assert [i["subfolder"] for i in saved] == ["batch"] * 3 and len({i["filename"] for i in saved}) == 3
    assert [i["type"] for i in entry["outputs"]["7"]["images"]] == ["temp"] * 3
    table = entry["outputs"]["8"]["text"][0]
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("| ")]
    assert rows == ["image 1", "image 2", "image 3"]  # no "all": the references are the grey inputs
    assert "References 1, 2, 3 are grey" in table
    sizes = {Image.open(io.BytesIO(client.get("/view", params=i).content)).size for i in saved}
    assert sizes == {(64, 48)}


def _bad(case: str, image: str) -> dict:
    g = graph(image)
    if case == "prompt_no_outputs":
        return {"1": g["1"]}
    if case == "required_input_missing":
        del g["3"]["inputs"]["decode"]
    elif case == "return_type_mismatch":
        g["3"]["inputs"]["image"] = ["2", 0]
    elif case == "invalid_input_type":
        g["3"]["inputs"]["size"] = "large"
    elif case == "value_smaller_than_min":  # (not size: its VALIDATE_INPUTS checks it, as ComfyUI then lets it)
        g["3"]["inputs"]["temperature"] = 0.0
    elif case == "value_bigger_than_max":
        g["3"]["inputs"]["temperature"] = 100
    elif case == "value_not_in_list":
        g["3"]["inputs"]["decode"] = "median"
    elif case == "bad_linked_input":
        g["3"]["inputs"]["image"] = ["1", 0, 1]
    elif case == "custom_validation_failed":
        g["1"]["inputs"]["image"] = "absent.png"
    return g


@pytest.mark.parametrize("case, node, details", [
    ("required_input_missing", "3", "decode"),
    ("return_type_mismatch", "3", "image, received_type(CCC_MODEL) mismatch input_type(IMAGE)"),
    ("invalid_input_type", "3", "size, large, invalid literal for int() with base 10: 'large'"),
    ("value_smaller_than_min", "3", "temperature"),
    ("value_bigger_than_max", "3", "temperature"),
    ("value_not_in_list", "3", f"decode: 'median' not in {list(DECODE_MODES)}"),
    ("bad_linked_input", "3", "image"),
    ("custom_validation_failed", "1", "image - Invalid image file: absent.png"),
])
def test_invalid_graphs_get_comfyuis_400(client, uploaded, case, node, details):
    r = client.post("/api/prompt", json={"prompt": _bad(case, uploaded)})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert list(body["node_errors"]) == [node]
    err = body["node_errors"][node]
    assert err["class_type"] == _bad(case, uploaded)[node]["class_type"] and err["dependent_outputs"] == ["4"]
    assert [e["type"] for e in err["errors"]] == [case]
    assert err["errors"][0]["details"].startswith(details)


def test_invalid_prompts_without_node_errors(client, uploaded):
    def post(body):
        r = client.post("/prompt", content=body if isinstance(body, bytes) else json.dumps(body))
        assert r.status_code == 400
        return r.json()["error"]["type"]

    assert post({"prompt": _bad("prompt_no_outputs", uploaded)}) == "prompt_no_outputs"
    assert post({"prompt": {**graph(uploaded), "9": {"class_type": "Nope", "inputs": {}}}}) == "invalid_prompt"
    assert post({"prompt": {"1": {"inputs": {}}}}) == "invalid_prompt"
    assert post({"no": "prompt"}) == "no_prompt"
    assert post(b"{not json") == "invalid_prompt"
    big = {str(i): {"class_type": "PreviewImage", "inputs": {"images": ["0", 0]}} for i in range(60)}
    assert post({"prompt": big}) == "prompt_too_large"
    cyclic = graph(uploaded)
    cyclic["3"]["inputs"]["image"] = ["5", 0]
    cyclic["5"] = {"class_type": "CCCColorize", "inputs": {**cyclic["3"]["inputs"], "image": ["3", 0]}}
    assert post({"prompt": cyclic}) == "prompt_outputs_failed_validation"


def test_a_cycle_is_reported_on_the_nodes_of_the_cycle(client, uploaded):
    cyclic = graph(uploaded)
    cyclic["3"]["inputs"]["image"] = ["5", 0]
    cyclic["5"] = {"class_type": "CCCColorize", "inputs": {**cyclic["3"]["inputs"], "image": ["3", 0]}}
    r = client.post("/prompt", json={"prompt": cyclic})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert sorted(body["node_errors"]) == ["3", "5"]  # not the output node 4, which only reads the cycle
    for node in ("3", "5"):
        err = body["node_errors"][node]
        assert err["class_type"] == "CCCColorize" and err["dependent_outputs"] == ["4"]
        [e] = err["errors"]
        assert set(e) == {"type", "message", "details", "extra_info"}
        assert e["type"] == "dependency_cycle" and e["details"] == "3 -> 5 -> 3"
        assert e["extra_info"]["cycle"] == ["3", "5"]


ECHO = {"1": {"class_type": "Echo", "inputs": {"text": "hi"}}}
P = json.dumps(ECHO)
DEEP = "[" * 200 + "]" * 200


@pytest.mark.parametrize("body", [
    # number: a finite number (or numeric string, as ComfyUI's float(number)) or nothing
    f'{{"prompt": {P}, "number": NaN}}',
    f'{{"prompt": {P}, "number": Infinity}}',
    f'{{"prompt": {P}, "number": -Infinity}}',
    f'{{"prompt": {P}, "number": 1e400}}',
    f'{{"prompt": {P}, "number": {"9" * 400}}}',
    f'{{"prompt": {P}, "number": {"9" * 5000}}}',
    f'{{"prompt": {P}, "number": "abc"}}',
    f'{{"prompt": {P}, "number": "nan"}}',
    f'{{"prompt": {P}, "number": "1e400"}}',
    f'{{"prompt": {P}, "number": true}}',
    f'{{"prompt": {P}, "number": [1]}}',
    f'{{"prompt": {P}, "number": {{}}}}',
    f'{{"prompt": {P}, "front": NaN}}',
    # prompt_id and client_id: strings
    f'{{"prompt": {P}, "prompt_id": {{"a": 1}}}}',
    f'{{"prompt": {P}, "prompt_id": ["x"]}}',
    f'{{"prompt": {P}, "prompt_id": 5}}',
    f'{{"prompt": {P}, "prompt_id": "{"x" * 129}"}}',
    f'{{"prompt": {P}, "client_id": {{"a": 1}}}}',
    f'{{"prompt": {P}, "client_id": ["x"]}}',
    f'{{"prompt": {P}, "client_id": 5}}',
    # extra_data: an object of JSON values
    f'{{"prompt": {P}, "extra_data": "abc"}}',
    f'{{"prompt": {P}, "extra_data": 5}}',
    f'{{"prompt": {P}, "extra_data": ["x"]}}',
    f'{{"prompt": {P}, "extra_data": {{"client_id": {{"a": 1}}}}}}',
    f'{{"prompt": {P}, "extra_data": {{"x": NaN}}}}',
    f'{{"prompt": {P}, "extra_data": {{"x": {DEEP}}}}}',
    f'{{"prompt": {P}, "extra_data": {{"x": {"[" * 5000 + "]" * 5000}}}}}',
    # partial_execution_targets: a list of node ids
    f'{{"prompt": {P}, "partial_execution_targets": 5}}',
    f'{{"prompt": {P}, "partial_execution_targets": "1"}}',
    f'{{"prompt": {P}, "partial_execution_targets": [{{"a": 1}}]}}',
    # the prompt, its nodes, class types and inputs
    '{"prompt": [1]}',
    '{"prompt": "x"}',
    '{"prompt": null}',
    '{"prompt": {"1": 5}}',
    '{"prompt": {"1": []}}',
    '{"prompt": {"1": {"class_type": ["Echo"], "inputs": {}}}}',
    '{"prompt": {"1": {"class_type": {"a": 1}, "inputs": {}}}}',
    '{"prompt": {"1": {"class_type": 5, "inputs": {}}}}',
    '{"prompt": {"1": {"class_type": "Echo", "inputs": [1]}}}',
    '{"prompt": {"1": {"class_type": "Echo", "inputs": 5}}}',
    '{"prompt": {"1": {"class_type": "Echo", "inputs": {"text": "hi", "undeclared": NaN}}}}',
    '{"prompt": {"1": {"class_type": "Echo", "inputs": {"text": "hi"}, "_meta": {"title": Infinity}}}}',
    '{"prompt": {"1": {"class_type": "Counted", "inputs": {"a": 1e400, "b": 0, "c": ""}}}}',
    '{"prompt": {"1": {"class_type": "Counted", "inputs": {"a": "1e400", "b": 0, "c": ""}}}}',
    '{"prompt": {"1": {"class_type": "Echo", "inputs": {"text": ["1", 0, 0]}}}}',
    # the body itself
    "NaN", "[1]", '"x"', "null", "{not json", "\udcff{}",  # the last: a byte that is not UTF-8
])
def test_bad_prompt_bodies_get_400_and_leave_nothing_behind(client, body):
    before = set(client.get("/history").json())
    r = client.post("/prompt", content=body.encode("utf-8", "surrogateescape"))
    assert r.status_code == 400, r.text[:300]
    answer = r.json()
    assert set(answer) == {"error", "node_errors"} and isinstance(answer["node_errors"], dict)
    error = answer["error"]
    assert set(error) == {"type", "message", "details", "extra_info"} and isinstance(error["type"], str)
    # Nothing was queued (a queued prompt is waiting, running or in the history), and the
    # queue and history can still be sent.
    assert client.get("/prompt").json()["exec_info"]["queue_remaining"] == 0
    history = client.get("/history")
    assert history.status_code == 200 and set(history.json()) == before
    assert client.get("/queue").status_code == 200


def _finished(client, pid, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = client.get(f"/history/{pid}").json()
        if entry:
            return entry[pid]
        time.sleep(0.05)
    raise AssertionError(f"{pid} did not finish")


def test_prompt_fields_comfyui_accepts(client):
    cases = [({"number": "5"}, 5.0), ({"number": 3}, 3.0), ({"number": -2.5}, -2.5), ({"number": 10**30}, 1e30)]
    for fields, number in cases:
        r = client.post("/prompt", json={"prompt": ECHO, **fields})
        assert r.status_code == 200, r.text
        assert r.json()["number"] == number
        _finished(client, r.json()["prompt_id"])
    r = client.post("/prompt", json={"prompt": ECHO, "prompt_id": "mine-1", "client_id": None, "extra_data": None,
                                     "partial_execution_targets": [1], "front": {"any": "truthy value"}})
    assert r.status_code == 200 and r.json()["prompt_id"] == "mine-1"
    assert _finished(client, "mine-1")["outputs"] == {"1": {"text": ["hi"]}}
    r = client.post("/prompt", json={"prompt": ECHO, "partial_execution_targets": ["2"]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "prompt_no_outputs"
    assert client.get("/history").status_code == 200


def test_history_holds_only_json(client):
    r = client.post("/prompt", json={"prompt": {"1": {"class_type": "Odd", "inputs": {"text": ""}}}})
    assert r.status_code == 200
    pid = r.json()["prompt_id"]
    entry = _finished(client, pid)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["1"] == {"values": [None, None, 1.5], "scalar": [2.5], "thing": ["Ellipsis"]}
    assert client.get("/history").status_code == 200


def test_validation_asks_each_node_class_for_its_inputs_once(client):
    Counted.calls = 0
    g = {str(i): {"class_type": "Counted", "inputs": {"a": -1, "b": 0.5, "c": "x", "d": True}} for i in (1, 2)}
    r = client.post("/prompt", json={"prompt": g})
    assert r.status_code == 400 and sorted(r.json()["node_errors"]) == ["1", "2"]
    assert Counted.calls == 1


def test_models_come_from_the_servers_folder_not_the_environment(server, client, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "ccc" / "envonly").mkdir(parents=True)
    (elsewhere / "ccc" / "envonly" / "config.json").write_text("{}")
    monkeypatch.setenv("CCC_MODELS_DIR", str(elsewhere))
    (server.models / "sams").mkdir(exist_ok=True)
    (server.models / "sams" / "mine.pth").write_bytes(b"not read here")

    def listed(c):
        info = c.get("/object_info").json()
        return (info["CCCModelLoader"]["input"]["required"]["model"][0], c.get("/models/ccc").json(),
                info["CCCSAMLoader"]["input"]["optional"]["checkpoint"][0], c.get("/models/sams").json())

    assert listed(client) == (["default", "small"], ["small"], ["mine.pth"], ["mine.pth"])
    folders = {e["name"]: e["folders"] for e in client.get("/experiment/models").json()}
    assert folders == {"ccc": [str(server.models.resolve() / "ccc")], "sams": [str(server.models.resolve() / "sams")]}
    # A second server with its own folder: each sees its own, the environment is untouched.
    other = tmp_path / "other_models"
    (other / "ccc" / "theirs").mkdir(parents=True)
    (other / "ccc" / "theirs" / "config.json").write_text("{}")
    with ServerThread(ServerConfig(base_dir=tmp_path / "work", models_dir=other)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        assert listed(c) == (["default", "theirs"], ["theirs"], [], [])
        assert listed(client)[1] == ["small"]
    assert os.environ["CCC_MODELS_DIR"] == str(elsewhere)
    # Without models_dir the server follows the environment, as the nodes do elsewhere.
    with ServerThread(ServerConfig(base_dir=tmp_path / "work")) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert listed(c)[:2] == (["default", "envonly"], ["envonly"])


@pytest.mark.parametrize("preview", ["webp;\u00b2", "webp;1000", "webp;0", "jpeg;" + "9" * 5000, "png;50"])
def test_view_previews_take_any_quality(client, preview):
    upload(client, grey_png(), "quality.png", overwrite="true")
    r = client.get("/view", params={"filename": "quality.png", "type": "input", "preview": preview})
    assert r.status_code == 200 and r.headers["content-type"] in ("image/webp", "image/jpeg")


def test_settings_and_userdata_refuse_bad_bodies(client):
    for url in ("/api/settings", "/api/settings/Some.Setting"):
        for body in (b"{not json", b"NaN", b'{"a": Infinity}', b"[" * 5000):
            r = client.post(url, content=body)
            assert r.status_code == 400, (url, body[:20], r.status_code)
    assert client.get("/api/settings").status_code == 200
    assert client.post("/api/userdata/workflows", content=b"{}").status_code == 409  # a folder of that name
    assert client.post("/api/userdata/workflows%2Fa.json", content=b"{}").status_code == 200
    assert client.post("/api/userdata/workflows%2Fa.json%2Fb.json", content=b"{}").status_code == 409
    r = client.post("/api/userdata/workflows%2Fa.json/move/workflows")
    assert r.status_code == 409
    assert client.delete("/api/userdata/workflows%2Fa.json").status_code == 204


def test_a_failing_node_fails_its_prompt_and_the_server_goes_on(server, client, uploaded):
    g = graph(uploaded, prefix="fails")
    g["2"]["inputs"]["repo_or_path"] = str(server.base / "no-such-model")
    _, msgs, entry = run_prompt(server, client, g)
    error = next(m["data"] for m in msgs if m["type"] == "execution_error")
    assert error["node_id"] == "2" and error["node_type"] == "CCCModelLoader"
    assert "does not exist" in error["exception_message"] and error["exception_type"].endswith("ModelLoadError")
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    assert not list((server.base / "output").glob("fails*"))
    _, _, entry = run_prompt(server, client, graph(uploaded, prefix="after_failure"))
    assert entry["status"]["status_str"] == "success"


@pytest.mark.parametrize("params, status", [
    ({"filename": "../secret.png"}, 400),
    ({"filename": "/etc/passwd"}, 400),
    ({"filename": "secret.png", "subfolder": ".."}, 400),
    ({"filename": "secret.png", "subfolder": "../output"}, 400),
    ({"filename": "..\\secret.png"}, 400),
    ({"filename": "grey.png", "type": "nowhere"}, 400),
    ({"filename": "link.png"}, 403),
    ({"filename": "notes.txt"}, 403),
    ({"filename": "absent.png"}, 404),
])
def test_view_never_leaves_its_folders(server, client, uploaded, params, status):
    (server.base / "secret.png").write_bytes(grey_png())
    link = server.base / "output" / "link.png"
    if not link.is_symlink():
        link.symlink_to(server.base / "secret.png")
    (server.base / "output" / "notes.txt").write_text("not an image")
    r = client.get("/view", params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")


def test_uploads_are_checked_capped_and_never_half_written(server, client):
    before = sorted(p.name for p in (server.base / "input").iterdir())
    assert upload(client, grey_png(), "x.png", subfolder="../escape").status_code == 400
    assert upload(client, grey_png(), ".hidden.png").status_code == 400
    assert upload(client, b"plain text", "note.txt").status_code == 400
    r = upload(client, b"plain text pretending", "fake.png")
    assert r.status_code == 400 and "not an image" in r.json()["error"]["message"]
    r = upload(client, os.urandom(300_000), "huge.png")  # over max_upload_bytes
    assert r.status_code == 413
    flat = io.BytesIO()
    Image.new("L", (1200, 1000), 128).save(flat, format="PNG")  # 1.2 MP, over max_image_pixels, a small file
    r = upload(client, flat.getvalue(), "many_pixels.png")
    assert r.status_code == 400 and "over the limit" in r.json()["error"]["message"]
    assert sorted(p.name for p in (server.base / "input").iterdir()) == before  # nothing written, no .part files
    # A name taken by another image gets a new name; the same image keeps its name.
    first = upload(client, grey_png(), "dup.png").json()
    again = upload(client, grey_png(), "dup.png").json()
    other = upload(client, grey_png(40, 40), "dup.png").json()
    assert first["name"] == again["name"] == "dup.png" and other["name"] == "dup (1).png"
    sub = upload(client, grey_png(), "in_sub.png", subfolder="mine").json()
    assert sub == {"name": "in_sub.png", "subfolder": "mine", "type": "input"}
    assert "mine/in_sub.png" in client.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]


def test_twenty_concurrent_clients_lose_nothing(server, client, uploaded):
    def one(i):
        return run_prompt(server, client, graph(uploaded, prefix=f"client{i:02d}"), timeout=300)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    pids = {pid for pid, _, _ in results}
    assert len(pids) == 20
    for i, (pid, msgs, entry) in enumerate(results):
        assert entry["status"]["status_str"] == "success"
        assert entry["outputs"]["4"]["images"][0]["filename"] == f"client{i:02d}_00001_.png"
        assert msgs[-1] == {"type": "executing", "data": {"node": None, "prompt_id": pid}}
    history = client.get("/history").json()
    assert pids <= set(history)
    files = sorted(p.name for p in (server.base / "output").glob("client*_.png"))
    assert files == [f"client{i:02d}_00001_.png" for i in range(20)]
    for f in files:
        assert Image.open(server.base / "output" / f).size == (64, 48)
    assert client.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_queue_listing_delete_clear_interrupt_and_cap(server, client):
    Gate.event.clear()
    gate = lambda tag: {"1": {"class_type": "Gate", "inputs": {"tag": tag}}}  # noqa: E731
    running = client.post("/prompt", json={"prompt": gate("running")}).json()["prompt_id"]
    deadline = time.time() + 30
    while not client.get("/queue").json()["queue_running"] and time.time() < deadline:
        time.sleep(0.05)
    waiting = [client.post("/prompt", json={"prompt": gate(f"w{i}")}).json() for i in range(3)]
    front = client.post("/prompt", json={"prompt": gate("front"), "front": True}).json()
    q = client.get("/api/queue").json()
    assert [e[1] for e in q["queue_running"]] == [running]
    assert [e[1] for e in q["queue_pending"]] == [front["prompt_id"]] + [w["prompt_id"] for w in waiting]
    assert client.get("/prompt").json() == {"exec_info": {"queue_remaining": 5}}
    client.post("/queue", json={"delete": [waiting[0]["prompt_id"]]})
    assert len(client.get("/queue").json()["queue_pending"]) == 3
    client.post("/queue", json={"clear": True})
    assert client.get("/queue").json()["queue_pending"] == []
    client.post("/interrupt", json={"prompt_id": running})
    deadline = time.time() + 30
    while not client.get(f"/history/{running}").json() and time.time() < deadline:
        time.sleep(0.05)
    status = client.get(f"/history/{running}").json()[running]["status"]
    assert status["status_str"] == "error" and status["messages"][-1][0] == "execution_interrupted"
    Gate.event.set()
    # Waiting-room cap: the executor is held, the queue fills, then 429.
    Gate.event.clear()
    cap = server.app.state.server.config.max_queue
    server.app.state.server.queue.max_pending = 2
    try:
        held = client.post("/prompt", json={"prompt": gate("hold")}).json()["prompt_id"]
        while not client.get("/queue").json()["queue_running"]:
            time.sleep(0.05)
        codes = [client.post("/prompt", json={"prompt": gate(f"c{i}")}).status_code for i in range(3)]
        assert codes == [200, 200, 429]
    finally:
        server.app.state.server.queue.max_pending = cap
        Gate.event.set()
    deadline = time.time() + 30
    while client.get("/prompt").json()["exec_info"]["queue_remaining"] and time.time() < deadline:
        time.sleep(0.05)
    assert client.get(f"/history/{held}").json()[held]["outputs"] == {"1": {"text": ["hold"]}}


def test_api_shapes_the_frontend_reads(client):
    info = client.get("/api/object_info").json()
    assert {"LoadImage", "SaveImage", "PreviewImage", "CCCColorize", "CCCMetrics"} <= set(info)
    c = info["CCCColorize"]
    assert c["output"] == ["IMAGE"] and c["output_name"] == ["image"] and c["output_node"] is False
    assert c["input_order"]["required"] == ["ccc_model", "image", "decode", "temperature", "size"]
    assert c["python_module"] == "custom_nodes.ccc_nodes" and c["display_name"] == "CCC++ Colorize"
    assert info["SaveImage"]["output_node"] is True and info["LoadImage"]["output"] == ["IMAGE", "MASK"]
    assert client.get("/object_info/Nope").json() == {}
    stats = client.get("/system_stats").json()
    assert stats["devices"][0]["type"] in ("cpu", "cuda") and "comfyui_version" in stats["system"]
    assert client.get("/features").json()["max_upload_size"] == 200_000
    assert client.get("/embeddings").json() == [] and client.get("/api/users").json()["storage"] == "server"
    # Settings and user data round-trip; their names stay inside the user folder too.
    assert client.post("/api/settings/Comfy.TutorialCompleted", json=True).status_code == 200
    assert client.get("/api/settings").json()["Comfy.TutorialCompleted"] is True
    assert client.post("/api/userdata/workflows%2Fmine.json", content=b'{"a": 1}').status_code == 200
    assert client.get("/api/userdata", params={"dir": "workflows"}).json() == ["mine.json"]
    assert client.get("/api/userdata/workflows%2Fmine.json").json() == {"a": 1}
    assert client.get("/api/userdata/..%2F..%2Fsecret.png").status_code == 400
    assert client.delete("/api/userdata/workflows%2Fmine.json").status_code == 204


def test_token_and_origin_guard(tmp_path, small_model):
    config = ServerConfig(base_dir=tmp_path, token="s3cret")
    with ServerThread(config) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/prompt").status_code == 401
        assert c.get("/prompt", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/prompt", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = c.get("/api/system_stats", params={"token": "s3cret"})  # a browser's first visit
        assert r.status_code == 200 and "ccc_token=s3cret" in r.headers["set-cookie"]
        assert c.get("/prompt").status_code == 200  # the cookie now carries it
        with pytest.raises(InvalidStatus) as refused, connect(f"ws://{srv.host}:{srv.port}/ws") as ws:
            ws.recv(timeout=5)
        assert refused.value.response.status_code in (401, 403)
        with connect(f"ws://{srv.host}:{srv.port}/ws", additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "status"
        evil = {"Authorization": "Bearer s3cret", "Origin": "http://evil.example"}
        assert c.post("/prompt", json={"prompt": {}}, headers=evil).status_code == 403
        same = {"Authorization": "Bearer s3cret", "Origin": srv.url}
        assert c.post("/prompt", json={"prompt": {}}, headers=same).status_code == 400


def test_cli_refuses_an_open_interface_without_a_token(capsys):
    from ccc_nodes.interfaces.cli import main

    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
