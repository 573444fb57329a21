"""Chat across two processes (Redis broker, PostgreSQL store): a resuming client gets
every change once and in order and ends where history is; read state follows a user's
devices; a ban on one process holds on the other; a killed typist is let go."""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.test_rooms_cluster import FAST
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import service_url, temporary_database_sync
from tests.test_chat_ws import EVENTS, KEY, api, replay, request, user_of, visible


@pytest.fixture
def cluster(start_server: Callable[..., ServerProcess]) -> Iterator[list[ServerProcess]]:
    redis = service_url("redis")
    with temporary_database_sync() as db_url:
        args = ("--broker-url", redis, "--store-url", db_url, "--api-key", KEY, *FAST)
        servers = [start_server(*args), start_server(*args)]
        yield servers
        for server in servers:
            server.stop()


def room_events(client: RoomClient, room: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f.get("room") == room and f["type"] in EVENTS]


def has_event(client: RoomClient, room: str, seq: int) -> bool:
    return any(e["seq"] == seq for e in room_events(client, room))


async def test_a_client_that_drops_and_resumes_while_others_change_the_room_ends_in_the_same_state(
    cluster: list[ServerProcess],
) -> None:
    room = "busy"
    a, b = cluster
    ann = await RoomClient.open(a.ws(""), "ann")
    bob = await RoomClient.open(b.ws(""), "bob")
    watcher = await RoomClient.open(b.ws(""), "watcher")  # never drops
    reader = await RoomClient.open(a.ws(""), "reader")
    guest = (await reader.next_of("welcome"))["guest_token"]
    for client in (ann, bob, watcher, reader):
        await client.join(room)
    seqs: list[int] = []
    for n in range(6):
        seqs.append((await ann.say(room, f"a{n}"))["seq"])
        seqs.append((await bob.say(room, f"b{n}"))["seq"])
    mine, theirs = seqs[0::2], seqs[1::2]
    await reader.has_seqs(room, seqs[-1])
    stitched = room_events(reader, room)  # everything the reader saw, connection by connection
    for cycle in range(4):
        # The reader drops; meanwhile both sides edit, delete and react.
        last_seen = stitched[-1]["seq"]
        await reader.close()
        await request(ann, "edit", room=room, seq=mine[cycle], text=f"a{cycle} edited")
        await request(bob, "react", room=room, seq=mine[cycle], emoji="👍")
        await request(ann, "react", room=room, seq=theirs[cycle], emoji="🎉")
        await request(bob, "delete", room=room, seq=theirs[cycle])
        await request(bob, "react", room=room, seq=mine[cycle], emoji="👍", remove=True)
        await request(bob, "react", room=room, seq=mine[cycle], emoji="👀")
        reader = await RoomClient.open(cluster[cycle % 2].ws(""), query=f"guest={guest}")
        await reader.join(room, since=last_seen)
        end = (await ann.say(room, f"mark {cycle}"))["seq"]
        await reader.wait(functools.partial(has_event, reader, room, end))
        got = room_events(reader, room)
        assert [e["seq"] for e in got] == list(range(last_seen + 1, end + 1))  # once, in order
        stitched += got
    final = stitched[-1]["seq"]
    await watcher.wait(functools.partial(has_event, watcher, room, final))
    status, page = api(a, "GET", f"/api/v1/rooms/{room}/messages?limit=1000")
    assert status == 200
    stored = {m["seq"]: visible(m) for m in page["messages"]}
    assert replay(stitched) == replay(room_events(watcher, room)) == stored
    assert any(deleted for _, deleted, _ in stored.values())  # the changes were there
    for client in (ann, bob, watcher, reader):
        await client.close()


async def test_read_state_agrees_on_two_devices_on_two_processes(
    cluster: list[ServerProcess],
) -> None:
    a, b = cluster
    phone = await RoomClient.open(a.ws(""), "ann")
    token = (await phone.next_of("welcome"))["guest_token"]
    laptop = await RoomClient.open(b.ws(""), query=f"guest={token}")
    bob = await RoomClient.open(b.ws(""), "bob")
    for client in (phone, laptop, bob):
        await client.join("news")
    for n in range(4):
        last = (await bob.say("news", f"n{n}"))["seq"]
    await laptop.has_seqs("news", last)
    await phone.send(type="read", room="news", seq=last - 1)
    pushed = await laptop.next_of("read", room="news")  # told on the other process
    assert (pushed["seq"], pushed["unread"]) == (last - 1, 1)
    for device in (phone, laptop):
        rooms = (await request(device, "rooms", answer="rooms"))["rooms"]
        assert [(r["room"], r["read"], r["unread"]) for r in rooms] == [("news", last - 1, 1)]
    for client in (phone, laptop, bob):
        await client.close()


async def test_a_ban_on_one_process_removes_and_refuses_the_user_on_the_other(
    cluster: list[ServerProcess],
) -> None:
    a, b = cluster
    mod = await RoomClient.open(a.ws(""), "mod")
    troll = await RoomClient.open(b.ws(""), "troll")
    await mod.join("m")
    await troll.join("m")
    mod_id, troll_id = await user_of(mod), await user_of(troll)
    assert api(a, "PUT", f"/api/v1/rooms/m/roles/{mod_id}", {"role": "moderator"})[0] == 200
    await mod.next_of("moderation", action="role")
    await request(mod, "moderate", room="m", user=troll_id, action="mute")
    await troll.next_of("moderation", action="mute")  # applied on b once it arrives
    assert (await request(troll, "send", room="m", text="hi"))["code"] == "muted"
    await request(mod, "moderate", room="m", user=troll_id, action="ban")
    await troll.next_of("left", room="m", reason="kicked")
    mark = len(troll.frames)
    await troll.send(type="join", room="m")
    assert (await troll.next_of("error", mark))["code"] == "banned"
    # A process that has no feed of the room reads the ban from the store.
    again = await RoomClient.open(
        b.ws(""), query=f"guest={(await troll.next_of('welcome'))['guest_token']}"
    )
    await troll.close()
    await mod.close()  # now no one on a has the room open
    other = await RoomClient.open(
        a.ws(""), query=f"guest={(await again.next_of('welcome'))['guest_token']}"
    )
    await again.close()
    mark = len(other.frames)
    await other.send(type="join", room="m")
    assert (await other.next_of("error", mark))["code"] == "banned"
    await other.close()


async def test_typing_of_a_killed_process_carries_its_expiry_and_the_typist_is_let_go(
    cluster: list[ServerProcess],
) -> None:
    a, b = cluster
    typist = await RoomClient.open(a.ws(""), "typist")
    watcher = await RoomClient.open(b.ws(""), "watcher")
    await typist.join("t")
    await watcher.join("t")
    await typist.send(type="typing", room="t")
    notice = await watcher.next_of("typing", room="t", name="typist")
    assert notice["expires_in"] == 5  # the indicator ends by itself if nothing follows
    mark = len(watcher.frames)
    a.signal(signal.SIGKILL)
    a.wait()
    await watcher.next_of("presence", mark, room="t", left=["typist"])
    assert not [f for f in watcher.frames[mark:] if f["type"] == "typing"]
    await asyncio.gather(typist.close(), return_exceptions=True)
    await watcher.close()


async def test_a_send_repeated_on_the_other_process_is_stored_once(
    cluster: list[ServerProcess],
) -> None:
    a, b = cluster
    ann = await RoomClient.open(a.ws(""), "ann")
    token = (await ann.next_of("welcome"))["guest_token"]
    moved = await RoomClient.open(b.ws(""), query=f"guest={token}")  # the same user
    watcher = await RoomClient.open(b.ws(""), "watcher")
    for client in (ann, moved, watcher):
        await client.join("once")
    # Both copies at once, one per process: one is stored, the other is its repeat.
    first, second = await asyncio.gather(
        request(ann, "send", room="once", text="hello", id="c-1"),
        request(moved, "send", room="once", text="hello", id="c-1"),
    )
    assert first["seq"] == second["seq"]
    assert sorted(bool(ack.get("repeat")) for ack in (first, second)) == [False, True]
    await ann.say("once", "after")
    await watcher.next_of("message", room="once", text="after")
    assert [f["text"] for f in watcher.frames if f["type"] == "message"] == ["hello", "after"]
    for client in (ann, moved, watcher):
        await client.close()
