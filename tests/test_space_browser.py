"""The Gradio Space in a real browser: Debian's headless Chromium, driven by Playwright,
against the page served on loopback. Without Chromium or Playwright these tests are skipped,
and fail in CI (helpers.chromium).

``CCC_SPACE_SCREENSHOT=docs/space_screenshot.png pytest tests/test_space_browser.py``
also writes the screenshot the README shows (the page after an example has run).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import BROWSER_TIMEOUT_MS, EXAMPLES, load_app, serve
from PIL import Image

pytestmark = pytest.mark.slow  # a real browser: left out of the fast lane


@pytest.fixture(scope="module")
def page_url(space_page):
    return space_page[0]


def open_page(browser, url, width=1280, height=1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#colorize")
    return page


@pytest.fixture
def page(browser, page_url):
    page = open_page(browser, page_url)
    yield page
    page.close()


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def assert_metrics_fit(page) -> None:
    """Every cell of the metrics table lies inside the table and shows all its text."""
    page.wait_for_function("() => document.querySelectorAll('#metrics [role=gridcell]').length === 36")
    cells = page.eval_on_selector_all(
        "#metrics [role=gridcell]",
        "cs => cs.map(c => [c.innerText, c.getBoundingClientRect().right, c.firstElementChild.scrollWidth,"
        " c.firstElementChild.clientWidth])",
    )
    right = box(page, "#metrics")["x"] + box(page, "#metrics")["width"]
    assert len(cells) == 36  # 12 metrics x (metric, value, meaning), none scrolled out of view
    for text, cell_right, needed, has in cells:
        assert cell_right <= right + 1 and needed <= has + 1, f"cut off: {text!r}"


def loaded_sizes(page, selector: str) -> list[list[int]]:
    """[width, height] of each picture under ``selector``, once every one has loaded: the notes
    can arrive before the browser has decoded the pictures sent with them."""
    page.wait_for_function(
        "sel => { const imgs = [...document.querySelectorAll(sel)];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector,
    )
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")


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
    assert loaded_sizes(page, "#before-after img") == [[451, 300], [451, 300]]
    for panel in ("#class-map", "#masks"):
        assert loaded_sizes(page, f"{panel} img")[0][0] == 451
    page.wait_for_selector("#notes :text('Harmonised with classical (Felzenszwalb) segmentation')")
    page.wait_for_selector("#metrics :text('TAR (%)')")
    assert_metrics_fit(page)  # the "meaning" column wraps instead of running off the table
    assert page.locator("#download").is_visible() and page.locator("#download :text('.png')").count() == 1
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


def test_layout_puts_examples_and_the_button_within_reach(page):
    """Before any run: the examples sit right under the photo and the Colorize button above
    the harmonisation settings, all in the first screen; no empty download box or metrics
    table; one "How it works"; the temperature slider only for annealed-mean."""
    photo, model, button = box(page, "#photo"), box(page, "#model"), box(page, "#colorize")
    example = box(page, "text='astronaut (grey)'")
    assert photo["y"] + photo["height"] <= example["y"] < model["y"]
    assert button["y"] + button["height"] <= 1000 and button["y"] < box(page, "#harmonize-settings")["y"]
    assert not page.locator("#download").is_visible() and not page.locator("#metrics").is_visible()
    assert page.get_by_text("How it works").count() == 1
    grid_label = page.inner_text("#class-grid")
    assert "bins kept" in grid_label and "`" not in grid_label
    assert not page.locator("#temperature").is_visible()
    page.locator("#decode").get_by_text("annealed-mean", exact=True).click()
    page.wait_for_selector("#temperature", state="visible")
    page.locator("#decode").get_by_text("argmax", exact=True).click()
    page.wait_for_selector("#temperature", state="hidden")
    if not load_app().default_sam()[0]:  # no SAM checkpoint: the choice says what happens
        assert page.locator("#harmonize").get_by_text("SAM (no checkpoint)", exact=True).is_visible()
        assert page.locator("#harmonize").get_by_text("classical masks are used").is_visible()


def test_a_typed_input_size_is_rounded_not_refused(page):
    size = page.locator("#size input[type=number]")
    size.fill("200")
    size.press("Enter")
    page.get_by_text("coffee (grey)", exact=True).click()
    page.wait_for_selector("#notes :text('Input size 200 was rounded to 192')")
    assert "input 192" in page.inner_text("#notes")


def test_an_error_clears_the_previous_result(page, tmp_path):
    page.get_by_text("chelsea (grey)", exact=True).click()
    page.wait_for_selector("#notes :text('chelsea.jpg')")
    page.wait_for_selector("#download", state="visible")
    letter = tmp_path / "letter.jpg"
    letter.write_text("Dear reader, this is not a photo.")
    page.set_input_files("#photo input[type=file]", str(letter))
    # The photo box still shows chelsea: wait for the new file itself (its name is in the URL).
    page.wait_for_function("() => [...document.querySelectorAll('#photo img')].some(i => i.src.includes('letter'))")
    page.click("#colorize")
    page.get_by_text("letter.jpg: not an image file").first.wait_for()
    assert "chelsea.jpg" not in page.inner_text("#notes")  # no notes of the earlier photo
    assert page.locator("#before-after img").count() == 0 and page.locator("#class-map img").count() == 0
    assert not page.locator("#download").is_visible()


def test_a_tiny_grey_photo_keeps_the_layout_and_hides_the_metrics(page, tmp_path):
    tiny = tmp_path / "tiny8.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)).save(tiny)
    page.set_input_files("#photo input[type=file]", str(tiny))
    page.wait_for_selector("#photo img")
    assert box(page, "#photo")["height"] >= 200
    page.click("#colorize")
    page.wait_for_selector("#notes :text('tiny8.png')")
    sizes = [w for w, _ in loaded_sizes(page, "#before-after img")]
    assert sizes == [256, 256]  # shown enlarged, pixels sharp (tested on the handler)
    assert box(page, "#class-map")["height"] >= 200 and box(page, "#photo")["height"] >= 200
    page.wait_for_selector("#download", state="visible")  # set by the step after the pictures, with the metrics
    assert not page.locator("#metrics").is_visible()  # a grey photo has no reference


def test_metrics_table_fits_a_phone(browser, page_url):
    page = open_page(browser, page_url, 390, 844)
    try:
        page.get_by_text("coffee (colour)", exact=True).click()
        page.wait_for_selector("#metrics :text('TAR (%)')")
        assert_metrics_fit(page)
    finally:
        page.close()


def test_locked_page_fixes_the_model_and_sam(browser, page_url, tmp_path, monkeypatch):
    """CCC_SPACE_LOCKED=1: the model and SAM boxes cannot be edited and show no server path.
    (``page_url``: its fixture sets the model variable this test reads, so the test runs alone too.)"""
    app = load_app()
    folder = tmp_path / "srv" / "my_model"
    app.get_model(os.environ[app.MODEL_ENV]).save_pretrained(folder)
    monkeypatch.setenv(app.LOCKED_ENV, "1")
    monkeypatch.setenv(app.SAM_ENV, "")
    demo, url = serve(app, str(folder))
    monkeypatch.setenv(app.MODEL_ENV, str(folder))  # put back as it was after the test
    page = open_page(browser, url)
    try:
        assert page.locator("#model input").is_disabled()
        assert page.locator("#model input").input_value() == "my_model"
        page.click("#harmonize-settings")
        assert page.locator("#sam-checkpoint textarea").is_disabled()
        assert page.locator("#sam-type input").first.is_disabled()
        assert str(tmp_path) not in page.content()
        page.get_by_text("rocket (grey)", exact=True).click()
        page.wait_for_selector("#notes :text('rocket.jpg')")
        assert "model my_model" in page.inner_text("#notes")
    finally:
        page.close()
        demo.close()


PATCH_JS = """([sel, x0, y0, w, h]) => {
  const img = document.querySelectorAll(sel)[1];  // the slider's 'after' side
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(x0, y0, w, h).data; const m = [0, 0, 0];
  for (let i = 0; i < d.length; i += 4) { m[0] += d[i]; m[1] += d[i + 1]; m[2] += d[i + 2]; }
  return m.map(v => v / (d.length / 4));
}"""


def test_a_clicked_hint_colours_its_region(page):
    from ccc_nodes.steps.hints import parse_color

    page.set_input_files("#photo input[type=file]", str(EXAMPLES / "grey" / "chelsea.jpg"))
    picker = page.locator("#hint-picker img")
    picker.wait_for()
    assert loaded_sizes(page, "#hint-picker img") == [[451, 300]]
    picker.scroll_into_view_if_needed()
    b = picker.bounding_box()  # click the cat's cheek: (225, 150) of the 451x300 photo
    page.mouse.click(b["x"] + b["width"] * 225 / 451, b["y"] + b["height"] * 150 / 300)
    page.wait_for_function("() => document.querySelector('#hints textarea').value.trim() !== ''")
    x, y, colour, strength = page.locator("#hints textarea").input_value().strip().split(",")
    assert abs(int(x) - 225) <= 3 and abs(int(y) - 150) <= 3 and colour.lower() == "#c0392b" and strength == "1"
    page.click("#colorize")
    page.wait_for_selector("#notes :text('Steered by 1 colour hint.')")
    assert loaded_sizes(page, "#before-after img") == [[451, 300], [451, 300]]
    mean = page.evaluate(PATCH_JS, ["#before-after img", int(x) - 8, int(y) - 8, 16, 16])
    import torch

    from ccc_nodes.core.color import rgb_to_lab

    lab = rgb_to_lab(torch.tensor(mean).view(3, 1, 1) / 255.0)[:, 0, 0]
    assert float((lab[1:] - torch.tensor(parse_color("#c0392b"))).norm()) < 15  # the hinted red, on the cat's L
    assert "Traceback" not in page.content()
