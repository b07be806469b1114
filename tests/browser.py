"""A real headless Chromium for the dashboard's browser tests and benchmark: Debian's /usr/bin/chromium driven by
Playwright's sync API (never a browser Playwright downloads).

Each launch starts on a fresh, empty profile: Playwright gives every ``launch()`` its own new temporary
user-data-dir (``playwright_chromiumdev_profile-*``, removed on close; it refuses a ``--user-data-dir`` argument),
so no cookie, cache or setting of another run or of a user's own Chromium is ever seen. Every browser context is
a separate cookie jar (one logged-in user each).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ("--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync")


class BrowserMissing(RuntimeError):
    pass


def chromium_args() -> list[str]:
    """The command-line switches: nothing that phones home, no GPU; no sandbox when running as root (Chromium
    refuses to start sandboxed as root)."""
    return [*(("--no-sandbox",) if os.geteuid() == 0 else ()), *ARGS]


@contextlib.contextmanager
def chromium(executable: Path = CHROMIUM) -> Iterator["playwright.sync_api.Browser"]:  # noqa: F821
    """A headless Chromium (closed, with its Playwright driver, on exit). BrowserMissing when ``executable`` is
    not there (install Debian's package: ``apt-get install chromium``; `make test` does)."""
    if not Path(executable).is_file() or not os.access(executable, os.X_OK):
        raise BrowserMissing(f"{executable} not found: the browser tests drive Debian's Chromium (apt-get install "
                             "chromium; `make test` installs it); no browser is downloaded")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserMissing(f"the Python package playwright is not installed ({exc}): `make install`") from exc
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(executable), headless=True, args=chromium_args())
        try:
            yield browser
        finally:
            browser.close()
