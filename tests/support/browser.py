"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven by Playwright.

Never ``playwright install``: it downloads a browser (no network here).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: Playwright's own download needs the internet
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A fake camera (a test pattern) that is granted without a permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@contextlib.contextmanager
def chromium() -> Iterator:
    """A launched Playwright browser; skips the test (fails it on CI) without ``/usr/bin/chromium``."""
    import pytest

    if not CHROMIUM.is_file():
        msg = "no /usr/bin/chromium: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


# Every Gradio status tracker hidden: no request pending or running. Results already on the page from an
# earlier search satisfy the other waits, so a test that searches again waits for this too.
IDLE = "[...document.querySelectorAll('[data-testid=\"status-tracker\"]')].every(e => e.classList.contains('hide'))"


def wait_idle(page) -> None:
    """Wait until the page has no event pending or running (a click's search has answered)."""
    page.wait_for_function(IDLE)
