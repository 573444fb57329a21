"""The chat page at ``/`` and its client (``web/app.js``, ``web/hubbub.js``) in Chromium,
against real ``hubbub serve`` processes."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, WebSocketRoute, expect
from websockets.sync.client import connect

from tests.e2e.conftest import RESULTS, NewUser, wait_js
from tests.servers import ServerProcess

TIMEOUT_MS = 15_000
# Longer than the client's backoff cap (5 s) plus a server's start-up.
RECONNECT_MS = 30_000
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"

# -- what a user does and sees ---------------------------------------------------------


def sign_in(page: Page, server: ServerProcess, name: str, room: str | None = None) -> None:
    page.goto(server.http("/"))
    page.get_by_label("Display name").fill(name)
    page.get_by_label("Display name").press("Enter")
    wait_state(page, "connected")
    if room is not None:
        join(page, room)


def join(page: Page, room: str) -> None:
    page.get_by_label("Join or create a room").fill(room)
    page.get_by_label("Join or create a room").press("Enter")
    expect(page.locator("#room-title")).to_have_text(f"#{room}", timeout=TIMEOUT_MS)


def say(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def wait_state(page: Page, state: str, timeout: int = TIMEOUT_MS) -> None:
    expect(page.locator("body")).to_have_attribute("data-state", state, timeout=timeout)


def delivered(page: Page) -> Any:
    """Messages on the page (not pending ones), top to bottom."""
    return page.locator("#messages li.message:not(.pending)")


def wait_messages(page: Page, texts: list[str], timeout: int = TIMEOUT_MS) -> None:
    """Wait until the page shows exactly these messages, in this order, nothing pending."""
    expect(delivered(page).locator(".text")).to_have_text(texts, timeout=timeout)
    expect(page.locator("#messages li.pending")).to_have_count(0, timeout=timeout)


def authors(page: Page) -> list[str]:
    return delivered(page).locator(".author").all_text_contents()


def wait_members(page: Page, names: list[str]) -> None:
    expect(page.locator("#member-list .name")).to_have_text(names, timeout=TIMEOUT_MS)


def seqs(page: Page, room: str) -> list[int]:
    """The seqs the client delivered to the page for ``room``, in delivery order."""
    value: list[int] = page.evaluate("room => window.hubbubDelivered[room] ?? []", room)
    return value


# -- tests -----------------------------------------------------------------------------


def test_two_users_chat_and_a_third_sees_the_history(
    server: ServerProcess, new_user: NewUser
) -> None:
    ann, bob = new_user(), new_user()
    sign_in(ann, server, "ann", "ops")
    sign_in(bob, server, "bob", "ops")
    for page in (ann, bob):  # bob from `joined`; ann hears of bob from `presence`
        wait_members(page, ["ann", "bob"])
    say(ann, "hello bob")
    wait_messages(bob, ["hello bob"])
    say(bob, "hi ann")
    say(bob, "how are you?")
    texts = ["hello bob", "hi ann", "how are you?"]
    for page in (ann, bob):
        wait_messages(page, texts)
        assert authors(page) == ["ann", "bob", "bob"]
        assert seqs(page, "ops") == [1, 2, 3]
    assert ann.locator("#messages li.own .text").all_text_contents() == ["hello bob"]
    assert ann.locator("time").first.get_attribute("datetime")

    carol = new_user()
    sign_in(carol, server, "carol", "ops")
    wait_messages(carol, texts)  # from history: nothing was delivered live
    assert seqs(carol, "ops") == []
    wait_members(carol, ["ann", "bob", "carol"])
    say(carol, "late, sorry")
    for page in (ann, bob, carol):
        wait_messages(page, [*texts, "late, sorry"])
        wait_members(page, ["ann", "bob", "carol"])
    carol.close()
    for page in (ann, bob):
        wait_members(page, ["ann", "bob"])


def test_both_pages_resume_exactly_once_after_the_server_is_killed_and_restarted(
    start_server: Callable[..., ServerProcess], new_user: NewUser, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/x.db"
    first = start_server("--store-url", store)
    ann, bob = new_user(), new_user()
    sign_in(ann, first, "ann", "ops")
    sign_in(bob, first, "bob", "ops")
    say(ann, "one")
    wait_messages(bob, ["one"])
    say(bob, "two")
    wait_messages(ann, ["one", "two"])

    first.signal(signal.SIGKILL)
    say(ann, "three, as the server dies")  # on a dying socket or queued: either way once
    first.wait()
    for page in (ann, bob):
        wait_state(page, "reconnecting")
    say(ann, "four, while it is down")
    say(ann, "five, still down")
    expect(ann.locator("#messages li.pending .text")).to_contain_text(
        ["four, while it is down", "five, still down"]
    )
    assert ann.locator("#state").text_content() == "Reconnecting…"

    start_server("--store-url", store, "--port", str(first.port))
    for page in (ann, bob):
        wait_state(page, "connected", RECONNECT_MS)
    say(ann, "six, after")
    say(bob, "seven, after")
    texts = [
        "one",
        "two",
        "three, as the server dies",
        "four, while it is down",
        "five, still down",
        "six, after",
    ]
    for page in (ann, bob):
        expect(delivered(page).locator(".text")).to_have_count(7, timeout=TIMEOUT_MS)
        shown = delivered(page).locator(".text").all_text_contents()
        # bob's "seven" and ann's "six" race; everything else has one order
        assert sorted(shown[5:]) == ["seven, after", "six, after"]
        assert shown[:5] == texts[:5]
        assert seqs(page, "ops") == [1, 2, 3, 4, 5, 6, 7]
        expect(page.locator("#messages li.pending")).to_have_count(0)
    assert delivered(ann).locator(".text").all_text_contents() == (
        delivered(bob).locator(".text").all_text_contents()
    )


def test_reload_brings_back_name_room_and_history(server: ServerProcess, new_user: NewUser) -> None:
    page = new_user()
    sign_in(page, server, "dora", "notes")
    join(page, "other")
    join(page, "notes")
    for text in ["first", "second", "third"]:
        say(page, text)
    wait_messages(page, ["first", "second", "third"])

    page.reload()
    wait_state(page, "connected")
    expect(page.locator("#me")).to_have_text("You are dora")
    expect(page.locator("#room-title")).to_have_text("#notes")
    expect(page.locator("#room-list .open")).to_have_text(["#lobby", "#notes", "#other"])
    wait_messages(page, ["first", "second", "third"])
    wait_members(page, ["dora"])
    say(page, "fourth")
    wait_messages(page, ["first", "second", "third", "fourth"])


def test_a_guest_stays_itself_and_another_person_cannot_take_its_name(
    server: ServerProcess, new_user: NewUser
) -> None:
    zed = new_user()
    sign_in(zed, server, "Zed", "lobby")
    # The guest token the server signed, kept once its welcome is in (after the open).
    wait_js(zed, "() => localStorage.getItem('hubbub.guest') !== null", None, TIMEOUT_MS)
    # A second tab of the same browser is the same guest: one member, no refusal.
    tab = zed.context.new_page()
    tab.goto(server.http("/"))
    wait_state(tab, "connected")
    wait_members(tab, ["Zed"])
    say(tab, "from my second tab")
    wait_messages(zed, ["from my second tab"])
    # Someone else typing the same name is sent back to choose another.
    other = new_user()
    other.goto(server.http("/"))
    other.get_by_label("Display name").fill("zed")
    other.get_by_label("Display name").press("Enter")
    expect(other.locator("#signin-error")).to_contain_text(
        "choose another name", timeout=TIMEOUT_MS
    )
    expect(other.get_by_label("Display name")).to_be_focused()
    other.get_by_label("Display name").fill("Ygg")
    other.get_by_label("Display name").press("Enter")
    wait_state(other, "connected")
    wait_members(zed, ["Ygg", "Zed"])
    tab.close()


def test_scrolling_to_the_top_loads_older_messages(
    start_server: Callable[..., ServerProcess], new_user: NewUser
) -> None:
    server = start_server("--rate-per-second", "1000", "--rate-burst", "1000")
    with connect(server.ws("/v1/ws?name=bot")) as bot:
        bot.send(json.dumps({"type": "join", "room": "log"}))
        for i in range(1, 121):
            bot.send(json.dumps({"type": "send", "room": "log", "text": f"line {i}", "ref": i}))
        acks = 0
        while acks < 120:
            frame = json.loads(bot.recv(10))
            assert frame["type"] != "error", frame
            acks += frame["type"] == "ack"

    page = new_user(viewport={"width": 800, "height": 600})
    sign_in(page, server, "eve", "log")
    expect(delivered(page)).to_have_count(50, timeout=TIMEOUT_MS)  # the newest page
    assert delivered(page).locator(".text").last.text_content() == "line 120"
    for expected in (100, 120):  # each scroll to the top brings one more page
        page.locator("#scroller").evaluate("box => { box.scrollTop = 0; }")
        expect(delivered(page)).to_have_count(expected, timeout=TIMEOUT_MS)
    expect(page.locator("#start")).to_be_visible()
    assert delivered(page).locator(".text").all_text_contents() == [
        f"line {i}" for i in range(1, 121)
    ]


def test_markup_in_messages_is_shown_as_text(server: ServerProcess, new_user: NewUser) -> None:
    payloads = [
        "<img src=x onerror=alert(1)>",
        "<script>alert(2)</script>",
        '"><svg onload=alert(3)>',
        "&lt;b&gt; stays &amp; too",
    ]
    ann, bob = new_user(), new_user()
    dialogs: list[str] = []
    for page in (ann, bob):
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(ann, server, "ann", "lobby")
    sign_in(bob, server, "bob", "lobby")
    for text in payloads:
        say(ann, text)
    for page in (ann, bob):
        wait_messages(page, payloads)
        assert page.locator("#messages img, #messages script, #messages svg").count() == 0
    bob.reload()  # and once more from history
    wait_messages(bob, payloads)
    assert bob.locator("#messages img, #messages script, #messages svg").count() == 0
    assert dialogs == []


def test_presence_frames_update_the_member_list(server: ServerProcess, new_user: NewUser) -> None:
    # The server does not send presence yet: put frames into the page's own socket.
    page = new_user()
    sockets: list[WebSocketRoute] = []

    def relay(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    sign_in(page, server, "ann", "lobby")
    wait_members(page, ["ann"])

    def presence(joined: list[str], left: list[str]) -> None:
        frame = {"type": "presence", "room": "lobby", "joined": joined, "left": left}
        sockets[-1].send(json.dumps(frame))

    presence(["zoe", "<b>yann</b>"], [])
    wait_members(page, ["<b>yann</b>", "ann", "zoe"])
    presence([], ["zoe"])
    wait_members(page, ["<b>yann</b>", "ann"])
    expect(page.locator("#members-title")).to_have_text("Members (2)")


def test_requests_wait_for_their_room_and_a_refused_join_is_tried_again(
    server: ServerProcess, new_user: NewUser
) -> None:
    page = new_user()
    from_page: list[dict[str, Any]] = []
    held: list[str] = []
    sockets: list[WebSocketRoute] = []

    def relay(socket: WebSocketRoute) -> None:
        upstream = socket.connect_to_server()

        def forward(message: str | bytes) -> None:
            frame = json.loads(message)
            from_page.append(frame)
            if frame["type"] == "join" and frame["room"] == "ops" and not held:
                held.append(str(message))  # the first join of ops gets no answer, yet
            else:
                upstream.send(message)

        socket.on_message(forward)
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    sign_in(page, server, "ann")
    expect(page.locator("#start")).to_be_visible()  # lobby's history is in: nothing in flight
    join(page, "ops")
    say(page, "waits for the join")
    expect(page.locator("#messages li.pending .text")).to_have_text(["waits for the join"])
    assert held
    assert [f["type"] for f in from_page if f.get("room") == "ops"] == ["join"]

    refusal = {"type": "error", "code": "unavailable", "message": "store down; retry"}
    sockets[-1].send(json.dumps(refusal))
    wait_messages(page, ["waits for the join"])
    expect(page.locator("#notice")).to_be_empty()
    # (The page also marks what it shows as read, and says when its user types.)
    ops = [f["type"] for f in from_page if f.get("room") == "ops"]
    assert [kind for kind in ops if kind not in ("read", "typing")] == [
        "join",
        "join",
        "history",
        "send",
    ]


def test_the_sign_in_form_comes_back_when_the_server_refuses_who_we_are(
    server: ServerProcess, new_user: NewUser
) -> None:
    page = new_user()
    sockets: list[WebSocketRoute] = []

    def relay(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    sign_in(page, server, "ann")
    expired = {"type": "error", "code": "token_expired", "message": "the token has expired"}
    sockets[-1].send(json.dumps(expired))
    sockets[-1].close(code=1008, reason="token_expired")
    expect(page.get_by_label("Display name")).to_be_focused()
    expect(page.locator("#signin-error")).to_have_text("The server said no: the token has expired")
    expect(page.get_by_label("Display name")).to_have_value("ann")
    assert page.evaluate("localStorage.getItem('hubbub.name')") is None


def test_keyboard_only_at_phone_width(server: ServerProcess, new_user: NewUser) -> None:
    page = new_user(viewport={"width": 360, "height": 640}, is_mobile=True, has_touch=True)
    page.goto(server.http("/"))
    expect(page.get_by_label("Display name")).to_be_focused()
    page.keyboard.type("kim")
    page.keyboard.press("Enter")
    wait_state(page, "connected")
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    page.keyboard.type("hello from a phone")
    page.keyboard.press("Enter")
    wait_messages(page, ["hello from a phone"])

    # On a phone the room list slides in over the messages: back to its button, open it.
    for _ in range(20):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.id") == "show-rooms":
            break
    toggle = page.get_by_role("button", name="Rooms")
    expect(toggle).to_be_focused()
    expect(page.get_by_label("Join or create a room")).to_be_hidden()  # closed: not tabbable
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    for _ in range(20):  # through the open list to the room field
        if page.evaluate("document.activeElement.id") == "room-name":
            break
        page.keyboard.press("Tab")
    room_field = page.get_by_label("Join or create a room")
    expect(room_field).to_be_focused()
    outline = room_field.evaluate("field => getComputedStyle(field).outlineStyle")
    assert outline != "none"  # the focus is visible
    expect(room_field).to_be_in_viewport(ratio=1)  # once the list has slid in
    page.keyboard.type("mobile")
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text("#mobile")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(room_field).to_be_hidden()
    page.keyboard.type("in the new room")
    page.keyboard.press("Enter")
    wait_messages(page, ["in the new room"])

    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide at 360 px"
    for selector in ("#message", "#send", "#show-rooms", "#show-members", "#state"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, selector
    # The messages come first: they fill the width, the lists are off screen.
    scroller = page.locator("#scroller").bounding_box()
    assert scroller is not None and scroller["width"] > 300


def test_screenshot_of_two_users_chatting(server: ServerProcess, new_user: NewUser) -> None:
    """The picture in the README: written to docs/ when missing or when
    ``HUBBUB_SCREENSHOT=1`` (so test runs leave the work tree alone), else to test-results/."""
    size = {"width": 1100, "height": 640}
    ann = new_user(viewport=size, locale="en-GB", timezone_id="UTC")
    bob = new_user(viewport=size, locale="en-GB", timezone_id="UTC")
    sign_in(ann, server, "ann", "random")
    sign_in(bob, server, "bob", "design")
    join(ann, "design")
    lines = [
        (ann, "Morning! Did the reconnect fix land?"),
        (bob, "It did: kill the server mid-sentence and nothing is lost or doubled."),
        (ann, "Even what I type while it is down?"),
        (bob, "Shown as pending, sent when it is back, acked once."),
        (ann, "<b>and this</b> stays text, as typed"),
    ]
    for i, (page, text) in enumerate(lines):
        say(page, text)
        wait_messages(ann, [t for _, t in lines[: i + 1]])
    wait_messages(bob, [t for _, t in lines])
    wait_members(ann, ["ann", "bob"])
    SCREENSHOT.parent.mkdir(exist_ok=True)
    if SCREENSHOT.exists() and os.environ.get("HUBBUB_SCREENSHOT") != "1":
        RESULTS.mkdir(exist_ok=True)
        target = RESULTS / "screenshot.png"
    else:
        target = SCREENSHOT
    ann.locator("#message").blur()
    ann.screenshot(path=str(target))
    assert target.stat().st_size > 10_000


def test_the_chat_works_with_compression_on(
    start_server: Callable[..., ServerProcess], new_user: NewUser
) -> None:
    server = start_server("--compression")
    ann, bob = new_user(), new_user()
    sign_in(ann, server, "ann", "ops")
    sign_in(bob, server, "bob", "ops")
    # Chromium offers permessage-deflate; what it negotiates for the UI's socket it
    # negotiates for this one.
    extensions = ann.evaluate(
        """url => new Promise((resolve, reject) => {
            const ws = new WebSocket(url);
            ws.onopen = () => { resolve(ws.extensions); ws.close(); };
            ws.onerror = () => reject(new Error("no connection"));
        })""",
        server.ws("/ws"),
    )
    assert extensions.startswith("permessage-deflate")
    assert "server_no_context_takeover" in extensions
    long_text = "compressed both ways " * 30  # over --compression-min-bytes
    say(ann, long_text)
    say(bob, "short one")
    for page in (ann, bob):
        wait_messages(page, [long_text.strip(), "short one"])
