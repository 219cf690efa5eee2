"""A web page as a person sees it: the system's Chromium (Debian's, `make browser`), headless, driven by
Playwright (never a browser of Playwright's own download). The tests read the MLflow UI with it."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Playwright adds --headless itself.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)
VIEWPORT = {"width": 1600, "height": 1000}


class PageNotShown(AssertionError):
    """The browser could not load the page (a refused login: ``net::ERR_INVALID_AUTH_CREDENTIALS``), or the page
    did not show what was waited for."""


def page_text(
    url: str,
    screenshot: Path,
    until: str | tuple[str, ...],
    basic_auth: tuple[str, str] | None = None,
    timeout: float = 60,
) -> str:
    """The text of the page at ``url`` as drawn (``innerText``: what a person sees, not the markup), once it shows
    ``until`` (each of them, for a tuple) and has stopped changing for a second; a screenshot of it in
    ``screenshot``. ``basic_auth``: the user and password that every request of the page sends to the page's
    server (HTTP basic auth; without it a server asking for a login refuses the page). :class:`PageNotShown` when
    the page does not load or does not show ``until`` within ``timeout`` seconds, with what it shows."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (`make browser` installs Debian's chromium)")
    credentials = None
    if basic_auth is not None:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        credentials = {"username": basic_auth[0], "password": basic_auth[1], "origin": origin, "send": "always"}
    deadline = time.monotonic() + timeout
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_context(viewport=VIEWPORT, http_credentials=credentials).new_page()
            try:
                page.goto(url, timeout=timeout * 1000)
            except PlaywrightError as error:
                raise PageNotShown(f"{url}: {error.message.splitlines()[0]}") from None
            try:
                page.wait_for_function(
                    "until => document.body !== null && until.every(part => document.body.innerText.includes(part))",
                    arg=[until] if isinstance(until, str) else list(until),
                    timeout=max(deadline - time.monotonic(), 1) * 1000,
                )
            except PlaywrightError:
                page.screenshot(path=str(screenshot))
                shown = page.inner_text("body")
                raise PageNotShown(
                    f"{url} did not show {until!r} within {timeout:.0f} s; it shows:\n{shown[-2000:]}"
                ) from None
            text = page.inner_text("body")
            while time.monotonic() < deadline:  # the results of the page's last requests drawn
                time.sleep(1)
                text, before = page.inner_text("body"), text
                if text == before:
                    break
            page.screenshot(path=str(screenshot))
            return text
        finally:
            browser.close()


def value_beside(text: str, label: str) -> str | None:
    """What a page's text shows beside ``label`` (a table's row or a field): the first line after the first line
    that is exactly ``label`` holding a letter or a digit (not a separator such as ``:``), its spaces (no-break
    ones too) as single spaces; None without one."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    if label not in lines:
        return None
    return next((line for line in lines[lines.index(label) + 1 :] if any(c.isalnum() for c in line)), None)


def as_the_ui_shows(number: float) -> str:
    """A metric's value as the MLflow UI writes it (JavaScript's number to text): the shortest digits that read
    back as ``number``, positional, a whole number without ``.0`` (0.14, 0.18333333730697632, 200)."""
    return np.format_float_positional(number, trim="-")
