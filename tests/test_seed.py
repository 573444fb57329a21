"""The tutorial's endpoints over real sockets against a real ``hubbub serve`` process."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.servers import ServerProcess

TIMEOUT = 10


async def recv(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    return message


async def closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert ws.close_code is not None or ws.protocol.close_rcvd is None
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None


def get(server: ServerProcess, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(server.http(path), timeout=TIMEOUT) as response:
        return response.status, response.headers["content-type"], response.read().decode()


async def test_echo_replies_to_every_message_in_order(server: ServerProcess) -> None:
    async with connect(server.ws("/ws")) as ws:
        for text in ["ping", "", "héllo ✓", "x" * 1000]:
            await ws.send(text)
        assert [await recv(ws) for _ in range(4)] == [
            "Message text was: ping",
            "Message text was: ",
            "Message text was: héllo ✓",
            "Message text was: " + "x" * 1000,
        ]


async def test_items_with_token_and_q_sends_three_lines_per_message(server: ServerProcess) -> None:
    async with connect(server.ws("/items/foo/ws?token=some-key-token&q=3")) as ws:
        for text in ["one", "two"]:
            await ws.send(text)
        assert [await recv(ws) for _ in range(6)] == [
            "Session cookie or query token value is: some-key-token",
            "Query parameter q is: 3",
            "Message text was: one, for item ID: foo",
            "Session cookie or query token value is: some-key-token",
            "Query parameter q is: 3",
            "Message text was: two, for item ID: foo",
        ]


async def test_items_with_session_cookie_and_no_q_sends_two_lines(server: ServerProcess) -> None:
    headers = {"Cookie": "session=cookie-value"}
    async with connect(server.ws("/items/bar/ws"), additional_headers=headers) as ws:
        await ws.send("hi")
        assert [await recv(ws) for _ in range(2)] == [
            "Session cookie or query token value is: cookie-value",
            "Message text was: hi, for item ID: bar",
        ]
        await ws.send("again")
        assert await recv(ws) == "Session cookie or query token value is: cookie-value"


async def test_items_cookie_wins_over_token(server: ServerProcess) -> None:
    headers = {"Cookie": "session=from-cookie"}
    async with connect(server.ws("/items/x/ws?token=from-query"), additional_headers=headers) as ws:
        await ws.send("m")
        assert await recv(ws) == "Session cookie or query token value is: from-cookie"


@pytest.mark.parametrize(
    "path",
    [
        "/items/foo/ws",  # neither cookie nor token: 1008 before accept
        "/items/foo/ws?q=3",  # q without credentials
        "/items/foo/ws?token=t&q=three",  # q is not an integer
        "/ws/not-a-number",  # client_id is not an integer
        "/ws/1.5",
    ],
)
async def test_handshake_is_rejected(server: ServerProcess, path: str) -> None:
    # An ASGI close before accept is answered with HTTP 403, as the tutorial's code is.
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws(path)):
            pass
    assert refused.value.response.status_code == 403
    async with connect(server.ws("/ws")) as ws:  # and the server still serves others
        await ws.send("alive")
        assert await recv(ws) == "Message text was: alive"


async def test_chat_reaches_every_client_and_announces_leaving(server: ServerProcess) -> None:
    async with (
        connect(server.ws("/ws/1")) as one,
        connect(server.ws("/ws/2")) as two,
        connect(server.ws("/ws/3")) as three,
    ):
        await one.send("hello")
        assert await recv(one) == "You wrote: hello"
        for ws in (one, two, three):
            assert await recv(ws) == "Client #1 says: hello"
        await two.send("hi from two")
        assert await recv(two) == "You wrote: hi from two"
        for ws in (one, two, three):
            assert await recv(ws) == "Client #2 says: hi from two"
        await three.close()
        assert await recv(one) == "Client #3 left the chat"
        assert await recv(two) == "Client #3 left the chat"
        await one.send("bye")
        assert await recv(one) == "You wrote: bye"
        assert await recv(one) == "Client #1 says: bye"
        assert await recv(two) == "Client #1 says: bye"


async def test_chat_keeps_each_senders_order(server: ServerProcess) -> None:
    async with connect(server.ws("/ws/7")) as sender, connect(server.ws("/ws/8")) as reader:
        for i in range(200):
            await sender.send(str(i))
        assert [await recv(reader) for _ in range(200)] == [
            f"Client #7 says: {i}" for i in range(200)
        ]


async def test_binary_frame_closes_with_1003(server: ServerProcess) -> None:
    for path in ("/ws", "/ws/5", "/items/i/ws?token=t"):
        async with connect(server.ws(path)) as ws:
            await ws.send(b"\x00\x01")
            assert await closed_with(ws) == 1003


async def test_frame_over_the_limit_closes_with_1009(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--max-frame-bytes", "1024")
    async with connect(server.ws("/ws"), max_size=None) as ws:
        await ws.send("a" * 1024)
        assert await recv(ws) == "Message text was: " + "a" * 1024
        await ws.send("a" * 1025)
        assert await closed_with(ws) == 1009


async def test_default_frame_limit_is_64_kib(server: ServerProcess) -> None:
    async with connect(server.ws("/ws"), max_size=None) as ws:
        await ws.send("b" * 65536)
        assert await recv(ws) == "Message text was: " + "b" * 65536
        await ws.send("b" * 65537)
        assert await closed_with(ws) == 1009


async def test_index_page_is_html(server: ServerProcess) -> None:
    status, content_type, body = get(server, "/")
    assert status == 200
    assert content_type.startswith("text/html")
    assert body.startswith("<!DOCTYPE html>")
    assert '<script type="module" src="static/app.js">' in body  # relative: any prefix


async def test_health_and_readiness(server: ServerProcess) -> None:
    status, content_type, body = get(server, "/healthz")
    assert (status, content_type, json.loads(body)) == (200, "application/json", {"status": "ok"})
    status, _, body = get(server, "/readyz")
    ready = json.loads(body)
    assert status == 200
    assert ready["status"] == "ready"
    assert ready["broker"]["url_scheme"] == "memory"
    assert ready["broker"]["ready"] is True
