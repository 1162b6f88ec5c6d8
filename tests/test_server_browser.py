"""ComfyUI's own web editor (comfyui-frontend-package) served by this server, in a real
browser: Debian's headless Chromium driven by Playwright opens ``/``, loads the example
colorization workflow, presses Run and finds the colorized image. Without Chromium or the
Playwright package it is skipped, and fails in CI (helpers.chromium).

``CCC_EDITOR_SCREENSHOT=docs/comfyui_editor.png pytest tests/test_server_browser.py``
also writes the screenshot docs/COMFYUI.md shows.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from helpers import BROWSER_FLAGS, BROWSER_TIMEOUT_MS, WORKFLOW, close_dialogs, grey_png, need, quiet_editor
from PIL import Image

httpx = need("httpx")


from ccc_nodes.interfaces.server import ServerConfig, ServerThread, frontend_root  # noqa: E402

OUTPUT_IMAGE = "Object.values(window.app.nodeOutputs || {}).flatMap(o => o.images || []).find(i => i.type === 'output')"


@pytest.mark.slow
def test_the_editor_runs_a_colorization_workflow(chromium, tmp_path, small_model, monkeypatch):
    from playwright.sync_api import sync_playwright

    assert frontend_root() is not None, "install the server extra: comfyui-frontend-package"
    small_model.save_pretrained(tmp_path / "models" / "ccc" / "small")
    monkeypatch.setenv("CCC_MODELS_DIR", str(tmp_path / "models"))
    workflow = json.loads(WORKFLOW.read_text())
    workflow["1"]["inputs"]["image"] = "grey.png"
    workflow["2"]["inputs"]["model"] = "small"
    workflow["3"]["inputs"]["size"] = 64
    config = ServerConfig(base_dir=tmp_path / "work", models_dir=tmp_path / "models")
    with ServerThread(config) as srv, httpx.Client(base_url=srv.url, timeout=60) as client, sync_playwright() as p:
        r = client.post("/upload/image", files={"image": ("grey.png", grey_png(240, 320), "image/png")})
        assert r.status_code == 200
        quiet_editor(client)  # no background start-up work that could replace the graph
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1160, "height": 560})
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        failed = []
        page.on("response", lambda resp: failed.append(resp.url) if resp.status >= 500 else None)
        page.goto(srv.url + "/")
        page.wait_for_function("window.app && window.app.graph && window.app.graph._nodes", timeout=BROWSER_TIMEOUT_MS)
        close_dialogs(page)
        # The editor knows this server's nodes (from /object_info).
        assert page.evaluate("!!LiteGraph.registered_node_types['CCCColorize']")
        page.evaluate("([w]) => window.app.loadApiJson(w, 'colorize_api.json')", [workflow])
        close_dialogs(page)
        types = page.evaluate("window.app.graph._nodes.map(n => n.type).sort()")
        assert types == ["CCCColorize", "CCCModelLoader", "LoadImage", "SaveImage"]
        page.get_by_role("button", name="Run").first.click()
        page.wait_for_function(f"!!({OUTPUT_IMAGE})", timeout=BROWSER_TIMEOUT_MS)
        image = page.evaluate(OUTPUT_IMAGE)
        assert image["filename"].startswith("ccc_colorized_") and image["subfolder"] == ""
        # The browser can load the output as the editor shows it, through /view.
        size = page.evaluate("""async (img) => {
            const q = new URLSearchParams(img).toString();
            const el = new Image(); el.src = '/api/view?' + q; await el.decode();
            return [el.naturalWidth, el.naturalHeight]; }""", image)
        assert size == [320, 240]
        out = Image.open(tmp_path / "work" / "output" / image["filename"])
        assert out.size == (320, 240) and out.mode == "RGB"
        page.wait_for_timeout(500)  # let the canvas draw the preview
        if target := os.environ.get("CCC_EDITOR_SCREENSHOT"):
            shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
            shot.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(Path(target), optimize=True)
        browser.close()
    assert failed == []


@pytest.mark.slow
def test_a_note_wraps_inside_its_node_and_a_table_widens_it(chromium, tmp_path, small_model, monkeypatch):
    """SAM Harmonize's note on an empty mask (LoadImage of a photo without alpha gives one)
    wraps at the node's width, so it covers none of the nodes beside it; the Metrics table
    widens its node to its lines."""
    from playwright.sync_api import sync_playwright

    small_model.save_pretrained(tmp_path / "models" / "ccc" / "small")
    monkeypatch.setenv("CCC_MODELS_DIR", str(tmp_path / "models"))
    graph = json.loads((WORKFLOW.parent / "harmonize_metrics_api.json").read_text())
    graph["1"]["inputs"]["image"] = "grey.png"
    graph["2"]["inputs"].update(model="small", device="cpu")
    graph["3"]["inputs"]["size"] = 64
    graph["4"]["inputs"]["mask"] = ["1", 1]  # the blank mask of a photo without alpha
    config = ServerConfig(base_dir=tmp_path / "work", models_dir=tmp_path / "models")
    width = "(t) => window.app.graph._nodes.find(n => n.type === t).size[0]"
    shown = "(t) => window.app.graph._nodes.find(n => n.type === t).widgets?.find(w => w.name === 'ccc_text')?.value"
    with ServerThread(config) as srv, httpx.Client(base_url=srv.url, timeout=60) as client, sync_playwright() as p:
        assert client.post("/upload/image", files={"image": ("grey.png", grey_png(96, 128), "image/png")}).status_code == 200
        quiet_editor(client)
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1160, "height": 560})
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        page.goto(srv.url + "/")
        page.wait_for_function("window.app && window.app.graph && window.app.graph._nodes", timeout=BROWSER_TIMEOUT_MS)
        close_dialogs(page)
        page.evaluate("([w]) => window.app.loadApiJson(w, 'harmonize_api.json')", [graph])
        close_dialogs(page)
        before = {t: page.evaluate(width, t) for t in ("CCCSAMHarmonize", "CCCMetrics")}
        page.get_by_role("button", name="Run").first.click()
        for t in before:
            page.wait_for_function(f"!!({shown})('{t}')", timeout=BROWSER_TIMEOUT_MS)
        note, table = page.evaluate(shown, "CCCSAMHarmonize"), page.evaluate(shown, "CCCMetrics")
        after = {t: page.evaluate(width, t) for t in before}
        style = page.evaluate("""(t) => getComputedStyle(window.app.graph._nodes.find(n => n.type === t)
                                 .widgets.find(w => w.name === 'ccc_text').inputEl).whiteSpace""", "CCCSAMHarmonize")
        browser.close()
    assert "empty (all zeros)" in note and "|" in table
    assert after["CCCSAMHarmonize"] == before["CCCSAMHarmonize"] and style == "pre-wrap"
    assert after["CCCMetrics"] > before["CCCMetrics"]
