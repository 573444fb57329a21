"""``web/hubbub.js`` on its own, in Chromium: closing, and the exactly-once check."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from playwright.sync_api import Page, WebSocketRoute, expect

from tests.servers import ServerProcess

TIMEOUT_MS = 10_000
NewPage = Callable[[], Page]

CLOSING = """async () => {
  const { HubbubClient, defaultUrl } = await import("/static/hubbub.js");
  const outcome = (promise) => promise.then((value) => ["ok", value], (e) => [e.name, e.code]);

  const client = new HubbubClient(defaultUrl(), { name: "probe" });
  const states = [];
  client.on("state", ({ state }) => states.push(state));
  const joined = client.join("r");  // asked before connecting: waits, then goes
  client.connect();
  const members = (await joined).members;
  const first = await outcome(client.send("r", "one"));
  client.close();
  const afterClose = await outcome(client.send("r", "two"));

  const idle = new HubbubClient(defaultUrl(), { name: "idle" });
  idle.join("r");
  const queued = outcome(idle.send("r", "never connected"));  // waits for a connection
  idle.close();
  const unjoined = await outcome(new HubbubClient(defaultUrl()).send("nowhere", "x"));
  return { states, members, first, afterClose, queued: await queued, unjoined };
}"""


def test_a_closed_client_rejects_what_it_holds_and_what_comes_later(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = new_page()
    page.goto(server.http("/"))
    result = page.evaluate(CLOSING)
    assert result == {
        "states": ["connecting", "connected", "offline"],
        "members": ["probe"],
        "first": ["ok", 1],
        "afterClose": ["HubbubError", "closed"],
        "queued": ["HubbubError", "closed"],
        "unjoined": ["HubbubError", "not_joined"],
    }


def test_a_message_at_or_below_the_last_seq_is_not_delivered_again(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = new_page()
    sockets: list[WebSocketRoute] = []

    def relay(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    page.goto(server.http("/"))
    page.get_by_label("Display name").fill("ann")
    page.get_by_label("Display name").press("Enter")
    texts = page.locator("#messages li.message:not(.pending) .text")
    message = page.get_by_label("Message", exact=True)
    message.fill("one")
    message.press("Enter")
    expect(texts).to_have_text(["one"], timeout=TIMEOUT_MS)

    stale = {"type": "message", "room": "lobby", "from": "mallory", "ts": "2026-01-01T00:00:00Z"}
    for seq in (1, 0):  # a repeat of seq 1, and one from before it
        sockets[-1].send(json.dumps({**stale, "seq": seq, "text": f"stale {seq}"}))
    message.fill("two")
    message.press("Enter")
    expect(texts).to_have_text(["one", "two"], timeout=TIMEOUT_MS)
    assert page.evaluate("window.hubbubDelivered.lobby") == [1, 2]
