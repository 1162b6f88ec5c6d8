"""The Space's video section in a real browser (Debian's headless Chromium, Playwright): the
limit is on the page, a clip uploaded and colorized comes back as two playable videos.
Without Chromium or Playwright it is skipped, and fails in CI (helpers.chromium)."""

from __future__ import annotations

import pytest
from helpers import BROWSER_TIMEOUT_MS, make_clip, need, pan

need("av")
need("cv2")


pytestmark = pytest.mark.slow  # a real browser: left out of the fast lane


def test_a_clip_goes_in_and_two_videos_come_out(browser, space_page, tmp_path):
    from skimage import data

    url, app = space_page
    clip = make_clip(tmp_path / "clip.mp4", pan(data.chelsea(), 6))
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#colorize")
    page.get_by_text("Video: frame by frame and temporal").first.click()
    page.get_by_text(app.VIDEO_LIMITS).first.wait_for()  # the limit, stated on the page
    page.set_input_files("#clip input[type=file]", str(clip))
    page.wait_for_selector("#clip video")
    page.click("#colorize-clip")
    for box in ("#clip-frame-by-frame", "#clip-temporal"):
        page.wait_for_selector(f"{box} video")
        page.wait_for_function("(sel) => { const v = document.querySelector(sel + ' video');"
                               " return v && v.readyState >= 1 && v.videoWidth === 64; }", arg=box)
    page.close()
