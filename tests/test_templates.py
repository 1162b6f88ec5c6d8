"""example_workflows/: the editor-format workflows ComfyUI's template browser lists for the
pack. Their structure (known nodes, widget values, links, no overlapping nodes, a
thumbnail each), their listing by ``ccc serve``'s /api/workflow_templates as ComfyUI lists
them, and, in Debian's Chromium, ComfyUI's own editor loading and running each one.

The browser test runs against ``ccc serve``; with ``CCC_COMFYUI_URL=http://127.0.0.1:PORT``
it runs against that real ComfyUI instead (docs/COMFYUI.md, by hand).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from helpers import need

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "example_workflows"
NAMES = sorted(p.stem for p in TEMPLATES.glob("*.json"))
INPUTS = {"chelsea.jpg": ROOT / "examples" / "grey" / "chelsea.jpg",
          "chelsea_reference.jpg": ROOT / "examples" / "reference" / "chelsea.jpg",
          "chelsea_mask.png": ROOT / "examples" / "masks" / "chelsea_mask.png",
          "chelsea_pan.gif": ROOT / "examples" / "frames" / "chelsea_pan.gif"}

sys.path.insert(0, str(ROOT / "examples" / "workflows"))
from make_templates import TEMPLATES as GRAPHS  # noqa: E402
from make_templates import node_specs, overlaps  # noqa: E402


def test_the_six_kinds_of_template_are_there():
    assert NAMES == sorted(GRAPHS) == ["ccc_classes", "ccc_colorize", "ccc_colorize_sequence", "ccc_harmonize_mask",
                                       "ccc_hints", "ccc_metrics"]
    kinds = {name: {n["type"] for n in json.loads((TEMPLATES / f"{name}.json").read_text())["nodes"]} for name in NAMES}
    assert kinds["ccc_colorize"] >= {"CCCColorize"}
    assert kinds["ccc_classes"] >= {"CCCGrayscaleToClasses", "CCCClassesToLab", "PreviewImage"}
    assert kinds["ccc_harmonize_mask"] >= {"CCCSAMHarmonize", "LoadImage"}
    assert kinds["ccc_metrics"] >= {"CCCMetrics"}
    assert kinds["ccc_colorize_sequence"] >= {"CCCColorizeSequence", "LoadImage"}
    assert kinds["ccc_hints"] >= {"CCCColorHint", "CCCClassesToLab", "LoadImage"}


@pytest.mark.parametrize("name", NAMES)
def test_template_structure(name):
    workflow = json.loads((TEMPLATES / f"{name}.json").read_text())
    specs = node_specs()
    assert (TEMPLATES / f"{name}.jpg").stat().st_size > 1000  # the thumbnail the browser shows
    assert workflow["version"] == 0.4 and overlaps(workflow) == []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    right = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    assert right * workflow["extra"]["ds"]["scale"] <= 1600  # opens whole in the width of a 1600 px window
    assert workflow["last_node_id"] == max(nodes) and workflow["last_link_id"] == len(workflow["links"])
    for node in nodes.values():
        spec = specs[node["type"]]
        assert len(node["widgets_values"]) == sum(1 for i in spec["inputs"] if i[2]), node["type"]
        assert [i["name"] for i in node["inputs"]] == [i[0] for i in spec["inputs"] if not i[2]]
        if node["type"] == "LoadImage":
            assert node["widgets_values"][0] in INPUTS
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        assert link_id in (nodes[src]["outputs"][src_slot]["links"] or [])
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[src]["outputs"][src_slot]["type"] == kind == nodes[dst]["inputs"][dst_slot]["type"]


def test_ccc_serve_lists_and_serves_the_templates(tmp_path):
    httpx = need("httpx")
    need("fastapi")
    from ccc_nodes.interfaces.server import ServerConfig, ServerThread

    with ServerThread(ServerConfig(base_dir=tmp_path)) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        assert client.get("/api/workflow_templates").json() == {"ccc-nodes": NAMES}
        for name in NAMES:
            assert client.get(f"/api/workflow_templates/ccc-nodes/{name}.json").json()["nodes"]
            r = client.get(f"/api/workflow_templates/ccc-nodes/{name}.jpg")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        for bad in ("other/ccc_colorize.json", "ccc-nodes/make_templates.py", "ccc-nodes/..%2Fpyproject.toml"):
            assert client.get(f"/api/workflow_templates/{bad}").status_code == 404
        assert client.get("/templates/index.json").json() == []


# ------------------------------------------------------------------ in the browser
TIMEOUT_MS = 240_000  # a shared 2-core machine: generous, never part of what is tested


@pytest.fixture(scope="module")
def editor(chromium, tmp_path_factory):
    """(url, http client) of ccc serve, or of the real ComfyUI at $CCC_COMFYUI_URL."""
    httpx = need("httpx")
    if url := os.environ.get("CCC_COMFYUI_URL"):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield url, client
        return
    need("fastapi")
    from ccc_nodes.interfaces.server import ServerConfig, ServerThread

    with ServerThread(ServerConfig(base_dir=tmp_path_factory.mktemp("srv"))) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        yield srv.url, client


@pytest.mark.slow
def test_the_editor_loads_and_runs_every_template(chromium, editor):
    from helpers import BROWSER_FLAGS, close_dialogs, quiet_editor
    from playwright.sync_api import sync_playwright

    url, client = editor
    for name, path in INPUTS.items():
        r = client.post("/upload/image", files={"image": (name, path.read_bytes())}, data={"overwrite": "true"})
        assert r.status_code == 200, r.text
    quiet_editor(client)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url + "/")
        page.wait_for_function("window.app && window.app.graph && window.app.graph._nodes", timeout=TIMEOUT_MS)
        close_dialogs(page)
        listed = page.evaluate("fetch('/api/workflow_templates').then(r => r.json())")
        assert sorted(listed["ccc-nodes"]) == NAMES
        for name in NAMES:
            # What the template browser does: fetch the pack's template, then loadGraphData.
            page.evaluate("""async (name) => {
                const w = await (await fetch(`/api/workflow_templates/ccc-nodes/${name}.json`)).json();
                await window.app.loadGraphData(w, true, true, name); }""", name)
            close_dialogs(page)
            first = run_in_editor(page, client)
            assert first["status"]["status_str"] == "success", (name, first["status"])
            saved = [i for o in first["outputs"].values() for i in o.get("images", []) if i["type"] == "output"]
            assert saved, name
            if name == "ccc_metrics":
                metrics_id = next(str(n["id"]) for n in json.loads((TEMPLATES / f"{name}.json").read_text())["nodes"]
                                  if n["type"] == "CCCMetrics")
                assert "PSNR" in first["outputs"][metrics_id]["text"][0]
                # The table shows on the node, in a box the extension adds...
                page.wait_for_function("window.app.graph._nodes.some(n => (n.widgets || []).some("
                                       "w => w.name === 'ccc_text' && String(w.value).includes('PSNR')))")
                # ...which is not sent back as an input: an unchanged second Run is all cached.
                second = run_in_editor(page, client)
                assert "ccc_text" not in json.dumps(second["prompt"])
                cached = next(m[1]["nodes"] for m in second["status"]["messages"] if m[0] == "execution_cached")
                assert sorted(cached) == sorted(second["prompt"][2]), cached
        browser.close()


def run_in_editor(page, client) -> dict:
    """Press Run and wait for that prompt's history entry."""
    before = set(client.get("/history").json())
    page.get_by_role("button", name="Run").first.click()
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        new = [e for pid, e in client.get("/history").json().items() if pid not in before]
        if new and new[0].get("status", {}).get("completed") is not None:
            return new[0]
        page.wait_for_timeout(500)
    raise TimeoutError("the prompt did not finish")
