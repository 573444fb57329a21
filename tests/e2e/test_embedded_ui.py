"""Hubbub inside someone else's app (``docs/examples/embed_app.py``) in Chromium: the chat
page under ``/chat/``, and ``hubbub.js`` imported by a page of another origin."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page

from tests.e2e.test_chat_ui import join, say, wait_messages, wait_state
from tests.servers import ServerProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
TIMEOUT_MS = 15_000
NewPage = Callable[[], Page]


def serve_example(start_server: Callable[..., ServerProcess], *args: str) -> ServerProcess:
    return start_server("--app", "embed_app:app", "--app-dir", str(EXAMPLES), *args)


def test_the_chat_page_works_under_the_prefix(
    start_server: Callable[..., ServerProcess], new_page: NewPage
) -> None:
    server = serve_example(start_server)
    page = new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.goto(server.http("/chat/"))
    page.get_by_label("Display name").fill("ann")
    page.get_by_label("Display name").press("Enter")
    wait_state(page, "connected")  # its WebSocket is /chat/v1/ws: the app has no /v1/ws
    join(page, "order-1")
    say(page, "where is my teapot?")
    wait_messages(page, ["where is my teapot?"])
    # The shop's own route publishes into the room with the Python API.
    request = urllib.request.Request(
        server.http("/orders"),
        data=json.dumps({"item": "teapot"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["room"] == "order-1"
    wait_messages(page, ["where is my teapot?", "Order 1 placed: teapot"])
    assert failed == []


IMPORT = """async ([module, url]) => {
  try {
    const { HubbubClient } = await import(module);
    const client = new HubbubClient(url, { name: "far" });
    client.connect();
    await client.join("lobby");
    const seq = await client.send("lobby", "from another origin");
    client.close();
    return ["ok", seq];
  } catch (error) {
    return [error.name, String(error.message)];
  }
}"""


def test_hubbub_js_imported_by_a_page_of_another_origin(
    start_server: Callable[..., ServerProcess], new_page: NewPage
) -> None:
    other = start_server()  # the page's origin: a server of its own, without CORS
    origin = other.http("").rstrip("/")
    chat = serve_example(start_server, "--cors-origins", origin)
    page = new_page()
    page.goto(other.http("/healthz"))  # a page of that origin with no CSP of its own
    module = chat.http("/chat/static/hubbub.js")
    assert page.evaluate(IMPORT, [module, chat.ws("/chat/v1/ws")]) == ["ok", 1]
    # The other way round the origin is not allowed: the browser refuses the module.
    page.goto(chat.http("/chat/healthz"))
    refused = page.evaluate(IMPORT, [other.http("/static/hubbub.js"), other.ws("/v1/ws")])
    assert refused[0] == "TypeError", refused
