"""Tokens, guests, Origin and permissions on ``/v1/ws``, against a real server."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.roomclient import RoomClient
from tests.servers import ServerProcess

SECRET = "k" * 64


def token(user: str = "alice", ttl: float = 3600, **claims: object) -> str:
    body = {"sub": user, "name": user.title(), "rooms": ["lobby", "team-*"],
            "read": ["news"], "exp": int(time.time() + ttl), **claims}  # fmt: skip
    return jwt.encode(body, SECRET, algorithm="HS256")


@pytest.fixture
def secured(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server("--jwt-secret", SECRET, "--allowed-origins", "https://chat.example")


async def refused_with(client: RoomClient, code: str) -> None:
    error = await client.next_of("error")
    assert error["code"] == code, error
    await client.wait(lambda: client.closed)
    assert client.close_code == 1008


async def test_token_in_the_url_and_permissions(secured: ServerProcess) -> None:
    alice = await RoomClient.open(secured.ws(""), query=f"token={token()}")
    welcome = await alice.next_of("welcome")
    assert (welcome["user"], welcome["name"], welcome["guest"]) == ("alice", "Alice", False)
    await alice.join("team-red")
    assert (await alice.say("team-red", "hi"))["seq"] == 1
    mark = len(alice.frames)
    await alice.send(type="join", room="secret")
    assert (await alice.next_of("error", mark))["code"] == "forbidden"
    await alice.join("news")  # read-only
    mark = len(alice.frames)
    await alice.send(type="send", room="news", text="no", ref="n")
    assert (await alice.next_of("error", mark)) == {
        "type": "error",
        "code": "forbidden",
        "message": "you may not post in 'news'",
        "ref": "n",
        "room": "news",
    }
    await alice.close()


async def test_hello_frame_authenticates(secured: ServerProcess) -> None:
    client = await RoomClient.open(secured.ws(""))
    await client.send(type="hello", token=token("bob"))
    assert (await client.next_of("welcome"))["user"] == "bob"
    await client.join("lobby")
    mark = len(client.frames)
    await client.send(type="hello", token=token("bob"))
    assert (await client.next_of("error", mark))["code"] == "bad_frame"
    await client.close()


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ('{"type":"join","room":"lobby"}', "unauthorized"),  # not hello
        ('{"type":"hello","token":"garbage"}', "unauthorized"),
        ("not json", "bad_json"),
    ],
)
async def test_a_bad_first_frame_is_refused(secured: ServerProcess, first: str, code: str) -> None:
    client = await RoomClient.open(secured.ws(""))
    await client.ws.send(first)
    await refused_with(client, code)


async def test_no_hello_in_time_is_refused(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--jwt-secret", SECRET, "--hello-timeout", "0.3")
    client = await RoomClient.open(server.ws(""))
    await refused_with(client, "unauthorized")


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (token(ttl=-60), "token_expired"),
        # Built at collection, maybe many minutes before the test runs: far ahead.
        (token(nbf=int(time.time()) + 10 * 365 * 86400), "token_not_yet_valid"),
        (
            jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none"),
            "unauthorized",
        ),
        (
            jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "f" * 64, algorithm="HS256"),
            "unauthorized",
        ),
        ("a.b.c", "unauthorized"),
    ],
)
async def test_bad_tokens_are_refused(secured: ServerProcess, value: str, code: str) -> None:
    client = await RoomClient.open(secured.ws(""), query=f"token={value}")
    await refused_with(client, code)


async def test_expiry_closes_unless_refreshed(secured: ServerProcess) -> None:
    short = token(ttl=1.5)
    lapsing = await RoomClient.open(secured.ws(""), query=f"token={short}")
    refreshed = await RoomClient.open(secured.ws(""), query=f"token={short}")
    await refreshed.next_of("welcome")
    await refreshed.send(type="refresh", token=token(ttl=3600))
    renewed = await refreshed.next_of("welcome", 1)
    assert renewed["expires"] > time.time() + 3000
    await refused_with(lapsing, "token_expired")  # the unrefreshed one is closed at expiry
    mark = len(refreshed.frames)
    await refreshed.send(type="ping", ref="still")  # ...while the refreshed one is not
    assert (await refreshed.next_of("pong", mark))["ref"] == "still"
    await refreshed.send(type="refresh", token=token("mallory"))
    assert (await refreshed.next_of("error", mark))["code"] == "unauthorized"
    await refreshed.close()


async def test_guests_are_off_when_tokens_are_configured(secured: ServerProcess) -> None:
    guest = await RoomClient.open(secured.ws(""), "visitor")
    await refused_with(guest, "unauthorized")


async def test_guest_rules_and_unique_names(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--jwt-secret", SECRET, "--guests", "true", "--guest-rooms", "public-*")
    ann = await RoomClient.open(server.ws(""), "Ann")
    assert (await ann.next_of("welcome"))["guest"] is True
    await ann.join("public-1")
    mark = len(ann.frames)
    await ann.send(type="join", room="private")
    assert (await ann.next_of("error", mark))["code"] == "forbidden"
    # The same guest again (a second tab, a reconnection) comes with its guest token.
    held = (await ann.next_of("welcome"))["guest_token"]
    tab = await RoomClient.open(server.ws(""), query=f"guest={held}")
    assert (await tab.join("public-1"))["members"] == ["Ann"]
    # A user with a token and the same display name is someone else: refused in that room.
    impostor = await RoomClient.open(
        server.ws(""), query=f"token={token('ann', rooms=['public-*'])}"
    )
    mark = len(impostor.frames)
    await impostor.send(type="join", room="public-1")
    assert (await impostor.next_of("error", mark))["code"] == "name_taken"
    await impostor.join("public-2")  # unique per room, not everywhere
    await ann.close()
    await tab.close()
    await impostor.join("public-1")  # free again once the guest has left
    await impostor.close()


async def test_cookie_upgrades_must_come_from_an_allowed_origin(secured: ServerProcess) -> None:
    cookie = {"Cookie": f"hubbub_session={token('carol')}"}
    async with connect(
        secured.ws("/v1/ws"), additional_headers={**cookie}, origin="https://chat.example"
    ) as ws:
        assert '"welcome"' in str(await ws.recv())
    for origin in (None, "https://evil.example"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(secured.ws("/v1/ws"), additional_headers=cookie, origin=origin):
                pass
        assert refused.value.response.status_code == 403
    # A token in the URL needs no Origin check.
    async with connect(
        secured.ws(f"/v1/ws?token={token('dan')}"), origin="https://elsewhere.example"
    ) as ws:
        assert '"welcome"' in str(await ws.recv())
