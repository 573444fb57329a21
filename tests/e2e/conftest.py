"""Headless Chromium (Debian's, driven by Playwright) for the browser tests."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

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


NewUser = Callable[..., "Page"]  # (tab_of=None, **context_options)


@pytest.fixture
def new_user(browser: Browser, request: pytest.FixtureRequest) -> Iterator[NewUser]:
    """A page in a browser context of its own per call (its own localStorage: one user
    each), or with ``tab_of=page`` another tab of that page's user; on failure, like
    ``new_page``, a screenshot per page and the console log."""
    contexts = []
    recorder = PageRecorder()

    def open_user(tab_of: Page | None = None, **context_options: Any) -> Page:
        if tab_of is not None:
            tab: Page = recorder.watch(tab_of.context.new_page())
            return tab
        context = browser.new_context(**context_options)
        contexts.append(context)
        page: Page = recorder.watch(context.new_page())
        return page

    yield open_user
    recorder.save_if_failed(request)
    for context in contexts:
        context.close()


def wait_js(page: Page, predicate: str, arg: object, timeout_ms: float) -> None:
    """Wait until ``predicate(arg)`` is true in the page. Not ``wait_for_function``: the
    lowest Playwright allowed (1.48) re-evaluates its predicate with ``eval``, which the
    page's Content-Security-Policy refuses."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(predicate, arg):
        assert time.monotonic() < deadline, f"no {predicate} ({arg}) within {timeout_ms} ms"
        page.wait_for_timeout(50)


def wait_until(page: Page, condition: Callable[[], bool], what: str, timeout_ms: float) -> None:
    """Wait until ``condition()`` holds for what the test saw of ``page`` (frames its
    routes recorded): checked again each time the page had a moment to run."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_ms} ms"
        page.wait_for_timeout(50)


API_KEY = "api-key-for-browser-tests"


@pytest.fixture
def api_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose HTTP API takes ``API_KEY`` (to give roles, turn receipts on)."""
    return start_server("--api-key", API_KEY)


def api(server: ServerProcess, method: str, path: str, body: Any = None) -> Any:
    """Call the HTTP API of an ``api_server``; its JSON answer (an HTTP error fails)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.http(path), data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {API_KEY}")
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
