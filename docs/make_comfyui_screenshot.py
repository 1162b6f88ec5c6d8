"""A screenshot of one of the pack's templates after a run in a ComfyUI editor.

    python docs/make_comfyui_screenshot.py --server http://127.0.0.1:8188 \
        --template ccc_harmonize_mask -o docs/comfyui_harmonize_mask.png

The server is a running ComfyUI with this pack in ``custom_nodes`` (or ``ccc serve``). The
script uploads the template's input images (from ``examples/``), opens the editor in
headless Chromium (Debian's ``chromium``; Playwright drives it), loads the template as the
template browser does, presses Run, waits for the prompt's history entry and for every
preview to show, then saves the page as PNG. Needs the dev extra (httpx, playwright).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import BROWSER_FLAGS, EDITOR_SETTINGS, close_dialogs  # noqa: E402 - the editor as the tests set it up

# the files the templates' Load Image nodes name (examples/workflows/make_templates.py)
INPUTS = {"chelsea.jpg": ROOT / "examples" / "grey" / "chelsea.jpg",
          "chelsea_reference.jpg": ROOT / "examples" / "reference" / "chelsea.jpg",
          "chelsea_mask.png": ROOT / "examples" / "masks" / "chelsea_mask.png",
          "chelsea_pan.gif": ROOT / "examples" / "frames" / "chelsea_pan.gif"}


def main() -> None:
    import httpx
    from playwright.sync_api import sync_playwright

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="the editor's URL, e.g. http://127.0.0.1:8188")
    p.add_argument("--template", default="ccc_harmonize_mask")
    p.add_argument("-o", "--out", required=True, help="PNG to write")
    p.add_argument("--size", default="1600x900", help="the window, WIDTHxHEIGHT")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run")
    a = p.parse_args()
    width, height = (int(v) for v in a.size.split("x"))
    browser_path = shutil.which("chromium")
    if not browser_path:
        raise SystemExit("error: no chromium on PATH (Debian: apt-get install chromium)")
    with httpx.Client(base_url=a.server, timeout=60) as client:
        for name, path in INPUTS.items():
            client.post("/upload/image", files={"image": (name, path.read_bytes())},
                        data={"overwrite": "true"}).raise_for_status()
        for key, value in EDITOR_SETTINGS.items():
            client.post(f"/api/settings/{key}", json=value).raise_for_status()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, args=BROWSER_FLAGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(a.timeout * 1000)
            page.goto(a.server + "/")
            page.wait_for_function("window.app && window.app.graph && window.app.graph._nodes")
            close_dialogs(page)
            page.evaluate("""async (name) => {
                const w = await (await fetch(`/api/workflow_templates/ccc-nodes/${name}.json`)).json();
                await window.app.loadGraphData(w, true, true, name); }""", a.template)
            close_dialogs(page)
            before = set(client.get("/history").json())
            page.get_by_role("button", name="Run").first.click()
            entry = wait_for_history(client, before, a.timeout)
            if entry["status"].get("status_str") != "success":
                raise SystemExit(f"error: the run ended {entry['status']}")
            # every output node that made pictures shows them before the picture is taken
            shown = [k for k, o in entry["outputs"].items() if o.get("images")]
            page.wait_for_function("(ids) => ids.every(id => { const n = window.app.graph.getNodeById(+id);"
                                   " return n && n.imgs && n.imgs.length && n.imgs.every(i => i.complete); })", arg=shown)
            page.wait_for_timeout(500)
            page.screenshot(path=a.out)
            browser.close()
    print(f"{a.out}: {a.template} after a run ({width}x{height})")


def wait_for_history(client, before: set[str], timeout: float) -> dict:
    """The new prompt's history entry, once it has completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [e for pid, e in client.get("/history").json().items() if pid not in before]
        if new and new[0].get("status", {}).get("completed") is not None:
            return new[0]
        time.sleep(0.5)
    raise SystemExit(f"error: the run did not finish in {timeout:.0f} s")


if __name__ == "__main__":
    main()
