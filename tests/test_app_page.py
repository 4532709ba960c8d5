"""The demo page as a first-time visitor meets it, in headless Chromium: results on upload (no click), a
Top-K change refreshes them, the course's model is served, "No good match" only with a supported
calibration, captions that fit and results on screen at 1400 px and at a 390 px phone width.

A tiny backbone over a synthetic labelled gallery (fast to serve); screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from tests.support import ARTIFACTS
from tests.support.browser import wait_idle
from tests.support.galleries import labelled_folder, synthetic_image
from tests.support.servers import served_demo

pytestmark = pytest.mark.browser

K = 3
TIMEOUT_MS = 60_000  # a loaded 2-core machine
# Long labels, as the product set has ("Sports Shoes", "Flip Flops", "Tshirts"...), and then some.
LABELS = ["Sports_Sandals_and_Flip_Flops", "Tshirts", "Casual_Shoes", "Watches"]
PER_CLASS = 8
TINY = {"backbone": "tiny", "image_size": 32, "embedding_dim": 16, "weights": "none"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """An artifacts folder as after the course: an untrained model's index, and ``course/model_labels``."""
    from simlib.config import ModelConfig
    from simlib.data import load_image_folder
    from simlib.model import Embedder
    from simlib.search import Searcher

    items = [(label, synthetic_image(c, i)) for c, label in enumerate(LABELS) for i in range(PER_CLASS)]
    gallery = labelled_folder(tmp_path_factory.mktemp("gallery"), items)
    root = tmp_path_factory.mktemp("artifacts")
    searcher, _ = Searcher.from_table(Embedder.build(ModelConfig(**TINY)), load_image_folder(gallery), progress=False)
    searcher.save(root / "index")
    # What notebook 03 leaves behind (here a tiny model marked trained: the app only reads the flag).
    Embedder.build(ModelConfig(**TINY, trained=True, seed=7)).save(root / "course" / "model_labels")
    return root


@pytest.fixture(scope="module")
def served(artifacts):
    """``(url, searcher, model source)``: the app as ``app_gradio.py --artifacts DIR`` opens and serves it."""
    from simlib.search.gallery import model_source, open_gallery

    searcher, _ = open_gallery(artifacts, progress=False, log=lambda m: None)
    source = model_source(searcher, artifacts)
    with served_demo(searcher, k=K, artifacts=artifacts, model_source=source) as url:
        yield url, searcher, source


def open_page(browser, url: str, width: int, height: int = 900):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#search")
    return context, page


@pytest.fixture
def page(browser, served):
    context, page = open_page(browser, served[0], 1400)
    yield page
    context.close()


def upload(page, path: str) -> None:
    page.locator("#query input[type=file]").set_input_files(path)


def wait_results(page, n: int) -> None:
    """Wait until no search is pending, ``n`` result images are shown and loaded, and the status line reports
    ``n`` results."""
    wait_idle(page)
    page.wait_for_function(
        "n => { const imgs = [...document.querySelectorAll('#results img')];"
        " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0) }",
        arg=n,
    )
    page.wait_for_function(f"document.querySelector('#status').innerText.includes('{n} results')")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page_{name}.png"), full_page=True)


@contextlib.contextmanager
def calibration(searcher, **threshold):
    """The served searcher's index calibrated so for a while (as ``simlib calibrate`` stores it)."""
    from simlib.index import Threshold

    before = searcher.index.manifest
    searcher.index.manifest = before.replace(threshold=Threshold(**threshold))
    try:
        yield
    finally:
        searcher.index.manifest = before


def query_image(searcher) -> str:
    """A gallery image of the longest label (the longest captions)."""
    return next(r.path for r in searcher.index.records() if r.label == LABELS[0])


# ----------------------------------------------------------------------------- searching
def test_an_upload_shows_results_without_a_click(page, served):
    _, searcher, _ = served
    t0 = time.perf_counter()
    upload(page, query_image(searcher))
    wait_results(page, K)  # nothing clicked
    seconds = time.perf_counter() - t0
    shot(page, "upload_no_click")
    captions = page.locator("#results .caption-label").all_inner_texts()
    assert captions[0].startswith(f"#1 · 1.000 · {LABELS[0]}"), captions
    assert seconds < 30, seconds


def test_a_top_k_change_refreshes_the_results(page, served):
    _, searcher, _ = served
    upload(page, query_image(searcher))
    wait_results(page, K)
    box = page.locator("#k input[type=number]")
    box.fill("7")
    box.press("Enter")
    wait_results(page, 7)
    shot(page, "top_k_7")
    assert len(page.locator("#results .caption-label").all_inner_texts()) == 7


def test_the_courses_model_is_served_and_named(page, served):
    _, searcher, source = served
    assert searcher.embedder.config.trained and "course/model_labels" in source
    status = page.locator("#status").inner_text()
    assert "course/model_labels" in status and ", trained" in status, status
    assert not page.locator("#untrained-notice").is_visible() and page.locator("#train").count() == 0


# ----------------------------------------------------------------------------- "no good match"
def test_no_good_match_only_when_the_calibration_is_supported(page, served):
    _, searcher, _ = served
    unsupported = {"score": 1.01, "method": "top-1 same-class precision", "target": 0.9, "precision": 0.9}
    with calibration(searcher, **unsupported, coverage=0.03, supported=False):
        upload(page, query_image(searcher))
        wait_results(page, K)
        page.wait_for_selector("#calibration-note", state="visible")
        note = page.locator("#calibration-note").inner_text()
        shot(page, "calibration_unsupported")
        assert note.startswith("This model cannot tell good matches from bad ones") and "3%" in note
        assert not page.locator("#no-match").is_visible()
        assert not any("weak" in c for c in page.locator("#results .caption-label").all_inner_texts())
    with calibration(searcher, **unsupported, coverage=0.6, supported=True):
        page.click("#search")
        page.wait_for_selector("#no-match", state="visible")
        wait_results(page, K)
        shot(page, "calibration_supported")
        assert page.locator("#no-match").inner_text().startswith("Low confidence: no good match")
        assert not page.locator("#calibration-note").is_visible()
        assert all(c.endswith("low confidence") for c in page.locator("#results .caption-label").all_inner_texts())


# ----------------------------------------------------------------------------- captions and layout
@pytest.mark.parametrize("width", [1400, 390])
@pytest.mark.parametrize("k", [1, 50])
def test_captions_fit_and_every_result_is_on_screen(browser, served, width, k):
    """Every caption shows in full (wrapped, never cut) and every tile lies inside the viewport."""
    url, searcher, _ = served
    context, page = open_page(browser, url, width, 844 if width < 500 else 900)
    try:
        with calibration(searcher, score=1.01, method="test", coverage=0.6, supported=True):  # longest captions
            box = page.locator("#k input[type=number]")
            box.fill(str(k))
            box.press("Enter")
            upload(page, query_image(searcher))
            n = min(k, len(searcher.index))
            page.wait_for_function(
                f"document.querySelector('#status').innerText.includes(' results') && "
                f"document.querySelectorAll('#results img').length >= {min(n, 20)}"
            )
            page.wait_for_timeout(300)
            shot(page, f"captions_{width}px_k{k}")
            layout = page.evaluate(
                """() => {
                  const r = e => e.getBoundingClientRect();
                  const captions = [...document.querySelectorAll('#results .caption-label')].map(e => ({
                    text: e.innerText, cut: e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1,
                    left: r(e).left, right: r(e).right}));
                  const tiles = [...document.querySelectorAll('#results .thumbnail-item')]
                    .map(e => [r(e).left, r(e).right]);
                  const top = s => r(document.querySelector(s)).top + window.scrollY;
                  return {captions, tiles, width: window.innerWidth,
                          scrollWidth: document.documentElement.scrollWidth, results: top('#results'),
                          queryBottom: r(document.querySelector('#query')).bottom + window.scrollY};
                }"""
            )
    finally:
        context.close()
    expected = [h.caption() for h in searcher.query(query_image(searcher), k=k, collapse_duplicates=None)]
    captions = layout["captions"]
    assert captions and len(captions) == len(layout["tiles"])
    assert all(c["text"].replace("\n", " ").endswith("low confidence") for c in captions), captions[:3]
    assert not [c for c in captions if c["cut"]], [c for c in captions if c["cut"]][:3]
    assert captions[0]["text"].replace("\n", " ").startswith(f"#1 · 1.000 · {LABELS[0]}")
    assert len(captions) <= len(expected)
    assert all(left >= 0 and right <= layout["width"] for left, right in layout["tiles"]), layout["tiles"]
    assert layout["scrollWidth"] <= layout["width"], "the page scrolls sideways"
    assert layout["results"] > layout["queryBottom"] or width > 500
    if width < 500:  # on a phone the results come right after the query and Top-K, before the filters' fold
        assert layout["results"] < 1000, layout
