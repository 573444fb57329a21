"""Headless Chromium (Debian's, driven by Playwright) for the browser tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
# Without the background-networking flags Chromium keeps dialling out on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require(condition: bool, reason: str) -> None:
    """Skip on a developer's machine, fail in CI: a browser test never silently passes."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# Module scope: Playwright's sync API keeps an event loop running in this thread while it
# is open, which would break the asyncio tests of other modules.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    require(shutil.which(CHROMIUM) is not None, f"{CHROMIUM} is not installed (scripts/browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class PageRecorder:
    """Keeps each page's console; on a failed test, a screenshot per page and the log
    under test-results/<test>/."""

    def __init__(self) -> None:
        self.pages: list[Any] = []
        self.console: list[str] = []

    def watch(self, page: Any) -> Any:
        index = len(self.pages)  # the page's own number, fixed now
        page.on("console", lambda msg: self.console.append(f"[{index}] {msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.console.append(f"[{index}] pageerror: {exc}"))
        self.pages.append(page)
        return page

    def save_if_failed(self, request: pytest.FixtureRequest) -> None:
        failed = getattr(request.node, "rep_call", None)
        if failed is None or not failed.failed:
            return
        out = RESULTS / request.node.name
        out.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(self.pages):
            if not page.is_closed():
                page.screenshot(path=str(out / f"page{i}.png"), full_page=True)
        (out / "console.log").write_text("\n".join(self.console))


@pytest.fixture
def new_page(browser, request):  # type: ignore[no-untyped-def]
    """Open pages in a fresh context; on failure keep a screenshot and the console log."""
    context = browser.new_context()
    recorder = PageRecorder()
    yield lambda: recorder.watch(context.new_page())
    recorder.save_if_failed(request)
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
