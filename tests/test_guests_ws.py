"""Guests and names on ``/v1/ws`` (issue 12, holes 9 and 10), against a real server."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest

from tests.roomclient import RoomClient
from tests.servers import ServerProcess

SECRET = "k" * 64


def token(user: str, name: str, **claims: object) -> str:
    body = {"sub": user, "name": name, "rooms": ["*"], "exp": int(time.time() + 3600), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


async def refused_with(client: RoomClient, code: str) -> None:
    error = await client.next_of("error")
    assert error["code"] == code, error
    await client.wait(lambda: client.closed)
    assert client.close_code == 1008


async def test_a_second_person_with_a_name_in_use_is_not_the_first(server: ServerProcess) -> None:
    zed = await RoomClient.open(server.ws(""), "Zed")
    first = await zed.next_of("welcome")
    await zed.join("lobby")
    other = await RoomClient.open(server.ws(""), "Zed")
    second = await other.next_of("welcome")
    assert second["user"] != first["user"] and second["guest_token"] != first["guest_token"]
    mark = len(other.frames)
    await other.send(type="join", room="lobby")
    assert (await other.next_of("error", mark))["code"] == "name_taken"
    await other.send(type="join", room="elsewhere")  # a name is unique per room
    await other.next_of("joined", mark, room="elsewhere")
    # The same name in another case or width is the same name to the people reading it.
    for lookalike in ("zed", "\uff3aed"):
        third = await RoomClient.open(server.ws(""), lookalike)
        await third.next_of("welcome")
        mark = len(third.frames)
        await third.send(type="join", room="lobby")
        assert (await third.next_of("error", mark))["code"] == "name_taken", lookalike
        await third.close()
    await other.close()
    await zed.close()


async def test_a_guest_token_brings_the_same_guest_back(server: ServerProcess) -> None:
    zed = await RoomClient.open(server.ws(""), "Zed")
    welcome = await zed.next_of("welcome")
    await zed.join("lobby")
    assert (await zed.say("lobby", "one"))["seq"] == 1
    # A second tab, with the token: the same user, counted once in the room.
    tab = await RoomClient.open(server.ws(""), query=f"guest={welcome['guest_token']}")
    again = await tab.next_of("welcome")
    assert (again["user"], again["name"], again["guest"]) == (welcome["user"], "Zed", True)
    assert (await tab.join("lobby"))["members"] == ["Zed"]
    await zed.close()
    # A reconnection by hello, under a new name: still the same user.
    back = await RoomClient.open(server.ws(""))
    await back.send(type="hello", guest=welcome["guest_token"], name="Zeddy")
    renamed = await back.next_of("welcome")
    assert (renamed["user"], renamed["name"]) == (welcome["user"], "Zeddy")
    await back.close()
    await tab.close()


async def test_one_guest_has_one_name_in_a_room(server: ServerProcess) -> None:
    ann = await RoomClient.open(server.ws(""), "Ann")
    held = (await ann.next_of("welcome"))["guest_token"]
    await ann.join("lobby")
    # Another tab of the same guest, under another name: it would post as "Bob" while
    # the room knows it as "Ann", and the real Bob could then join as a second "Bob".
    tab = await RoomClient.open(server.ws(""), query=f"guest={held}&name=Bob")
    await tab.next_of("welcome")
    mark = len(tab.frames)
    await tab.send(type="join", room="lobby")
    assert (await tab.next_of("error", mark))["code"] == "name_taken"
    await tab.join("elsewhere")  # a room where it is nobody yet
    await tab.close()
    await ann.close()


@pytest.mark.parametrize(
    "query",
    ["guest=garbage", f"guest={token('guest:000000000000', 'Zed')}", "guest=a.b.c&name=Zed"],
)
async def test_a_bad_guest_token_is_refused(server: ServerProcess, query: str) -> None:
    client = await RoomClient.open(server.ws(""), query=query)
    await refused_with(client, "unauthorized")


@pytest.mark.parametrize(
    "name",
    ["alice\n", "\u0410lice", "\u3164", "Al\u200bice", "\u115f", "alice ", "al  ice"],
)
async def test_names_that_hide_or_impersonate_are_refused(server: ServerProcess, name: str) -> None:
    client = await RoomClient.open(server.ws(""), name)
    await refused_with(client, "invalid_name")


async def test_a_full_width_name_is_normalised(server: ServerProcess) -> None:
    client = await RoomClient.open(server.ws(""), "\uff21lice")
    assert (await client.next_of("welcome"))["name"] == "Alice"
    await client.close()


@pytest.mark.parametrize("room", ["lobby\n", "team-x\n", "lobby\r", " lobby"])
async def test_room_names_must_match_whole(server: ServerProcess, room: str) -> None:
    client = await RoomClient.open(server.ws(""), "Ann")
    await client.next_of("welcome")
    mark = len(client.frames)
    await client.send(type="join", room=room)
    assert (await client.next_of("error", mark))["code"] == "bad_frame"
    await client.join("lobby")  # the connection stays open
    await client.close()


async def test_a_refresh_cannot_take_a_name_in_use(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--jwt-secret", SECRET)
    bob = await RoomClient.open(server.ws(""), query=f"token={token('bob', 'Bob')}")
    await bob.join("lobby")
    eve = await RoomClient.open(server.ws(""), query=f"token={token('eve', 'Eve')}")
    await eve.join("lobby")
    mark = len(eve.frames)
    await eve.send(type="refresh", token=token("eve", "bob"))
    assert (await eve.next_of("error", mark))["code"] == "name_taken"
    # A free name is taken on, and the room hears of it.
    mark = len(bob.frames)
    await eve.send(type="refresh", token=token("eve", "Evelyn"))
    assert (await eve.next_of("welcome", mark))["name"] == "Evelyn"
    presence = await bob.next_of("presence", mark)
    assert (presence["joined"], presence["left"]) == (["Evelyn"], ["Eve"])
    assert sorted((await bob.join("lobby"))["members"]) == ["Bob", "Evelyn"]
    await eve.close()
    await bob.close()


async def test_a_token_name_with_hidden_characters_is_refused(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--jwt-secret", SECRET)
    hidden = token("x", "Bob\u200b")
    client = await RoomClient.open(server.ws(""), query=f"token={hidden}")
    await refused_with(client, "unauthorized")
