"""The real browser of the UI tests (tests/test_browser.py, tests/test_review_browser.py): Debian's
`chromium` (`make setup` installs it with apt-get), driven by Playwright through `executable_path`,
because Playwright's own browser download is not reachable from these machines.

Importing this module skips the importing test module when Playwright is missing; `BROWSER_MARKS` skips
its tests, with the reason, when Chromium is."""
from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
BROWSER_MARKS = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (`make setup` runs apt-get install "
                       "chromium; it failed or apt is unavailable here)"),
    pytest.mark.timeout(2400),  # may set up the shared tiny whole run (tests/operator_run.py)
]


def launch(p, *args: str):
    """A headless Chromium from a `playwright.sync_playwright()` context (no sandbox: tests run as root);
    `args`: more command-line switches (e.g. --host-resolver-rules, to point a name at a local address)."""
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", *args])
