"""Chat on ``/v1/ws`` (docs/protocol.md, "Chat") over real sockets against a real server
with its SQLite store: replies, data, edits, deletes, reactions, read state, the room
list, direct messages, typing and moderation, and a defined answer to bad input."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.roomclient import RoomClient
from tests.servers import ServerProcess

KEY = "api-key-for-chat-tests"
TIMEOUT = 30
EVENTS = {"message", "edit", "delete", "reaction", "moderation"}  # a room's seq stream


@pytest.fixture
def chat_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server("--api-key", KEY)


def api(server: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.http(path), data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {KEY}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def request(
    client: RoomClient, kind: str, answer: str = "ack", **frame: Any
) -> dict[str, Any]:
    """Send a frame with a fresh ref; its answer (or the error refusing it)."""
    mark = len(client.frames)
    ref = f"r{mark}"
    await client.send(type=kind, ref=ref, **frame)

    def found() -> dict[str, Any] | None:
        for f in client.frames[mark:]:
            if f.get("ref") == ref and f["type"] in (answer, "error"):
                return f
        return None

    await client.wait(lambda: found() is not None or client.closed)
    result = found()
    assert result is not None, client.frames[mark:]
    return result


async def user_of(client: RoomClient) -> str:
    return str((await client.next_of("welcome"))["user"])


async def test_a_message_with_a_reply_and_data_comes_back_with_both(
    chat_server: ServerProcess,
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    await ann.join("lobby")
    first = await ann.say("lobby", "question?")
    data = {"mentions": ["bob"], "link": "https://example.com/", "n": [1, {"deep": True}]}
    ack = await request(ann, "send", room="lobby", text="answer", reply_to=first["seq"], data=data)
    message = await ann.next_of("message", seq=ack["seq"])
    assert message["reply_to"] == first["seq"] and message["data"] == data
    assert message["user"] == await user_of(ann)
    plain = await ann.next_of("message", seq=first["seq"])
    assert "reply_to" not in plain and "data" not in plain  # only when given
    await ann.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "send", "text": "x", "reply_to": 99}, "no_such_message"),
        ({"type": "send", "text": "x", "data": {"big": "y" * 3000}}, "data_too_large"),
        ({"type": "send", "text": "x", "data": [1, 2]}, "bad_frame"),
        (
            {
                "type": "send",
                "text": "x",
                "data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
            },
            "bad_frame",
        ),
        ({"type": "edit", "seq": 99, "text": "x"}, "no_such_message"),
        ({"type": "edit", "seq": 1, "text": ""}, "bad_frame"),
        ({"type": "delete", "seq": 99}, "no_such_message"),
        ({"type": "react", "seq": 99, "emoji": "👍"}, "no_such_message"),
        ({"type": "react", "seq": 1, "emoji": ":+1:"}, "bad_emoji"),
        ({"type": "react", "seq": 1, "emoji": "👍👍"}, "bad_emoji"),
        ({"type": "react", "seq": 1, "emoji": "a"}, "bad_emoji"),
        ({"type": "react", "seq": 1, "emoji": ""}, "bad_frame"),
        ({"type": "react", "seq": 2**60, "emoji": "👍"}, "bad_frame"),
        ({"type": "edit", "room": "other", "seq": 1, "text": "x"}, "not_joined"),
        ({"type": "dm", "users": []}, "bad_frame"),
        ({"type": "moderate", "user": "x", "action": "explode"}, "bad_frame"),
        ({"type": "moderate", "user": "nobody", "action": "ban"}, "forbidden"),
        ({"type": "role", "user": "nobody", "role": "moderator"}, "forbidden"),
    ],
)
async def test_bad_chat_frames_get_a_defined_error_and_change_nothing(
    chat_server: ServerProcess, frame: dict[str, Any], code: str
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    await ann.join("lobby")
    await ann.say("lobby", "one")
    frame = {"room": "lobby", **frame}
    kind = frame.pop("type")
    error = await request(ann, kind, **frame)
    assert (error["type"], error["code"]) == ("error", code), error
    # Nothing was stored: the room still holds only its first message.
    status, page = api(chat_server, "GET", "/api/v1/rooms/lobby/messages")
    assert status == 200 and [m["text"] for m in page["messages"]] == ["one"]
    assert ann.messages["lobby"] == [1]
    await ann.close()
    assert "Traceback" not in chat_server.log


async def test_edit_delete_and_react_are_events_and_history_shows_the_current_state(
    chat_server: ServerProcess,
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    bob = await RoomClient.open(chat_server.ws(""), "bob")
    for client in (ann, bob):
        await client.join("lobby")
    one = (await ann.say("lobby", "helo"))["seq"]
    two = (await ann.say("lobby", "to delete"))["seq"]
    edit = await request(ann, "edit", room="lobby", seq=one, text="hello")
    assert edit["type"] == "ack" and edit["seq"] == two + 1
    assert (await request(bob, "edit", room="lobby", seq=one, text="mine now"))[
        "code"
    ] == "not_yours"
    assert (await request(bob, "delete", room="lobby", seq=two))["code"] == "not_yours"
    react = await request(bob, "react", room="lobby", seq=one, emoji="❤")  # taken as ❤️
    assert react["seq"] == two + 2
    again = await request(bob, "react", room="lobby", seq=one, emoji="❤️")
    assert again["type"] == "ack" and "seq" not in again  # there already: no event
    await request(ann, "react", room="lobby", seq=one, emoji="👍🏽")
    deleted = await request(ann, "delete", room="lobby", seq=two)
    assert (await request(bob, "react", room="lobby", seq=two, emoji="👍"))[
        "code"
    ] == "message_deleted"
    assert (await request(ann, "edit", room="lobby", seq=two, text="back"))[
        "code"
    ] == "message_deleted"

    seen = await bob.next_of("delete", seq=deleted["seq"])
    assert seen["target"] == two
    kinds = [(f["type"], f["seq"]) for f in bob.frames if f["type"] in EVENTS]
    assert kinds == [
        ("message", one),
        ("message", two),
        ("edit", two + 1),
        ("reaction", two + 2),
        ("reaction", two + 3),
        ("delete", two + 4),
    ]
    edit_frame = await bob.next_of("edit", seq=two + 1)
    assert (edit_frame["target"], edit_frame["text"], edit_frame["from"]) == (one, "hello", "ann")
    assert (await bob.next_of("reaction", seq=two + 2))["emoji"] == "❤️"

    bob_id, ann_id = await user_of(bob), await user_of(ann)
    mark = len(bob.frames)
    await bob.send(type="history", room="lobby")
    page = (await bob.next_of("history", mark))["messages"]
    assert [m["seq"] for m in page] == [one, two]  # only messages, in their current state
    assert page[0]["text"] == "hello" and page[0]["edited"].endswith("Z")
    assert page[0]["reactions"] == {"❤️": [bob_id], "👍🏽": [ann_id]}
    assert page[1]["deleted"] is True and page[1]["text"] == "" and "reactions" not in page[1]

    # A reaction taken back is an event too; its removal empties the emoji.
    off = await request(bob, "react", room="lobby", seq=one, emoji="❤️", remove=True)
    assert (await ann.next_of("reaction", seq=off["seq"]))["added"] is False
    status, stored = api(chat_server, "GET", "/api/v1/rooms/lobby/messages")
    assert status == 200 and stored["messages"][0]["reactions"] == {"👍🏽": [ann_id]}
    for client in (ann, bob):
        await client.close()


async def test_a_resume_replays_every_change_once_and_ends_in_the_state_of_history(
    chat_server: ServerProcess,
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    await ann.join("r")
    base = (await ann.say("r", "base"))["seq"]
    kept = await ann.next_of("welcome")
    later = await RoomClient.open(chat_server.ws(""), query=f"guest={kept['guest_token']}")
    # A second device of ann, away while the room changes.
    m = (await ann.say("r", "typo"))["seq"]
    await request(ann, "edit", room="r", seq=m, text="fixed")
    await request(ann, "react", room="r", seq=base, emoji="🎉")
    await request(ann, "react", room="r", seq=base, emoji="🎉", remove=True)
    await request(ann, "react", room="r", seq=base, emoji="🎉")
    await request(ann, "delete", room="r", seq=m)
    last = (await ann.say("r", "end"))["seq"]
    await later.join("r", since=base)
    await later.has_seqs("r", last)
    events = [f for f in later.frames if f.get("room") == "r" and f["type"] in EVENTS]
    assert [e["seq"] for e in events] == list(range(base + 1, last + 1))  # once each, in order
    state = replay(events)
    mark = len(later.frames)
    await later.send(type="history", room="r")
    page = (await later.next_of("history", mark))["messages"]
    assert state == {p["seq"]: visible(p) for p in page if p["seq"] > base}
    for client in (ann, later):
        await client.close()


def visible(message: dict[str, Any]) -> tuple[str, bool, dict[str, list[str]]]:
    return message["text"], bool(message.get("deleted")), message.get("reactions") or {}


def replay(events: list[dict[str, Any]]) -> dict[int, tuple[str, bool, dict[str, list[str]]]]:
    """What a client that applies the events as docs/protocol.md says ends up showing."""
    shown: dict[int, dict[str, Any]] = {}
    for e in events:
        if e["type"] == "message":
            shown[e["seq"]] = {
                "text": e["text"],
                "deleted": e.get("deleted", False),
                "reactions": {k: list(v) for k, v in (e.get("reactions") or {}).items()},
            }
            continue
        target = shown.get(e.get("target", -1))
        if target is None or (target["deleted"] and e["type"] != "delete"):
            continue
        if e["type"] == "edit":
            target["text"] = e["text"]
        elif e["type"] == "delete":
            target.update(text="", deleted=True, reactions={})
        elif e["type"] == "reaction":
            users = target["reactions"].setdefault(e["emoji"], [])
            if e["added"] and e["user"] not in users:
                users.append(e["user"])
            elif not e["added"] and e["user"] in users:
                users.remove(e["user"])
            if not users:
                del target["reactions"][e["emoji"]]
    return {seq: (m["text"], m["deleted"], m["reactions"]) for seq, m in shown.items()}


async def test_read_state_and_unread_counts_follow_the_user_to_every_device(
    chat_server: ServerProcess,
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    token = (await ann.next_of("welcome"))["guest_token"]
    tab = await RoomClient.open(chat_server.ws(""), query=f"guest={token}")
    bob = await RoomClient.open(chat_server.ws(""), "bob")
    for client in (ann, bob):
        await client.join("news")
    for n in range(3):
        await bob.say("news", f"b{n}")
    mine = (await ann.say("news", "mine"))["seq"]  # one's own do not count
    listed = await request(tab, "rooms", answer="rooms")
    assert listed["rooms"] == [
        {"room": "news", "seq": mine, "read": 0, "unread": 3, "role": "member"}
    ]
    mark = len(tab.frames)
    await ann.send(type="read", room="news", seq=2)
    for client in (ann, tab):  # the tab joined no room: it is told as the same user
        state = await client.next_of("read", mark if client is tab else 0, room="news")
        assert (state["seq"], state["unread"]) == (2, 1)
    mark = len(ann.frames)
    await ann.send(type="read", room="news", seq=1)  # lower: the highest is kept
    again = await ann.next_of("read", mark, room="news")
    assert (again["seq"], again["unread"]) == (2, 1)
    mark = len(ann.frames)
    await ann.send(type="leave", room="news", forget=True)
    await ann.next_of("left", mark, room="news")
    assert (await request(tab, "rooms", answer="rooms"))["rooms"] == []
    for client in (ann, tab, bob):
        await client.close()


async def test_a_send_with_an_id_is_stored_once_through_a_server_kill(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    store = ("--store-url", f"sqlite:///{tmp_path}/hubbub.db", "--api-key", KEY)
    server = start_server(*store)
    ann = await RoomClient.open(server.ws(""), "ann")
    token = (await ann.next_of("welcome"))["guest_token"]
    bob = await RoomClient.open(server.ws(""), "bob")
    for client in (ann, bob):
        await client.join("r")
    first = await request(ann, "send", room="r", text="once", id="m-1")
    assert (first["seq"], "repeat" in first) == (1, False)
    again = await request(ann, "send", room="r", text="once", id="m-1")
    assert (again["type"], again["seq"], again["repeat"]) == ("ack", 1, True)
    for bad in ("has space", "", "x" * 65, 7):
        assert (await request(ann, "send", room="r", text="x", id=bad))["code"] == "bad_frame"
    await ann.say("r", "after")  # bob gets it after anything the repeat might have sent
    await bob.next_of("message", text="after")
    assert [f["text"] for f in bob.frames if f["type"] == "message"] == ["once", "after"]
    assert [f.get("id") for f in bob.frames if f["type"] == "message"] == ["m-1", None]
    for client in (ann, bob):
        await client.close()

    # The server dies; the client, not knowing whether its send was stored, sends again.
    server.signal(signal.SIGKILL)
    server.wait()
    server = start_server(*store)
    back = await RoomClient.open(server.ws(""), query=f"guest={token}")
    await back.join("r")
    repeat = await request(back, "send", room="r", text="once", id="m-1")
    assert (repeat["seq"], repeat["repeat"]) == (1, True)
    status, page = api(server, "GET", "/api/v1/rooms/r/messages")
    assert status == 200
    assert [m["text"] for m in page["messages"]] == ["once", "after"]
    mark = len(back.frames)
    await back.send(type="history", room="r")
    history = await back.next_of("history", mark, room="r")
    assert [m.get("id") for m in history["messages"]] == ["m-1", None]  # kept with it
    # The HTTP API keeps ids too: 201 once, then 200 with the first seq.
    post = {"text": "from the backend", "user": "svc", "id": "job-7"}
    assert api(server, "POST", "/api/v1/rooms/r/messages", post)[0] == 201
    status, body = api(server, "POST", "/api/v1/rooms/r/messages", post)
    assert (status, body["seq"], body["repeat"]) == (200, 3, True)
    await back.close()


async def test_every_device_hears_when_a_room_enters_or_leaves_the_users_list(
    chat_server: ServerProcess,
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    token = (await ann.next_of("welcome"))["guest_token"]
    tab = await RoomClient.open(chat_server.ws(""), query=f"guest={token}")
    mod = await RoomClient.open(chat_server.ws(""), "mod")
    ann_id, mod_id = await user_of(ann), await user_of(mod)
    await mod.join("news")
    status, _ = api(chat_server, "PUT", f"/api/v1/rooms/news/roles/{mod_id}", {"role": "moderator"})
    assert status == 200

    def notices(client: RoomClient) -> list[dict[str, Any]]:
        return [f for f in client.frames if f["type"] == "membership"]

    def mark() -> list[int]:
        return [len(ann.frames), len(tab.frames)]

    async def told(since: list[int], **change: Any) -> None:
        for client, start in zip((ann, tab), since, strict=True):  # the tab too: same user
            await client.next_of("membership", start, **change)

    since = mark()
    await ann.join("news")
    await told(since, room="news", member=True)
    await tab.join("news")  # listed already: no news for anybody
    since = mark()
    await request(mod, "moderate", room="news", user=ann_id, action="kick")
    kicked = {"room": "news", "member": False, "reason": "kicked"}
    await told(since, **kicked)
    # In order on the user's channel: the tab's join said nothing in between.
    assert notices(tab) == [
        {"type": "membership", "room": "news", "member": True},
        {"type": "membership", **kicked},
    ]
    assert (await request(tab, "rooms", answer="rooms"))["rooms"] == []
    since = mark()
    await ann.join("news")  # may come back after a kick, and the list has it again
    await told(since, room="news", member=True)

    await request(mod, "moderate", room="news", user=ann_id, action="mute")
    bob = await RoomClient.open(chat_server.ws(""), "bob")
    people = (await bob.join("news"))["people"]
    assert {p["user"]: p for p in people}[ann_id] == {"user": ann_id, "name": "ann", "muted": True}
    assert {p["user"]: p for p in people}[mod_id] == {
        "user": mod_id,
        "name": "mod",
        "role": "moderator",
    }
    since = mark()
    await request(mod, "moderate", room="news", user=ann_id, action="ban")
    await told(since, room="news", member=False, reason="banned")
    since = mark()
    await request(mod, "moderate", room="news", user=ann_id, action="unban")
    await told(since, room="news", member=True)
    assert [r["room"] for r in (await request(tab, "rooms", answer="rooms"))["rooms"]] == ["news"]
    await ann.join("news")
    mark = len(tab.frames)
    await ann.send(type="leave", room="news", forget=True)
    await tab.next_of("membership", mark, room="news", member=False, reason="forgot")
    # A role given by the HTTP API to a user who is no member makes it one, and says so.
    status, _ = api(chat_server, "PUT", f"/api/v1/rooms/staff/roles/{ann_id}", {"role": "owner"})
    assert status == 200
    await tab.next_of("membership", mark, room="staff", member=True)
    for client in (ann, tab, mod, bob):
        await client.close()


async def test_a_direct_message_is_found_by_both_and_closed_to_others(
    chat_server: ServerProcess,
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    bob = await RoomClient.open(chat_server.ws(""), "bob")
    eve = await RoomClient.open(chat_server.ws(""), "eve")
    await ann.join("lobby")
    joined = await bob.join("lobby")
    bob_id = await user_of(bob)
    assert {"user": bob_id, "name": "bob"} in joined["people"]
    mark = len(bob.frames)
    opened = await request(ann, "dm", answer="dm", users=[bob_id])
    room = opened["room"]
    told = await bob.next_of("dm", mark)  # bob hears of it at once, without asking
    assert told == {"type": "dm", "room": room, "users": opened["users"]}
    assert room.startswith("dm:") and sorted(opened["users"]) == sorted(
        [await user_of(ann), bob_id]
    )
    again = await request(bob, "dm", answer="dm", users=[await user_of(ann)])
    assert again["room"] == room  # the same two users, the same room
    listed = await request(bob, "rooms", answer="rooms")
    dm = next(r for r in listed["rooms"] if r["room"] == room)
    assert sorted(p["name"] for p in dm["dm"]) == ["ann", "bob"]
    await ann.join(room)
    await bob.join(room)
    await ann.say(room, "just us")
    await bob.has_seqs(room, 1)
    mark = len(eve.frames)
    await eve.send(type="join", room=room)
    assert (await eve.next_of("error", mark))["code"] == "forbidden"
    await eve.send(type="join", room="dm:0000000000000000")
    assert (await eve.next_of("error", mark + 1))["code"] == "forbidden"
    assert (await request(ann, "dm", answer="dm", users=[await user_of(ann)]))[
        "code"
    ] == "forbidden"
    # Receipts are on in a direct message: bob sees that ann read it.
    await ann.send(type="read", room=room, seq=1)
    receipt = await bob.next_of("receipt", room=room)
    assert (receipt["name"], receipt["seq"]) == ("ann", 1)
    for client in (ann, bob, eve):
        await client.close()


async def test_typing_reaches_the_others_and_stops_when_the_typist_posts_or_leaves(
    chat_server: ServerProcess,
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    bob = await RoomClient.open(chat_server.ws(""), "bob")
    for client in (ann, bob):
        await client.join("t")
    await ann.send(type="typing", room="t")
    notice = await bob.next_of("typing", room="t")
    assert (notice["name"], notice["expires_in"]) == ("ann", 5) and "stop" not in notice
    await ann.send(type="typing", room="t")  # within 2 s: dropped
    await ann.say("t", "done")  # posting stops it
    stop = await bob.next_of("typing", room="t", stop=True)
    assert stop["name"] == "ann"
    typing = [f for f in bob.frames if f["type"] == "typing"]
    assert len(typing) == 2  # the notice and the stop; the second notice was throttled
    assert not [f for f in ann.frames if f["type"] == "typing"]  # never to oneself
    # A typist whose connection ends: the others are told it stopped.
    mark = len(bob.frames)
    carl = await RoomClient.open(chat_server.ws(""), "carl")
    await carl.join("t")
    await carl.send(type="typing", room="t")
    await bob.next_of("typing", mark, name="carl")
    await carl.close()
    await bob.next_of("typing", mark, name="carl", stop=True)
    for client in (ann, bob):
        await client.close()


async def test_moderators_kick_ban_and_mute_and_each_is_an_event(
    chat_server: ServerProcess,
) -> None:
    mod = await RoomClient.open(chat_server.ws(""), "mod")
    troll = await RoomClient.open(chat_server.ws(""), "troll")
    await mod.join("m")
    await troll.join("m")
    mod_id, troll_id = await user_of(mod), await user_of(troll)
    # No one is a moderator until the backend says so.
    assert (await request(mod, "moderate", room="m", user=troll_id, action="kick"))[
        "code"
    ] == "forbidden"
    status, _ = api(chat_server, "PUT", f"/api/v1/rooms/m/roles/{mod_id}", {"role": "moderator"})
    assert status == 200
    await mod.next_of("moderation", action="role", member=mod_id)
    # A moderator cannot act on a moderator (nor promote anyone: owners only).
    assert (await request(mod, "moderate", room="m", user=mod_id, action="mute"))[
        "code"
    ] == "forbidden"
    assert (await request(mod, "role", room="m", user=troll_id, role="moderator"))[
        "code"
    ] == "forbidden"

    await request(mod, "moderate", room="m", user=troll_id, action="mute", reason="calm down")
    await troll.next_of("moderation", action="mute", member=troll_id)
    assert (await request(troll, "send", room="m", text="still here"))["code"] == "muted"
    await request(mod, "moderate", room="m", user=troll_id, action="unmute")
    await troll.say("m", "sorry")

    ban = await request(mod, "moderate", room="m", user=troll_id, action="ban", reason="spam")
    event = await troll.next_of("moderation", seq=ban["seq"])
    assert (event["action"], event["reason"], event["from"]) == ("ban", "spam", "mod")
    assert await troll.next_of("left", room="m") == {
        "type": "left",
        "room": "m",
        "reason": "kicked",
    }
    assert (await request(troll, "send", room="m", text="x"))["code"] == "not_joined"
    mark = len(troll.frames)
    await troll.send(type="join", room="m")
    refusal = await troll.next_of("error", mark)
    assert (refusal["code"], refusal["room"]) == ("banned", "m")  # which join it was
    assert "ref" not in refusal
    # Someone else's message goes, by a moderator.
    seq = (await troll.next_of("message", text="sorry"))["seq"]
    deleted = await request(mod, "delete", room="m", seq=seq)
    assert deleted["type"] == "ack"
    await request(mod, "moderate", room="m", user=troll_id, action="unban")
    await troll.join("m")
    for client in (mod, troll):
        await client.close()


async def test_a_moderate_claim_in_a_token_makes_a_moderator(
    start_server: Callable[..., ServerProcess],
) -> None:
    import time

    import jwt

    secret = "chat-test-secret-of-at-least-32-bytes!"
    server = start_server("--jwt-secret", secret)

    def token(user: str, **claims: object) -> str:
        body = {"sub": user, "rooms": ["*"], "exp": int(time.time() + 3600), **claims}
        return jwt.encode(body, secret, algorithm="HS256")

    alice = await RoomClient.open(
        server.ws(""), query=f"token={token('alice', moderate=['team-*'])}"
    )
    bob = await RoomClient.open(server.ws(""), query=f"token={token('bob')}")
    joined = {}
    for client in (alice, bob):
        joined[client] = await client.join("team-a")
        await client.join("lobby")

    # The claim shows where its user looks: its own entry and its room list; others see
    # the stored role.
    def roles(frame: dict[str, Any]) -> dict[str, str | None]:
        return {p["user"]: p.get("role") for p in frame["people"]}

    assert roles(joined[alice]) == {"alice": "moderator"}
    assert roles(joined[bob]) == {"alice": None, "bob": None}
    listed = await request(alice, "rooms", answer="rooms")
    assert {r["room"]: r["role"] for r in listed["rooms"]} == {
        "team-a": "moderator",
        "lobby": "member",
    }
    kicked = await request(alice, "moderate", room="team-a", user="bob", action="kick")
    assert kicked["type"] == "ack"
    await bob.next_of("left", room="team-a", reason="kicked")
    assert (await request(alice, "moderate", room="lobby", user="bob", action="kick"))[
        "code"
    ] == "forbidden"
    await bob.join("team-a")  # a kick is no ban
    for client in (alice, bob):
        await client.close()


async def test_the_http_api_posts_replies_deletes_and_lists_a_users_rooms(
    chat_server: ServerProcess,
) -> None:
    ann = await RoomClient.open(chat_server.ws(""), "ann")
    await ann.join("api")
    ann_id = await user_of(ann)
    first = (await ann.say("api", "hi"))["seq"]
    status, posted = api(
        chat_server,
        "POST",
        "/api/v1/rooms/api/messages",
        {"text": "welcome", "reply_to": first, "data": {"bot": True}},
    )
    assert status == 201
    message = await ann.next_of("message", seq=posted["seq"])
    assert (message["reply_to"], message["data"], message["from"]) == (
        first,
        {"bot": True},
        "server",
    )
    assert (
        api(chat_server, "POST", "/api/v1/rooms/api/messages", {"text": "x", "reply_to": 77})[0]
        == 404
    )
    status, gone = api(chat_server, "DELETE", f"/api/v1/rooms/api/messages/{first}")
    assert status == 200
    assert (await ann.next_of("delete", seq=gone["seq"]))["target"] == first
    assert api(chat_server, "DELETE", f"/api/v1/rooms/api/messages/{first}")[0] == 409
    status, rooms = api(chat_server, "GET", f"/api/v1/users/{ann_id}/rooms")
    assert status == 200 and [(r["room"], r["unread"]) for r in rooms] == [("api", 1)]
    status, dm = api(
        chat_server,
        "POST",
        "/api/v1/dms",
        {"users": [{"user": ann_id, "name": "ann"}, {"user": "support", "name": "Support"}]},
    )
    assert status == 201 and dm["room"].startswith("dm:")
    listed = await request(ann, "rooms", answer="rooms")
    assert dm["room"] in [r["room"] for r in listed["rooms"]]
    await ann.close()
