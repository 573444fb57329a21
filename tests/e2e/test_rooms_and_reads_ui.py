"""The room list and read state on the page at ``/`` in Chromium, against a real
``hubbub serve``: the list follows the user from tab to tab by the server's pushes (no
polling), a tab in the background marks nothing read, and "Seen" under one's messages."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Page, WebSocketRoute, expect

from tests.e2e.conftest import NewUser, api, wait_until
from tests.e2e.test_chat_features_ui import item, room_button
from tests.e2e.test_chat_ui import join, say, sign_in, wait_members, wait_messages, wait_state
from tests.servers import ServerProcess

TIMEOUT_MS = 15_000

# A tab the test puts in the background and brings back: what the browser says of its
# visibility and focus is what the test says (a headless browser shows every tab).
BACKGROUND = """(() => {
  const tab = { visible: false, focused: false };
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true,
    get: () => (tab.visible ? "visible" : "hidden"),
  });
  Object.defineProperty(Document.prototype, "hidden", {
    configurable: true,
    get: () => !tab.visible,
  });
  Document.prototype.hasFocus = () => tab.focused;
  window.hubbubTab = (visible, focused) => {
    const shown = visible !== tab.visible;
    const got = focused && !tab.focused;
    Object.assign(tab, { visible, focused });
    if (shown) document.dispatchEvent(new Event("visibilitychange"));
    if (got) window.dispatchEvent(new Event("focus"));
  };
})();"""


def record_frames(page: Page) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Route the page's /v1/ws through Playwright: the frames it sends, and those it gets."""
    sent: list[dict[str, Any]] = []
    got: list[dict[str, Any]] = []

    def relay(socket: WebSocketRoute) -> None:
        upstream = socket.connect_to_server()

        def to_server(message: str | bytes) -> None:
            sent.append(json.loads(message))
            upstream.send(message)

        def to_page(message: str | bytes) -> None:
            got.append(json.loads(message))
            socket.send(message)

        socket.on_message(to_server)
        upstream.on_message(to_page)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    return sent, got


def room_names(page: Page) -> list[str]:
    return page.locator("#room-list .open").all_text_contents()


def test_the_room_list_follows_the_user_from_tab_to_tab_without_polling(
    server: ServerProcess, new_user: NewUser
) -> None:
    first = new_user()
    sign_in(first, server, "ann")
    second = new_user(tab_of=first)
    sent, got = record_frames(second)
    second.goto(server.http("/"))
    wait_state(second, "connected")
    wait_until(second, lambda: any(f["type"] == "rooms" for f in got), "room list", TIMEOUT_MS)

    join(first, "plans")  # a new room on the first tab: on the second at once
    expect(room_button(second, "#plans")).to_be_visible(timeout=TIMEOUT_MS)
    expect(second.locator("#room-title")).to_have_text("#lobby")  # not taken there
    say(first, "in plans")
    second.locator("#room-list .open", has_text="#plans").click()
    wait_messages(second, ["in plans"])

    # Left for good on the first tab: gone from the second too (which forgot nothing).
    first.get_by_role("button", name="Leave #plans").click()
    expect(room_button(second, "#plans")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(second.locator("#room-title")).to_have_text("#lobby")
    assert room_names(first) == ["#lobby"]
    assert not [f for f in sent if f["type"] == "leave" and f.get("forget")]

    # The second tab asked for the list when it connected and after each push, no more.
    def pushes() -> int:
        return sum(f["type"] in ("membership", "dm") for f in got)

    def asked() -> int:
        return sum(f["type"] == "rooms" for f in sent)

    wait_until(second, lambda: asked() == 1 + pushes(), "a list per push", TIMEOUT_MS)
    memberships = [f for f in got if f["type"] == "membership"]
    assert memberships == [
        {"type": "membership", "room": "plans", "member": True},
        {"type": "membership", "room": "plans", "member": False, "reason": "forgot"},
    ]


def test_a_tab_in_the_background_reads_nothing_until_it_is_back(
    server: ServerProcess, new_user: NewUser
) -> None:
    front = new_user()
    sign_in(front, server, "ann", "ops")
    back = new_user(tab_of=front)
    back.add_init_script(BACKGROUND)
    back.goto(server.http("/"))  # the same user; it shows #ops too, from behind
    wait_state(back, "connected")
    expect(back.locator("#room-title")).to_have_text("#ops")
    room_button(front, "#lobby").click()  # the tab in front reads the lobby
    expect(front.locator("#room-title")).to_have_text("#lobby")

    bob = new_user()
    sign_in(bob, server, "bob", "ops")
    say(bob, "anyone?")
    wait_messages(back, ["anyone?"])  # on screen, but nobody is looking
    expect(back).to_have_title("(1) Hubbub", timeout=TIMEOUT_MS)
    expect(room_button(back, "#ops").locator(".unread")).to_have_text("1")
    expect(back.locator("#messages .new-line")).to_be_visible()
    expect(room_button(front, "#ops").locator(".unread")).to_have_text("1", timeout=TIMEOUT_MS)
    # What the tab in front shows is read there, and so in the other tab too.
    bob.locator("#room-list .open", has_text="#lobby").click()
    say(bob, "hello lobby")
    wait_messages(front, ["hello lobby"])
    expect(back).to_have_title("(1) Hubbub")
    expect(room_button(back, "#lobby").locator(".unread")).to_have_count(0)
    expect(front).to_have_title("(1) Hubbub", timeout=TIMEOUT_MS)

    # Shown but not focused (another window in front of it): still not read. The page
    # reacts to the change at once, within this call.
    back.evaluate("window.hubbubTab(true, false)")
    assert back.title() == "(1) Hubbub"
    # Focused: read, in both tabs.
    back.evaluate("window.hubbubTab(true, true)")
    expect(back).to_have_title("Hubbub")
    expect(front).to_have_title("Hubbub", timeout=TIMEOUT_MS)
    expect(room_button(front, "#ops").locator(".unread")).to_have_count(0)
    # And while it is in front, what comes is read at once.
    bob.locator("#room-list .open", has_text="#ops").click()
    say(bob, "thanks")
    wait_messages(back, ["anyone?", "thanks"])
    expect(back).to_have_title("Hubbub")
    expect(front).to_have_title("Hubbub", timeout=TIMEOUT_MS)


def test_seen_under_ones_messages_once_the_others_read_them(
    api_server: ServerProcess, new_user: NewUser
) -> None:
    ann, bob = new_user(), new_user()
    sign_in(ann, api_server, "ann", "lobby")
    sign_in(bob, api_server, "bob", "lobby")
    wait_members(ann, ["ann", "bob"])
    ann.get_by_role("button", name="Send bob a direct message").click()
    expect(ann.locator("#room-title")).to_have_text("@bob", timeout=TIMEOUT_MS)
    say(ann, "are you there?")
    say(ann, "it is about lunch")
    wait_messages(ann, ["are you there?", "it is about lunch"])
    expect(ann.locator("#messages .seen")).to_have_count(0)  # bob is in the lobby

    dm = room_button(bob, "@ann")
    expect(dm.locator(".unread")).to_have_text("2", timeout=TIMEOUT_MS)
    dm.click()
    wait_messages(bob, ["are you there?", "it is about lunch"])
    # A direct message of two: "Seen", under the last message bob read; nothing of it in
    # what is read out.
    expect(item(ann, "it is about lunch").locator(".seen")).to_have_text("Seen", timeout=TIMEOUT_MS)
    expect(ann.locator("#messages .seen")).to_have_count(1)
    say(bob, "yes?")
    wait_messages(ann, ["are you there?", "it is about lunch", "yes?"])
    expect(bob.locator("#messages .seen")).to_have_text(["Seen"], timeout=TIMEOUT_MS)
    say(ann, "noon?")
    expect(item(ann, "noon?").locator(".seen")).to_have_text("Seen", timeout=TIMEOUT_MS)
    expect(ann.locator("#messages .seen")).to_have_count(1)  # it moved down
    assert "Seen" not in (ann.locator("#live").text_content() or "")

    # A room with receipts turned on: who has seen what.
    api(api_server, "PATCH", "/api/v1/rooms/team", {"receipts": True})
    carl = new_user()
    sign_in(carl, api_server, "carl", "team")
    for page in (ann, bob):
        join(page, "team")
    wait_members(ann, ["ann", "bob", "carl"])
    bob.locator("#room-list .open", has_text="#lobby").click()  # away from team
    say(ann, "standup in 5")
    wait_messages(carl, ["standup in 5"])
    expect(item(ann, "standup in 5").locator(".seen")).to_have_text(
        "Seen by carl", timeout=TIMEOUT_MS
    )
    bob.locator("#room-list .open", has_text="#team").click()
    wait_messages(bob, ["standup in 5"])
    expect(item(ann, "standup in 5").locator(".seen")).to_have_text(
        "Seen by bob, carl", timeout=TIMEOUT_MS
    )
