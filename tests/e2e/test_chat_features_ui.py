"""The chat features of the page at ``/`` (replies, reactions, edits, deletes, typing,
direct messages, unread counts, links, the composer) in Chromium, against real
``hubbub serve`` processes."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, WebSocketRoute, expect

from tests.e2e.conftest import RESULTS, NewUser
from tests.e2e.test_chat_ui import (
    RECONNECT_MS,
    delivered,
    join,
    say,
    sign_in,
    wait_members,
    wait_messages,
    wait_state,
)
from tests.servers import ServerProcess

TIMEOUT_MS = 15_000
# A new direct message reaches the other's room list by a push (dm), then a list request.
ROOM_LIST_MS = 30_000
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot-chat.png"

# -- what a user sees and does ----------------------------------------------------------


def item(page: Page, text: str) -> Locator:
    """The delivered message whose own text (not a quote of it) is ``text``."""
    own_text = page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$"))
    return delivered(page).filter(has=own_text)


def act(page: Page, text: str, action: str) -> None:
    """Click one of a message's action buttons (Reply, React, Edit, Delete)."""
    message = item(page, text)
    message.hover()
    message.get_by_role("button", name=action, exact=True).click()


def react(page: Page, text: str, emoji: str) -> None:
    act(page, text, "React")
    item(page, text).get_by_role("button", name=f"React with {emoji}").click()


def reactions(page: Page, text: str) -> Locator:
    return item(page, text).locator(".reaction")


def type_without_sending(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).press_sequentially(text)


def room_button(page: Page, label: str) -> Locator:
    return page.locator("#room-list .open", has_text=re.compile(f"^{re.escape(label)}\\b"))


def events(page: Page, room: str) -> list[list[Any]]:
    """Every event of the room's seq stream the page was handed, as [type, seq]."""
    value: list[list[Any]] = page.evaluate("room => window.hubbubEvents[room] ?? []", room)
    return value


def assert_once_in_order(page: Page, room: str) -> None:
    seqs = [seq for _, seq in events(page, room)]
    assert seqs == sorted(set(seqs)), seqs


def relay_sockets(page: Page) -> list[WebSocketRoute]:
    """Route the page's /v1/ws through Playwright, to put frames into it."""
    sockets: list[WebSocketRoute] = []

    def relay(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    return sockets


# -- tests -----------------------------------------------------------------------------


def test_two_people_reply_react_edit_delete_and_see_each_other_type(
    server: ServerProcess, new_user: NewUser
) -> None:
    ann, bob = new_user(), new_user()
    elsewhere: list[str] = []
    for page in (ann, bob):
        page.on(
            "request",
            lambda r: (
                None if r.url.startswith((server.http("/"), "data:")) else elsewhere.append(r.url)
            ),
        )
    sign_in(ann, server, "ann", "ops")
    sign_in(bob, server, "bob", "ops")
    wait_members(ann, ["ann", "bob"])
    say(ann, "Lunch at noon?")
    wait_messages(bob, ["Lunch at noon?"])

    # A reply shows what it answers.
    act(bob, "Lunch at noon?", "Reply")
    expect(bob.locator("#composing")).to_contain_text("Replying to ann")
    say(bob, "Sounds good")
    for page in (ann, bob):
        wait_messages(page, ["Lunch at noon?", "Sounds good"])
        expect(item(page, "Sounds good").locator(".quote")).to_contain_text("ann: Lunch at noon?")
    expect(bob.locator("#composing")).to_be_hidden()

    # Typing: shown to the other, gone when the typist empties the field or posts.
    type_without_sending(bob, "hmm")
    expect(ann.locator("#typing")).to_have_text("bob is typing…", timeout=TIMEOUT_MS)
    expect(bob.locator("#typing")).to_have_text("")  # never one's own
    bob.get_by_label("Message", exact=True).fill("")
    expect(ann.locator("#typing")).to_have_text("", timeout=TIMEOUT_MS)
    type_without_sending(bob, "one more")
    expect(ann.locator("#typing")).to_have_text("bob is typing…", timeout=TIMEOUT_MS)
    bob.get_by_label("Message", exact=True).press("Enter")
    wait_messages(ann, ["Lunch at noon?", "Sounds good", "one more"])
    expect(ann.locator("#typing")).to_have_text("", timeout=TIMEOUT_MS)

    # Reactions: a click toggles one's own; both see the counts.
    react(ann, "Sounds good", "👍")
    for page in (ann, bob):
        expect(reactions(page, "Sounds good")).to_have_text(["👍 1"], timeout=TIMEOUT_MS)
    expect(reactions(ann, "Sounds good")).to_have_attribute("aria-pressed", "true")
    expect(reactions(bob, "Sounds good")).to_have_attribute("aria-pressed", "false")
    reactions(bob, "Sounds good").click()
    for page in (ann, bob):
        expect(reactions(page, "Sounds good")).to_have_text(["👍 2"], timeout=TIMEOUT_MS)
    reactions(bob, "Sounds good").click()
    react(bob, "Sounds good", "🎉")
    for page in (ann, bob):
        expect(reactions(page, "Sounds good")).to_have_text(["👍 1", "🎉 1"], timeout=TIMEOUT_MS)

    # Editing one's own message (not someone else's); the reply quoting it follows.
    bob_first = item(bob, "Lunch at noon?")
    bob_first.hover()
    expect(bob_first.get_by_role("button", name="Edit")).to_have_count(0)
    act(ann, "Lunch at noon?", "Edit")
    composer = ann.get_by_label("Message", exact=True)
    expect(composer).to_have_value("Lunch at noon?")
    composer.press("Escape")  # changed my mind
    expect(composer).to_have_value("")
    act(ann, "Lunch at noon?", "Edit")
    composer.fill("Lunch at 12:30?")
    composer.press("Enter")
    for page in (ann, bob):
        wait_messages(page, ["Lunch at 12:30?", "Sounds good", "one more"])
        expect(item(page, "Lunch at 12:30?").locator(".edited")).to_have_text("(edited)")
        expect(item(page, "Sounds good").locator(".quote")).to_contain_text("Lunch at 12:30?")

    # Deleting one's own message, asked twice: a tombstone, no reactions left.
    act(bob, "Sounds good", "Delete")
    item(bob, "Sounds good").get_by_role("button", name="Really delete?").click()
    for page in (ann, bob):
        wait_messages(page, ["Lunch at 12:30?", "message deleted", "one more"])
        expect(page.locator("#messages .reaction")).to_have_count(0)
        expect(page.locator("#messages .edited")).to_have_count(1)

    # The same, for someone who comes later: from history, in its current state.
    carol = new_user()
    sign_in(carol, server, "carol", "ops")
    wait_messages(carol, ["Lunch at 12:30?", "message deleted", "one more"])
    expect(item(carol, "Lunch at 12:30?").locator(".edited")).to_have_text("(edited)")
    expect(carol.locator("#live")).to_be_empty()  # history is not read out
    say(ann, "hi carol")
    expect(carol.locator("#live")).to_have_text("ann: hi carol", timeout=TIMEOUT_MS)
    for page in (ann, bob):
        assert_once_in_order(page, "ops")
    assert elsewhere == []  # nothing from a CDN, nothing from anywhere else


def test_typing_ends_by_itself_and_when_the_typist_leaves(
    server: ServerProcess, new_user: NewUser
) -> None:
    page = new_user()
    sockets = relay_sockets(page)
    sign_in(page, server, "ann", "lobby")

    def put(frame: dict[str, Any]) -> None:
        sockets[-1].send(json.dumps({"room": "lobby", **frame}))

    put({"type": "typing", "user": "u-zoe", "name": "zoe", "expires_in": 1})
    expect(page.locator("#typing")).to_have_text("zoe is typing…")
    expect(page.locator("#typing")).to_have_text("", timeout=TIMEOUT_MS)  # after 1 s

    put({"type": "typing", "user": "u-yann", "name": "yann", "expires_in": 30})
    put({"type": "typing", "user": "u-zoe", "name": "zoe", "expires_in": 30})
    expect(page.locator("#typing")).to_have_text("yann and zoe are typing…")
    put({"type": "typing", "user": "u-zoe", "name": "zoe", "stop": True})
    expect(page.locator("#typing")).to_have_text("yann is typing…")
    yann = [{"user": "u-yann", "name": "yann"}]
    put({"type": "presence", "joined": ["yann"], "left": [], "joined_people": yann})
    wait_members(page, ["ann", "yann"])
    put({"type": "presence", "joined": [], "left": ["yann"], "left_people": yann})
    expect(page.locator("#typing")).to_have_text("")
    wait_members(page, ["ann"])


def test_a_direct_message_started_from_the_member_list_reaches_the_other(
    server: ServerProcess, new_user: NewUser
) -> None:
    ann, bob = new_user(), new_user()
    sign_in(ann, server, "ann", "lobby")
    sign_in(bob, server, "bob", "lobby")
    wait_members(ann, ["ann", "bob"])
    expect(ann.locator("#member-list .dm-start")).to_have_count(1)  # not to oneself
    ann.get_by_role("button", name="Send bob a direct message").click()
    expect(ann.locator("#room-title")).to_have_text("@bob", timeout=TIMEOUT_MS)
    expect(ann.get_by_label("Message", exact=True)).to_be_focused()
    say(ann, "psst, bob")
    wait_messages(ann, ["psst, bob"])

    # bob hears of it from his room list: an unread direct message.
    dm = room_button(bob, "@ann")
    expect(dm.locator(".unread")).to_have_text("1", timeout=ROOM_LIST_MS)
    expect(bob).to_have_title("(1) Hubbub")
    expect(bob.locator("#room-title")).to_have_text("#lobby")
    dm.click()
    wait_messages(bob, ["psst, bob"])
    expect(bob.locator("#messages .new-line")).to_have_text("New messages")
    expect(bob).to_have_title("Hubbub", timeout=TIMEOUT_MS)
    expect(dm.locator(".unread")).to_have_count(0)
    say(bob, "hi ann, only you can read this")
    wait_messages(ann, ["psst, bob", "hi ann, only you can read this"])
    room = ann.evaluate("localStorage.getItem('hubbub.room')")
    assert room.startswith("dm:")


def test_one_person_on_two_tabs_sees_the_same_unread_counts(
    server: ServerProcess, new_user: NewUser
) -> None:
    first = new_user()
    sign_in(first, server, "ann", "ops")
    first.locator("#room-list .open", has_text="#lobby").click()
    expect(first.locator("#room-title")).to_have_text("#lobby")
    second = first.context.new_page()  # the same browser: the same guest, the same rooms
    second.goto(server.http("/"))
    wait_state(second, "connected")
    expect(second.locator("#room-title")).to_have_text("#lobby")

    bob = new_user()
    sign_in(bob, server, "bob", "ops")
    for text in ("ping 1", "ping 2"):
        say(bob, text)
    wait_messages(bob, ["ping 1", "ping 2"])
    for tab in (first, second):
        expect(room_button(tab, "#ops").locator(".unread")).to_have_text("2", timeout=TIMEOUT_MS)
        expect(tab).to_have_title("(2) Hubbub")

    # Read in one tab: cleared in both.
    room_button(first, "#ops").click()
    wait_messages(first, ["ping 1", "ping 2"])
    expect(first.locator("#messages .new-line")).to_be_visible()
    for tab in (first, second):
        expect(room_button(tab, "#ops").locator(".unread")).to_have_count(0, timeout=TIMEOUT_MS)
        expect(tab).to_have_title("Hubbub", timeout=TIMEOUT_MS)

    # What comes while one tab shows the room is read at once, in both.
    say(bob, "ping 3")
    wait_messages(first, ["ping 1", "ping 2", "ping 3"])
    expect(first).to_have_title("Hubbub")
    expect(second).to_have_title("Hubbub", timeout=TIMEOUT_MS)
    # And a reload asks the server: nothing unread.
    second.reload()
    wait_state(second, "connected")
    room_button(second, "#ops").wait_for(timeout=TIMEOUT_MS)
    expect(room_button(second, "#ops").locator(".unread")).to_have_count(0)
    expect(second).to_have_title("Hubbub")
    second.close()


def test_the_chat_survives_a_server_restart(
    start_server: Callable[..., ServerProcess], new_user: NewUser, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/chat.db"
    first = start_server("--store-url", store)
    ann, bob = new_user(), new_user()
    sign_in(ann, first, "ann", "ops")
    sign_in(bob, first, "bob", "ops")
    wait_members(ann, ["ann", "bob"])
    say(ann, "before")
    wait_messages(bob, ["before"])
    react(bob, "before", "👍")
    expect(reactions(ann, "before")).to_have_text(["👍 1"], timeout=TIMEOUT_MS)
    ann.get_by_role("button", name="Send bob a direct message").click()
    expect(ann.locator("#room-title")).to_have_text("@bob", timeout=TIMEOUT_MS)
    say(ann, "dm before")
    wait_messages(ann, ["dm before"])
    ann.locator("#room-list .open", has_text="#ops").click()
    expect(room_button(bob, "@ann").locator(".unread")).to_have_text("1", timeout=ROOM_LIST_MS)

    first.signal(signal.SIGKILL)
    first.wait()
    for page in (ann, bob):
        wait_state(page, "reconnecting")
    # While it is down: an edit, a reaction and a reply wait, and go once it is back.
    act(ann, "before", "Edit")
    ann.get_by_label("Message", exact=True).fill("before, edited while down")
    ann.get_by_label("Message", exact=True).press("Enter")
    react(ann, "before", "🎉")
    act(bob, "before", "Reply")
    say(bob, "reply while down")
    expect(bob.locator("#messages li.pending .text")).to_have_text(["reply while down"])

    start_server("--store-url", store, "--port", str(first.port))
    for page in (ann, bob):
        wait_state(page, "connected", RECONNECT_MS)
    for page in (ann, bob):
        wait_messages(page, ["before, edited while down", "reply while down"])
        expect(item(page, "before, edited while down").locator(".edited")).to_be_visible()
        expect(reactions(page, "before, edited while down")).to_have_text(
            ["👍 1", "🎉 1"], timeout=TIMEOUT_MS
        )
        expect(item(page, "reply while down").locator(".quote")).to_contain_text(
            "ann: before, edited while down"
        )
        assert_once_in_order(page, "ops")
    # The direct message is still there, unread, for bob; and still works.
    dm = room_button(bob, "@ann")
    expect(dm.locator(".unread")).to_have_text("1", timeout=ROOM_LIST_MS)
    dm.click()
    wait_messages(bob, ["dm before"])
    say(bob, "dm after")
    room_button(ann, "@bob").click()
    wait_messages(ann, ["dm before", "dm after"])


def test_links_are_safe_and_the_composer_takes_several_lines(
    server: ServerProcess, new_user: NewUser
) -> None:
    page = new_user()
    sign_in(page, server, "ann", "lobby")
    field = page.get_by_label("Message", exact=True)
    field.press_sequentially("line one")
    field.press("Shift+Enter")
    field.press_sequentially("line two")
    field.press("Enter")
    wait_messages(page, ["line one\nline two"])

    text = (
        "see https://example.com/a?b=1&c=(2)). or javascript:alert(1) "
        'or <a href="https://evil.example/">this</a> or http://[bad'
    )
    say(page, text)
    wait_messages(page, ["line one\nline two", text])
    links = item(page, text).locator("a")
    expect(links).to_have_count(2)
    expect(links.first).to_have_attribute("href", "https://example.com/a?b=1&c=(2)")
    expect(links.first).to_have_text("https://example.com/a?b=1&c=(2)")
    # The markup is text; the link in it is only its address, up to the quote.
    expect(links.nth(1)).to_have_attribute("href", "https://evil.example/")
    for link in links.all():
        assert link.get_attribute("rel") == "noopener noreferrer"
        assert link.get_attribute("target") == "_blank"
    assert page.locator("#messages a[href^='javascript']").count() == 0


def test_the_page_follows_a_dark_preference(server: ServerProcess, new_user: NewUser) -> None:
    page = new_user(color_scheme="dark")
    sign_in(page, server, "ann", "lobby")
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    red, green, blue = (int(n) for n in re.findall(r"\d+", background)[:3])
    assert red + green + blue < 150, background


def test_screenshot_of_the_chat_features(server: ServerProcess, new_user: NewUser) -> None:
    """The second picture in the README: a direct message with a reply, an edit,
    reactions and someone typing. Written to docs/ when missing or when
    ``HUBBUB_SCREENSHOT=1``, else to test-results/ (as test_chat_ui.py does)."""
    size = {"width": 1100, "height": 640}
    ann = new_user(viewport=size, locale="en-GB", timezone_id="UTC")
    bob = new_user(viewport=size, locale="en-GB", timezone_id="UTC")
    sign_in(ann, server, "ann", "design")
    sign_in(bob, server, "bob", "design")
    join(ann, "random")
    join(bob, "random")
    join(ann, "design")
    wait_members(ann, ["ann", "bob"])
    ann.get_by_role("button", name="Send bob a direct message").click()
    expect(ann.locator("#room-title")).to_have_text("@bob", timeout=TIMEOUT_MS)
    say(ann, "Did the reconnect fix land?")
    dm = room_button(bob, "@ann")
    expect(dm).to_be_visible(timeout=ROOM_LIST_MS)
    dm.click()
    wait_messages(bob, ["Did the reconnect fix land?"])
    say(bob, "It did, edits and reactions resume to.")
    act(bob, "It did, edits and reactions resume to.", "Edit")
    bob.get_by_label("Message", exact=True).fill(
        "It did: edits, deletes and reactions resume too, each once."
    )
    bob.get_by_label("Message", exact=True).press("Enter")
    wait_messages(
        ann,
        [
            "Did the reconnect fix land?",
            "It did: edits, deletes and reactions resume too, each once.",
        ],
    )
    act(ann, "It did: edits, deletes and reactions resume too, each once.", "Reply")
    say(ann, "Even what I type while it is down? Notes: https://example.com/hubbub")
    react(bob, "Even what I type while it is down? Notes: https://example.com/hubbub", "👍")
    react(ann, "It did: edits, deletes and reactions resume too, each once.", "🎉")
    react(bob, "It did: edits, deletes and reactions resume too, each once.", "🎉")
    react(ann, "Did the reconnect fix land?", "❤️")
    say(bob, "Yes: pending, then sent once, in order.")
    bob.locator("#room-list .open", has_text="#design").click()
    say(bob, "Design review at 3?")
    expect(room_button(ann, "#design").locator(".unread")).to_have_text("1", timeout=TIMEOUT_MS)
    bob.locator("#room-list .open", has_text="@ann").click()
    type_without_sending(bob, "And what about")
    expect(ann.locator("#typing")).to_have_text("bob is typing…", timeout=TIMEOUT_MS)
    expect(
        reactions(ann, "It did: edits, deletes and reactions resume too, each once.")
    ).to_have_text(["🎉 2"])

    SCREENSHOT.parent.mkdir(exist_ok=True)
    if SCREENSHOT.exists() and os.environ.get("HUBBUB_SCREENSHOT") != "1":
        RESULTS.mkdir(exist_ok=True)
        target = RESULTS / "screenshot-chat.png"
    else:
        target = SCREENSHOT
    ann.evaluate("document.activeElement.blur()")  # no message's actions on show
    ann.mouse.move(0, 0)
    ann.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
