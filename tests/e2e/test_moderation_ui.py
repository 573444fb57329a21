"""Moderation on the page at ``/`` in Chromium, against a real ``hubbub serve``: a
moderator's menu in the member list (mute, kick, ban, roles), what the member it acts
on sees on each of its tabs, and the events as quiet lines among the messages."""

from __future__ import annotations

import json
import re

from playwright.sync_api import Locator, Page, WebSocketRoute, expect

from tests.e2e.conftest import NewUser, api
from tests.e2e.test_chat_features_ui import room_button
from tests.e2e.test_chat_ui import (
    say,
    sign_in,
    wait_members,
    wait_messages,
    wait_state,
)
from tests.servers import ServerProcess

TIMEOUT_MS = 15_000


def user_id(server: ServerProcess, room: str, name: str) -> str:
    """The user id of whoever goes by ``name`` in ``room`` now."""
    members = api(server, "GET", f"/api/v1/rooms/{room}/presence")
    [user] = [member["user"] for member in members if member["name"] == name]
    return str(user)


def member(page: Page, name: str) -> Locator:
    return page.locator("#member-list .member").filter(
        has=page.locator(".name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def choose(page: Page, name: str, action: str) -> None:
    """Open ``name``'s menu in the member list and pick ``action``."""
    toggle = page.get_by_role("button", name=f"Actions for {name}")
    if toggle.get_attribute("aria-expanded") != "true":
        toggle.click()
    member(page, name).get_by_role("button", name=action, exact=True).click()


def notes(page: Page) -> Locator:
    """The moderation lines among the messages."""
    return page.locator("#messages li.system > span")


def notice(page: Page) -> Locator:
    return page.locator("#notice")


def test_a_moderator_mutes_kicks_and_bans_from_the_member_list(
    api_server: ServerProcess, new_user: NewUser
) -> None:
    alice = new_user()
    sign_in(alice, api_server, "alice", "ops")
    bob = new_user()
    sign_in(bob, api_server, "bob", "ops")
    bob_tab = new_user(tab_of=bob)  # bob's second tab: the same user, the same rooms
    bob_tab.goto(api_server.http("/"))
    wait_state(bob_tab, "connected")
    expect(bob_tab.locator("#room-title")).to_have_text("#ops")
    wait_members(alice, ["alice", "bob"])
    # A member has no moderation menu.
    expect(alice.locator("#member-list .member-actions")).to_have_count(0)
    say(bob, "hello")
    wait_messages(alice, ["hello"])

    api(api_server, "PUT", f"/api/v1/rooms/ops/roles/{user_id(api_server, 'ops', 'alice')}",
        {"role": "moderator"})  # fmt: skip
    expect(notes(alice)).to_have_text(["server made you a moderator"], timeout=TIMEOUT_MS)
    expect(notes(bob)).to_have_text(["server made alice a moderator"], timeout=TIMEOUT_MS)
    expect(member(bob, "alice").locator(".badge")).to_have_text(["moderator"])
    expect(bob.locator("#member-list .member-actions")).to_have_count(0)  # bob is none

    # Mute, from the keyboard: the menu's button, then its first action.
    toggle = alice.get_by_role("button", name="Actions for bob")
    toggle.focus()
    alice.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(member(alice, "bob").get_by_role("button", name="Mute")).to_be_focused()
    alice.keyboard.press("Enter")
    expect(toggle).to_be_focused()  # the menu closed, back on its button
    for page in (alice, bob, bob_tab):
        expect(notes(page)).to_have_text(
            [re.compile("made"), re.compile("^(You|alice) muted (bob|you)$")], timeout=TIMEOUT_MS
        )
    expect(member(alice, "bob").locator(".badge")).to_have_text(["muted"])
    say(bob, "can I still talk?")
    expect(notice(bob)).to_have_text(
        "You are muted in #ops: your message was not sent.", timeout=TIMEOUT_MS
    )
    expect(bob.locator("#messages li.failed .text")).to_have_text(["can I still talk?"])

    choose(alice, "bob", "Unmute")
    expect(member(alice, "bob").locator(".badge")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(notes(bob).last).to_have_text("alice unmuted you", timeout=TIMEOUT_MS)
    bob.get_by_role("button", name="Retry").click()
    wait_messages(bob, ["hello", "can I still talk?"])
    wait_messages(alice, ["hello", "can I still talk?"])

    # Kick: bob is out on both tabs, the room gone from his list (and from what a reload
    # brings back); he may come back by hand.
    choose(alice, "bob", "Kick")
    for page in (bob, bob_tab):
        expect(notice(page)).to_have_text(
            "You were removed from #ops by a moderator.", timeout=TIMEOUT_MS
        )
        expect(room_button(page, "#ops")).to_have_count(0)
    assert "ops" not in json.loads(bob.evaluate("localStorage.getItem('hubbub.rooms')"))
    wait_members(alice, ["alice"])
    expect(notes(alice).last).to_have_text("You kicked bob")
    bob.get_by_label("Join or create a room").fill("ops")
    bob.get_by_label("Join or create a room").press("Enter")
    wait_members(alice, ["alice", "bob"])
    # His other tab hears the membership is back, and shows the room again.
    expect(room_button(bob_tab, "#ops")).to_be_visible(timeout=TIMEOUT_MS)

    # Ban, asked twice: out again on both tabs, and the room refuses him by the form.
    choose(alice, "bob", "Ban")
    confirm = member(alice, "bob").get_by_role("button", name="Really ban bob?")
    expect(confirm).to_be_focused()
    confirm.click()
    for page in (bob, bob_tab):
        expect(notice(page)).to_have_text("You are banned from #ops.", timeout=TIMEOUT_MS)
        expect(room_button(page, "#ops")).to_have_count(0)
    expect(notes(alice).last).to_have_text("You banned bob")
    wait_members(alice, ["alice"])
    say(bob, "in the lobby then")  # (a new message clears the notice)
    wait_messages(bob, ["in the lobby then"])
    expect(notice(bob)).to_be_empty()
    bob.get_by_label("Join or create a room").fill("ops")
    bob.get_by_label("Join or create a room").press("Enter")
    expect(notice(bob)).to_have_text("You are banned from #ops.", timeout=TIMEOUT_MS)
    expect(room_button(bob, "#ops")).to_have_count(0)
    expect(bob.locator("#room-title")).to_have_text("#lobby")
    assert "ops" not in json.loads(bob.evaluate("localStorage.getItem('hubbub.rooms')"))
    # A reload does not bring it back either. (The room list is answered before the
    # lobby's history: the server answers one connection's requests in turn.)
    bob_tab.reload()
    wait_state(bob_tab, "connected")
    wait_messages(bob_tab, ["in the lobby then"])
    assert bob_tab.locator("#room-list .open").all_text_contents() == ["#lobby"]
    expect(notice(bob_tab)).to_be_empty()


def test_an_owner_makes_and_unmakes_moderators(
    api_server: ServerProcess, new_user: NewUser
) -> None:
    olga, bob = new_user(), new_user()
    sign_in(olga, api_server, "olga", "ops")
    sign_in(bob, api_server, "bob", "ops")
    wait_members(olga, ["bob", "olga"])
    api(api_server, "PUT", f"/api/v1/rooms/ops/roles/{user_id(api_server, 'ops', 'olga')}",
        {"role": "owner"})  # fmt: skip
    expect(notes(olga)).to_have_text(["server made you an owner"], timeout=TIMEOUT_MS)

    choose(olga, "bob", "Make moderator")
    expect(notes(bob).last).to_have_text("olga made you a moderator", timeout=TIMEOUT_MS)
    expect(member(olga, "bob").locator(".badge")).to_have_text(["moderator"])
    # bob moderates now, but not his owner.
    expect(bob.locator("#member-list .member-actions")).to_have_count(0)
    choose(olga, "bob", "Make member")
    expect(notes(bob).last).to_have_text("olga made you a member", timeout=TIMEOUT_MS)
    expect(member(olga, "bob").locator(".badge")).to_have_count(0)
    # Escape closes the menu, back on its button.
    toggle = olga.get_by_role("button", name="Actions for bob")
    toggle.click()
    expect(member(olga, "bob").get_by_role("button", name="Kick")).to_be_visible()
    olga.keyboard.press("Escape")
    expect(toggle).to_be_focused()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(member(olga, "bob").get_by_role("button", name="Kick")).to_have_count(0)


def test_a_refused_moderation_is_a_notice(server: ServerProcess, new_user: NewUser) -> None:
    # The page is told it moderates the room (a room list rewritten on its way in); the
    # server, which knows better, refuses.
    mallory = new_user()

    def relay(socket: WebSocketRoute) -> None:
        upstream = socket.connect_to_server()

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "rooms":
                for summary in frame["rooms"]:
                    summary["role"] = "moderator"
                message = json.dumps(frame)
            socket.send(message)

        upstream.on_message(to_page)

    mallory.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    sign_in(mallory, server, "mallory", "ops")
    bob = new_user()
    sign_in(bob, server, "bob", "ops")
    wait_members(mallory, ["bob", "mallory"])
    choose(mallory, "bob", "Kick")
    expect(notice(mallory)).to_contain_text("bob was not removed: ", timeout=TIMEOUT_MS)
    wait_members(bob, ["bob", "mallory"])
    expect(room_button(bob, "#ops")).to_be_visible()
    expect(notes(mallory)).to_have_count(0)
