"""The demo page in a real headless Chromium: upload and webcam queries, a bad file, explain and feedback;
screenshots kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from simlib.app.results import collapse_threshold
from tests.support import ARTIFACTS
from tests.support.browser import wait_idle
from tests.support.servers import served_demo

pytestmark = pytest.mark.browser

K = 3
TIMEOUT_MS = 60_000  # a loaded 2-core machine


@pytest.fixture(scope="module")
def url(searcher, small_index_dir):
    # feedback goes beside the index
    with served_demo(searcher, k=K, artifacts=small_index_dir) as local_url:
        yield local_url


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#search")
    yield page
    context.close()


def search_and_wait(page, name: str) -> list[str]:
    """Click Search, wait for K result images, save a screenshot; returns the captions."""
    page.click("#search")
    wait_idle(page)
    page.wait_for_function(f"document.querySelectorAll('#results img').length === {K}")
    page.wait_for_function("document.querySelector('#status').innerText.includes('results')")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"app_{name}.png"), full_page=True)
    return page.locator("#results .caption-label").all_inner_texts()


def test_upload_shows_k_results(page, searcher):
    image = searcher.index.records()[0].path
    assert page.locator("#untrained-notice").is_visible()  # the tiny test model is untrained
    page.locator("#query input[type=file]").set_input_files(image)
    page.wait_for_selector("#query img")
    captions = search_and_wait(page, "upload")
    assert len(captions) == K and captions[0].startswith("#1 · 1.000")  # the image finds itself first
    assert f"{K} results" in page.locator("#status").inner_text()


def test_webcam_frame_gets_results(page):
    page.click("#query button[aria-label='Capture from camera']")
    page.get_by_text("Click to Access Webcam").click()
    page.wait_for_function("(() => { const v = document.querySelector('#query video'); return v?.videoWidth > 0 })()")
    page.click("#query button[aria-label='capture photo']")
    page.wait_for_selector("#query img")
    captions = search_and_wait(page, "webcam")
    assert len(captions) == K and all(c.startswith(f"#{i + 1} · ") for i, c in enumerate(captions))


def test_bad_file_shows_one_clear_error(page, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("<html>not an image</html>")
    page.locator("#query input[type=file]").set_input_files(str(bad))
    page.wait_for_timeout(500)
    page.click("#search")
    toast = page.locator(".toast-body").first
    toast.wait_for()
    text = toast.inner_text()
    page.wait_for_timeout(300)  # let the toast slide in before the screenshot
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_bad_file.png"))
    assert "holiday.png: not an image" in text and "Traceback" not in text


def test_click_a_result_explains_it_and_takes_feedback(page, searcher, small_index_dir):
    """Click the second result: both images and their heat maps, the score; then "Not similar" is stored."""
    from simlib.search.feedback import FeedbackStore

    image = searcher.index.records()[0].path
    store = FeedbackStore(Path(small_index_dir).parent / "feedback")
    before = len(store.read()) if store.path.exists() else 0
    page.locator("#query input[type=file]").set_input_files(image)
    page.wait_for_selector("#query img")
    search_and_wait(page, "before_explain")
    assert not page.locator("#explain").is_visible()
    page.locator("#results .thumbnail-item").nth(1).click()
    page.wait_for_function(
        "[...document.querySelectorAll('#explain img')].filter(i => i.complete && i.naturalWidth > 0).length === 4"
    )
    text = page.locator("#explain-text").inner_text()
    second = searcher.query(image, k=2, collapse_duplicates=collapse_threshold(searcher.info().to_dict()))[1]
    assert text.startswith("#2 · cosine similarity ") and f"{second.score:.4f}" in text, text
    # the colour bar is this pair's: from the colour of its least matching part, not jet's dark blue
    page.wait_for_function("document.querySelector('#heat-legend')?.innerText.includes('of the strongest')")
    bar = page.locator("#heat-legend .heat-bar").evaluate("el => getComputedStyle(el).backgroundImage")
    assert bar.startswith("linear-gradient") and "rgb(0, 0, 128)" not in bar, bar
    page.click("#fb-not-similar")
    page.wait_for_function("document.querySelector('#feedback-status').innerText.includes('not similar')")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_explain_feedback.png"), full_page=True)
    entries = store.read()
    assert len(entries) == before + 1
    assert (entries[-1].result_id, entries[-1].verdict) == (second.id, "not_similar")


def test_no_good_match_banner(page, searcher):
    """With a calibrated threshold no result clears, the page says "No good match" and labels every result weak."""
    image = searcher.index.records()[0].path
    from simlib.index import Threshold

    before = searcher.index.manifest
    searcher.index.manifest = before.replace(threshold=Threshold(score=1.01, method="test"))  # the served searcher
    try:
        page.locator("#query input[type=file]").set_input_files(image)
        page.wait_for_selector("#query img")
        captions = search_and_wait(page, "no_good_match")
        page.wait_for_selector("#no-match", state="visible")
        page.wait_for_function(
            "document.querySelector('#no-match').innerText.trim().startsWith('Low confidence: no good match')"
        )
        banner = page.locator("#no-match").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "app_no_good_match.png"), full_page=True)
    finally:
        searcher.index.manifest = before
    assert banner.startswith("Low confidence: no good match") and "1.0100" in banner
    assert len(captions) == K and all(c.endswith(" · low confidence") for c in captions)


def test_on_a_phone_the_results_and_the_explanation_come_into_view(browser, url, searcher):
    """At 390x844 (touch), with the untrained notice on show: after an upload the first result is fully on
    screen without a manual scroll; a tapped result's explanation is brought into view."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        page.wait_for_selector("#search")
        assert page.locator("#untrained-notice").is_visible()
        page.locator("#query input[type=file]").set_input_files(searcher.index.records()[3].path)
        wait_idle(page)
        page.wait_for_function(f"document.querySelectorAll('#results img').length === {K}")
        in_view = (
            "s => { const r = document.querySelector(s).getBoundingClientRect();"
            " return r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0; }"
        )
        page.wait_for_function(in_view, arg="#results .thumbnail-item")  # the smooth scroll has ended
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "app_phone_results.png"))
        page.locator("#results .thumbnail-item").first.tap()
        page.wait_for_selector("#explain", state="visible")
        page.wait_for_function(
            "() => { const r = document.querySelector('#explain').getBoundingClientRect();"
            " return r.top >= -2 && r.top < window.innerHeight / 2; }"
        )
        page.screenshot(path=str(ARTIFACTS / "app_phone_explain.png"))
    finally:
        context.close()


def test_on_a_phone_the_webcam_asks_for_the_rear_camera(browser, url):
    """The webcam asks the browser for the camera on the back ("environment") and gets a frame from it (Chromium's
    fake camera, a 390x844 touch screen); the constraints the page passes to getUserMedia are recorded."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.add_init_script(
        "const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);"
        "window.__constraints = [];"
        "navigator.mediaDevices.getUserMedia = c => { window.__constraints.push(JSON.stringify(c)); return gum(c); };"
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        page.wait_for_selector("#search")
        page.click("#query button[aria-label='Capture from camera']")
        page.get_by_text("Click to Access Webcam").click()
        page.wait_for_function(
            "(() => { const v = document.querySelector('#query video'); return v?.videoWidth > 0 })()"
        )
        asked = [c for c in page.evaluate("window.__constraints") if '"video"' in c]
        assert asked and all('"environment"' in c for c in asked), asked
        page.click("#query button[aria-label='capture photo']")
        page.wait_for_selector("#query img")
        wait_idle(page)
        page.wait_for_function(f"document.querySelectorAll('#results img').length === {K}")
    finally:
        context.close()
