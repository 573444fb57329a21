"""Hostile identities and numbers (issue 12, holes 4, 5 and 8), against a real server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.roomclient import RoomClient
from tests.servers import ServerProcess

SECRET = "k" * 64


def signed(claims_json: bytes) -> str:
    """An HS256 token over exactly these claims (JSON a library would not write)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(claims_json).rstrip(b"=")
    signature = hmac.new(SECRET.encode(), header + b"." + body, hashlib.sha256).digest()
    return b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()


# -- hole 4: cross-site WebSocket hijacking on /items/{item_id}/ws ---------------------------


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
async def test_a_cookie_from_a_foreign_origin_is_refused(
    server: ServerProcess, origin: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            server.ws("/items/7/ws"), additional_headers={"Cookie": "session=victim"}, origin=origin
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_a_cookie_from_the_servers_own_or_an_allowed_origin_or_none_works(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--allowed-origins", "https://app.example")
    cookie = {"Cookie": "session=mine"}
    own = f"http://127.0.0.1:{server.port}"
    for origin in (own, "https://app.example", None):  # None: no browser, the tutorial's tests
        async with connect(
            server.ws("/items/7/ws"), additional_headers=cookie, origin=origin
        ) as ws:
            await ws.send("hi")
            assert await ws.recv() == "Session cookie or query token value is: mine"
    # A token in the query is no ambient credential: any page may use its own.
    async with connect(server.ws("/items/7/ws?token=t"), origin="https://evil.example") as ws:
        await ws.send("hi")
        assert await ws.recv() == "Session cookie or query token value is: t"


# -- hole 5: credentials in URLs never reach the log ---------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_tokens_in_urls_are_not_logged(
    start_server: Callable[..., ServerProcess], log_format: str
) -> None:
    server = start_server("--jwt-secret", SECRET, "--guests", "true", "--log-format", log_format)
    user = jwt.encode({"sub": "al", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    client = await RoomClient.open(server.ws(""), query=f"token={user}")
    await client.next_of("welcome")
    await client.close()
    guest = await RoomClient.open(server.ws(""), "Ann")
    held = (await guest.next_of("welcome"))["guest_token"]
    await guest.close()
    again = await RoomClient.open(server.ws(""), query=f"name=Ann&guest={held}")
    await again.next_of("welcome")
    await again.close()
    async with connect(server.ws("/items/3/ws?q=1&token=letmein-4711")) as ws:
        await ws.send("x")
        await ws.recv()
    async with connect(server.ws("/items/4/ws?%74oken=encoded-0815")) as ws:  # "token"
        await ws.send("x")
        assert await ws.recv() == "Session cookie or query token value is: encoded-0815"
    server.wait_for_log(r"/items/3/ws\?q=1&token=\*\*\*")
    server.wait_for_log(r"/items/4/ws\?%74oken=\*\*\*")
    for secret in (user, held, "letmein-4711", "encoded-0815", user.split(".")[2]):
        assert secret not in server.log
    assert "/v1/ws?token=***" in server.log and "guest=***" in server.log
    if log_format == "json":
        assert all(json.loads(line) for line in server.log.splitlines() if line.startswith("{"))


# -- hole 8: numbers beyond what the server can hold ---------------------------------------


@pytest.mark.parametrize("before", [2**63, 2**70, 2**53 + 1])
async def test_a_huge_seq_is_a_bad_frame(server: ServerProcess, before: int) -> None:
    client = await RoomClient.open(server.ws(""), "Ann")
    await client.join("lobby")
    for frame in (
        {"type": "history", "room": "lobby", "before": before},
        {"type": "join", "room": "lobby", "since": before},
    ):
        mark = len(client.frames)
        await client.send(**frame)
        assert (await client.next_of("error", mark))["code"] == "bad_frame", frame
    mark = len(client.frames)
    await client.send(type="ping", ref=1)
    await client.next_of("pong", mark)  # still open
    await client.close()


@pytest.mark.parametrize(
    "claims",
    [
        b'{"sub":"a","exp":1' + b"0" * 400 + b"}",
        b'{"sub":"a","exp":1e400}',
        b'{"sub":"a","exp":9007199254740993}',
        b'{"sub":"a","exp":4102444800,"nbf":1' + b"0" * 400 + b"}",
        b'{"sub":"a","exp":4102444800,"iat":1e400}',
    ],
)
async def test_a_token_with_a_huge_number_is_refused(
    start_server: Callable[..., ServerProcess], claims: bytes
) -> None:
    server = start_server("--jwt-secret", SECRET)
    client = await RoomClient.open(server.ws(""), query=f"token={signed(claims)}")
    error = await client.next_of("error")
    assert error["code"] in ("unauthorized", "token_not_yet_valid"), error
    await client.wait(lambda: client.closed)
    assert client.close_code == 1008
