"""Messages sent exactly once from the page at ``/``, in Chromium: typed while the server
is down and kept through a reload, sent again after a lost ack, and shared by two tabs of
one user; each stored once (the HTTP API's history), shown once on every page."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Error, Page, Route, WebSocketRoute, expect

from tests.e2e.conftest import API_KEY, NewUser, api, wait_until
from tests.e2e.test_chat_ui import (
    RECONNECT_MS,
    delivered,
    say,
    sign_in,
    wait_members,
    wait_messages,
    wait_state,
)
from tests.servers import ServerProcess

TIMEOUT_MS = 30_000
WS = re.compile(r"/v1/ws\b")


class Relay:
    """A page's /v1/ws connections through Playwright, across its reloads: the frames each
    way that passed, a switch that makes the server unreachable, and ``drop_ack_of``: the
    ack of the first send with that text is lost, and its connection with it."""

    def __init__(self, page: Page, drop_ack_of: str | None = None) -> None:
        self.sent: list[dict[str, Any]] = []  # page -> server
        self.got: list[dict[str, Any]] = []  # server -> page
        self.down = False
        self.drop_ack_of = drop_ack_of
        self.routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        page.route_web_socket(WS, self._relay)

    def _relay(self, socket: WebSocketRoute) -> None:
        if self.down:
            socket.close()
            return
        upstream = socket.connect_to_server()

        def to_server(message: str | bytes) -> None:
            self.sent.append(json.loads(message))
            upstream.send(message)

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "ack" and frame.get("ref") in self._dropping():
                self.drop_ack_of = None  # the first one only
                socket.close()
                upstream.close()
                return
            self.got.append(frame)
            socket.send(message)

        socket.on_message(to_server)
        upstream.on_message(to_page)
        self.routes.append((socket, upstream))

    def _dropping(self) -> set[str]:
        if self.drop_ack_of is None:
            return set()
        return {f["ref"] for f in self.sends(self.drop_ack_of)}

    def cut(self) -> None:
        """The server is unreachable from now on: every connection closes, new ones too."""
        self.down = True
        for socket, upstream in self.routes:
            socket.close()
            upstream.close()

    def sends(self, text: str) -> list[dict[str, Any]]:
        return [f for f in self.sent if f["type"] == "send" and f["text"] == text]

    def acks(self, refs: set[str]) -> list[dict[str, Any]]:
        return [f for f in self.got if f["type"] == "ack" and f.get("ref") in refs]


# A page that Playwright's route fulfilled has no address Chromium could check: taken as
# a public site's, its WebSocket to 127.0.0.1 needs this permission.
FROM_CACHE = {"permissions": ["local-network-access"]}


def serve_from_cache(page: Page) -> None:
    """What the page loads comes from the server, or while it is down from what came last
    time: so the page reloads with no server at all. (Its context needs ``FROM_CACHE``.)"""
    cache: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def serve(route: Route) -> None:
        url = route.request.url
        try:
            response = route.fetch()
        except Error:
            if url not in cache:
                route.abort()
                return
            status, headers, body = cache[url]
            route.fulfill(status=status, headers=headers, body=body)
            return
        cache[url] = (response.status, response.headers, response.body())
        route.fulfill(response=response)

    page.route("**/*", serve)


def stored(server: ServerProcess, room: str) -> list[str]:
    """The texts of the room's messages as the HTTP API has them."""
    return [m["text"] for m in api(server, "GET", f"/api/v1/rooms/{room}/messages")["messages"]]


def pending(page: Page) -> Any:
    return page.locator("#messages li.pending .text")


def shown_once(page: Page, text: str) -> None:
    exact = page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$"))
    expect(delivered(page).filter(has=exact)).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.locator("#messages li.pending")).to_have_count(0, timeout=TIMEOUT_MS)


def unsent_kept(page: Page) -> list[str]:
    """The outbox items in the page's localStorage."""
    keys: list[str] = page.evaluate(
        "() => Object.keys(localStorage).filter((k) => k.startsWith('hubbub.outbox.'))"
    )
    return keys


# -- tests -----------------------------------------------------------------------------


def test_a_message_typed_while_the_server_is_down_survives_a_reload_and_is_sent_once(
    start_server: Callable[..., ServerProcess], new_user: NewUser, tmp_path: Path
) -> None:
    args = ("--store-url", f"sqlite:///{tmp_path}/chat.db", "--api-key", API_KEY)
    first = start_server(*args)
    ann, bob = new_user(**FROM_CACHE), new_user()
    serve_from_cache(ann)
    sign_in(ann, first, "ann", "ops")
    sign_in(bob, first, "bob", "ops")
    wait_members(ann, ["ann", "bob"])
    say(ann, "before")
    wait_messages(bob, ["before"])

    first.signal(signal.SIGKILL)
    first.wait()
    for page in (ann, bob):
        wait_state(page, "reconnecting")
    say(ann, "typed while down")
    expect(pending(ann)).to_have_text(["typed while down"], timeout=TIMEOUT_MS)
    assert len(unsent_kept(ann)) == 1
    ann.reload()  # no server to load it from, nor to connect to: still there, pending
    expect(pending(ann)).to_have_text(["typed while down"], timeout=TIMEOUT_MS)
    expect(ann.locator("#room-title")).to_have_text("#ops")
    assert ann.locator("body").get_attribute("data-state") != "connected"

    second = start_server(*args, "--port", str(first.port))
    for page in (ann, bob):
        wait_state(page, "connected", RECONNECT_MS)
    wait_messages(bob, ["before", "typed while down"], TIMEOUT_MS)
    wait_messages(ann, ["before", "typed while down"], TIMEOUT_MS)
    assert stored(second, "ops") == ["before", "typed while down"]
    assert unsent_kept(ann) == []
    # And it stays once: nothing more is sent after another reload.
    ann.reload()
    wait_state(ann, "connected", RECONNECT_MS)
    wait_messages(ann, ["before", "typed while down"], TIMEOUT_MS)
    say(bob, "after")
    wait_messages(ann, ["before", "typed while down", "after"], TIMEOUT_MS)
    assert stored(second, "ops") == ["before", "typed while down", "after"]


def test_a_send_whose_ack_is_lost_is_sent_again_under_its_id_and_shown_once(
    api_server: ServerProcess, new_user: NewUser
) -> None:
    ann, bob = new_user(), new_user()
    relay = Relay(ann, drop_ack_of="lost ack")
    sign_in(ann, api_server, "ann", "ops")
    sign_in(bob, api_server, "bob", "ops")
    wait_members(ann, ["ann", "bob"])

    say(ann, "lost ack")  # stored; its ack never reaches the page, whose connection drops
    wait_messages(bob, ["lost ack"], TIMEOUT_MS)
    wait_until(ann, lambda: len(relay.sends("lost ack")) == 2, "a resend", RECONNECT_MS)
    first, again = relay.sends("lost ack")
    assert first["id"] == again["id"] and re.fullmatch(r"[0-9a-f-]{36}", first["id"])
    wait_until(ann, lambda: bool(relay.acks({again["ref"]})), "the repeat's ack", TIMEOUT_MS)
    [ack] = relay.acks({first["ref"], again["ref"]})
    assert ack["repeat"] is True
    shown_once(ann, "lost ack")
    wait_messages(ann, ["lost ack"], TIMEOUT_MS)
    assert ann.evaluate("window.hubbubDelivered.ops") == [ack["seq"]]

    say(ann, "next")  # a new message has an id of its own
    wait_messages(bob, ["lost ack", "next"], TIMEOUT_MS)
    wait_messages(ann, ["lost ack", "next"], TIMEOUT_MS)
    [following] = relay.sends("next")
    assert following["id"] != first["id"]
    assert stored(api_server, "ops") == ["lost ack", "next"]
    assert unsent_kept(ann) == []


def test_two_tabs_of_one_user_send_and_show_a_queued_message_once(
    api_server: ServerProcess, new_user: NewUser
) -> None:
    ann = new_user()
    ann_relay = Relay(ann)
    sign_in(ann, api_server, "ann", "ops")
    wait_members(ann, ["ann"])  # welcomed: the guest token is kept for the second tab
    tab = new_user(tab_of=ann)
    tab_relay = Relay(tab)
    tab.goto(api_server.http("/"))  # ann again, in #ops
    wait_state(tab, "connected")
    expect(tab.locator("#room-title")).to_have_text("#ops")
    bob = new_user()
    sign_in(bob, api_server, "bob", "ops")
    wait_members(tab, ["ann", "bob"])

    for relay in (ann_relay, tab_relay):
        relay.cut()
    say(ann, "queued in one tab")
    expect(pending(ann)).to_have_text(["queued in one tab"], timeout=TIMEOUT_MS)
    tab.reload()  # the other tab restores it from the storage they share: pending there too
    expect(pending(tab)).to_have_text(["queued in one tab"], timeout=TIMEOUT_MS)
    expect(pending(ann)).to_have_text(["queued in one tab"])

    for relay in (ann_relay, tab_relay):
        relay.down = False
    for page in (ann, tab, bob):
        wait_messages(page, ["queued in one tab"], TIMEOUT_MS)
        shown_once(page, "queued in one tab")

    # Both tabs sent it, under one id; the server stored it once and said so to the second.
    def acks() -> list[dict[str, Any]]:
        return [
            ack
            for relay in (ann_relay, tab_relay)
            for ack in relay.acks({f["ref"] for f in relay.sends("queued in one tab")})
        ]

    wait_until(ann, lambda: len(acks()) == 2, "an ack in each tab", TIMEOUT_MS)
    sends = ann_relay.sends("queued in one tab") + tab_relay.sends("queued in one tab")
    assert len(sends) == 2 and len({f["id"] for f in sends}) == 1
    assert len({ack["seq"] for ack in acks()}) == 1
    assert sorted(bool(ack.get("repeat")) for ack in acks()) == [False, True]
    assert stored(api_server, "ops") == ["queued in one tab"]
    assert unsent_kept(ann) == []
    seq = acks()[0]["seq"]
    assert ann.evaluate("window.hubbubDelivered.ops") == [seq]
    # (The reloaded tab has it live, or from the history if it came before its join.)
    assert tab.evaluate("window.hubbubDelivered.ops ?? []") in ([seq], [])
