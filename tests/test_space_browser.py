"""The Gradio Space in a real browser: Debian's headless Chromium, driven by Playwright,
against the page served on loopback. Skipped only when Chromium or Playwright is absent.

``CCC_SPACE_SCREENSHOT=docs/space_screenshot.png pytest tests/test_space_browser.py``
also writes the screenshot the README shows (the page after an example has run).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")

from test_space import load_app, serve, space_model

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000  # a shared 2-core CI machine: generous, never part of what is tested


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    app = load_app()
    os.environ[app.MODEL_ENV] = space_model(tmp_path_factory)
    demo, url = serve(app, os.environ[app.MODEL_ENV])
    yield url
    demo.close()
    os.environ.pop(app.MODEL_ENV, None)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, page_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(page_url)
    page.wait_for_selector("#colorize")
    yield page
    page.close()


def save_screenshot(page, path: Path, width: int = 960) -> None:
    """The page's top (controls and results) as a small palette PNG."""
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot = shot.crop((0, 0, shot.width, min(shot.height, 1350)))
    shot = shot.resize((width, round(shot.height * width / shot.width)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def test_example_runs_and_shows_the_result(page, tmp_path):
    page.get_by_text("classical", exact=True).click()  # harmonisation, so the masks panel fills too
    page.get_by_text("chelsea (colour)", exact=True).click()
    page.wait_for_selector("#notes :text('chelsea.jpg')")
    # Both sides of the before/after slider are loaded pictures at the photo's size.
    sizes = page.eval_on_selector_all(
        "#before-after img", "imgs => imgs.map(i => [i.complete && i.naturalWidth, i.naturalHeight])"
    )
    assert sizes == [[451, 300], [451, 300]]
    for panel in ("#class-map", "#masks"):
        assert page.eval_on_selector(f"{panel} img", "i => i.complete && i.naturalWidth") == 451
    page.wait_for_selector("#notes :text('Harmonised with classical')")
    page.wait_for_selector("#metrics :text('TAR (%)')")
    assert "Traceback" not in page.content()
    shot = Path(os.environ.get("CCC_SPACE_SCREENSHOT") or tmp_path / "space.png")
    save_screenshot(page, shot)
    assert Image.open(shot).width == 960


def test_a_non_image_gives_a_clear_message(page, tmp_path):
    # A file that claims to be a JPEG reaches the server, which names the problem.
    letter = tmp_path / "letter.jpg"
    letter.write_text("Dear reader, this is not a photo.")
    page.set_input_files("#photo input[type=file]", str(letter))
    page.wait_for_selector("#photo img")  # uploaded (the browser cannot draw it)
    page.click("#colorize")
    page.get_by_text("letter.jpg: not an image file").first.wait_for()
    # A file that does not even claim to be an image is refused by the page itself.
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    page.set_input_files("#photo input[type=file]", str(notes))
    page.get_by_text("Invalid file type").first.wait_for()
    assert "Traceback" not in page.content()
