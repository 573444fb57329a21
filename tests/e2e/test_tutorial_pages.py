"""The FastAPI tutorial's own three HTML pages, unchanged, against ``hubbub serve`` on :8000.

The pages are read from the tutorial text in ``../shared/seed/`` (not copied into the
project) and opened from disk, as a reader of the tutorial would; they dial
``ws://localhost:8000`` themselves.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import require
from tests.servers import ServerProcess

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed"
TUTORIAL = Path(os.environ.get("HUBBUB_TUTORIAL", SEED / "fastapi-websockets-tutorial.pt.txt"))
TIMEOUT_MS = 10_000


def tutorial_pages() -> dict[str, str]:
    """The tutorial's three distinct pages: echo, items and chat."""
    require(TUTORIAL.exists(), f"the tutorial text is not at {TUTORIAL} (set HUBBUB_TUTORIAL)")
    pages: dict[str, str] = {}
    for html in re.findall(r'html = """\n(.*?)"""', TUTORIAL.read_text(), re.DOTALL):
        kind = "items" if "/items/" in html else "chat" if "/ws/${client_id}" in html else "echo"
        pages.setdefault(kind, html)
    assert set(pages) == {"echo", "items", "chat"}
    return pages


@pytest.fixture(scope="module")
def server_on_8000() -> Iterator[ServerProcess]:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.fail("port 8000 is taken; the tutorial's pages only dial localhost:8000")
    server = ServerProcess()
    server.args[server.args.index("--port") + 1] = "8000"
    server.start()
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.log


@pytest.fixture(scope="module")
def page_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tutorial")
    urls = {}
    for kind, html in tutorial_pages().items():
        path = folder / f"{kind}.html"
        path.write_text(html)
        urls[kind] = path.as_uri()
    return urls


def messages(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [li.strip() for li in page.locator("#messages li").all_inner_texts()]


def wait_open(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function("ws !== null && ws.readyState === 1", timeout=TIMEOUT_MS)


def send(page, text: str) -> None:  # type: ignore[no-untyped-def]
    # Click Send: on the items page Enter would "click" the form's first button, Connect.
    page.fill("#messageText", text)
    page.click("button:has-text('Send')")


def wait_messages(page, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "n => document.querySelectorAll('#messages li').length >= n",
        arg=len(expected),
        timeout=TIMEOUT_MS,
    )
    assert messages(page) == expected


def test_echo_page(
    server_on_8000: ServerProcess, page_files: dict[str, str], new_page: Callable[[], object]
) -> None:
    page = new_page()
    page.goto(page_files["echo"])  # type: ignore[attr-defined]
    wait_open(page)
    send(page, "hello")
    send(page, "<b>world</b>")
    wait_messages(page, ["Message text was: hello", "Message text was: <b>world</b>"])


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (
            "some-key-token",
            [
                "Session cookie or query token value is: some-key-token",
                "Message text was: hi, for item ID: foo",
            ],
        ),
        (
            "abc&q=42",
            [  # the token field is pasted into the URL, so q rides along
                "Session cookie or query token value is: abc",
                "Query parameter q is: 42",
                "Message text was: hi, for item ID: foo",
            ],
        ),
    ],
)
def test_items_page(
    server_on_8000: ServerProcess,
    page_files: dict[str, str],
    new_page: Callable[[], object],
    token: str,
    expected: list[str],
) -> None:
    page = new_page()
    page.goto(page_files["items"])  # type: ignore[attr-defined]
    page.fill("#token", token)  # type: ignore[attr-defined]
    page.click("text=Connect")  # type: ignore[attr-defined]
    wait_open(page)
    send(page, "hi")
    wait_messages(page, expected)


def test_chat_page_between_two_tabs(
    server_on_8000: ServerProcess, page_files: dict[str, str], new_page: Callable[[], object]
) -> None:
    first = new_page()
    first.goto(page_files["chat"])  # type: ignore[attr-defined]
    wait_open(first)
    second = new_page()
    second.goto(page_files["chat"])  # type: ignore[attr-defined]
    wait_open(second)
    first_id = first.inner_text("#ws-id")  # type: ignore[attr-defined]
    second_id = second.inner_text("#ws-id")  # type: ignore[attr-defined]
    assert first_id != second_id

    send(first, "hi there")
    wait_messages(first, ["You wrote: hi there", f"Client #{first_id} says: hi there"])
    wait_messages(second, [f"Client #{first_id} says: hi there"])
    send(second, "hello back")
    wait_messages(
        second,
        [
            f"Client #{first_id} says: hi there",
            "You wrote: hello back",
            f"Client #{second_id} says: hello back",
        ],
    )
    second.close()  # type: ignore[attr-defined]
    wait_messages(
        first,
        [
            "You wrote: hi there",
            f"Client #{first_id} says: hi there",
            f"Client #{second_id} says: hello back",
            f"Client #{second_id} left the chat",
        ],
    )
