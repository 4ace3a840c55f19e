"""The browser tier: Debian's Chromium driven by Playwright's Python package.

Playwright's own browser download cannot work on these machines, so the tests point
it at the system's Chromium (`/usr/bin/chromium`, installed by `.ci/run` with
apt-get when missing; TALLY_CHROMIUM names another). Where Chromium or Playwright is
missing, every test here is skipped, and says which one.

`tally ui` is started as a real server process (uvicorn on a free loopback port) on a
generated project, and read through the URL it prints, token included.

TALLY_SCREENSHOTS=1 makes the screenshot tests write the README's pictures into
docs/images/ (`make screenshots`); otherwise they go to the test's temp folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("TALLY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The flags that work here: no sandbox (root in a container), no GPU, and nothing that
# phones home, so a test run makes no network request at all.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _why_not() -> str | None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[test]')"
    return None


WHY_NOT = _why_not()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if WHY_NOT is None:
        return
    skip = pytest.mark.skip(reason=f"browser tier skipped: {WHY_NOT}")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


# Per module, not per session: Playwright's driver runs threads, and while any thread
# runs, cas.experiments.index stays serial rather than fork (tests/unit/test_experiment_books.py
# checks the forked path, and runs after this folder).
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="tally-chromium-")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1400, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser):
    p = browser.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.page_errors = errors  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        p.close()


