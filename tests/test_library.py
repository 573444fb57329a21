"""``create_app`` as a library: in-process, and under a plain uvicorn (the ASGI write path)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from hubbub import Settings, create_app
from tests.rawws import RawWebSocket
from tests.servers import ServerProcess

TIMEOUT = 10
PLAIN_UVICORN = [sys.executable, "-m", "uvicorn", "--factory", "hubbub.app:create_app_from_env"]


def test_create_app_returns_a_fastapi_app_with_the_tutorial_routes() -> None:
    app = create_app(Settings())
    assert isinstance(app, FastAPI)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/").text.startswith("<!DOCTYPE html>")
        with client.websocket_connect("/ws") as ws:
            ws.send_text("in process")
            assert ws.receive_text() == "Message text was: in process"
        with client.websocket_connect("/items/7/ws?token=t") as ws:
            ws.send_text("m")
            assert ws.receive_text() == "Session cookie or query token value is: t"
            assert ws.receive_text() == "Message text was: m, for item ID: 7"


@pytest.fixture
def plain_uvicorn(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """The app under uvicorn's own WebSocket protocol: no direct channel, writer tasks."""
    return start_server(command=PLAIN_UVICORN, env={"HUBBUB_OUTBOX_MAX_BYTES": "65536"})


async def test_chat_under_plain_uvicorn(plain_uvicorn: ServerProcess) -> None:
    async with connect(plain_uvicorn.ws("/ws/1")) as one, connect(plain_uvicorn.ws("/ws/2")) as two:
        await one.send("hi")
        assert await asyncio.wait_for(one.recv(), TIMEOUT) == "You wrote: hi"
        assert await asyncio.wait_for(one.recv(), TIMEOUT) == "Client #1 says: hi"
        assert await asyncio.wait_for(two.recv(), TIMEOUT) == "Client #1 says: hi"
        await two.close()
        assert await asyncio.wait_for(one.recv(), TIMEOUT) == "Client #2 left the chat"
        await one.send(b"binary")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(one.recv(), TIMEOUT)
        assert one.protocol.close_rcvd is not None and one.protocol.close_rcvd.code == 1003


async def test_slow_consumer_is_closed_under_plain_uvicorn(plain_uvicorn: ServerProcess) -> None:
    stalled = RawWebSocket(plain_uvicorn.port, "/ws/9", rcvbuf=4096)
    async with connect(plain_uvicorn.ws("/ws/1"), max_size=None) as sender:
        pad = "q" * 16_000
        for i in range(600):  # ~10 MB: more than the socket buffers and the 64 KiB outbox
            await sender.send(f"{i}|{pad}")
            assert await asyncio.wait_for(sender.recv(), TIMEOUT) == f"You wrote: {i}|{pad}"
            assert await asyncio.wait_for(sender.recv(), TIMEOUT) == f"Client #1 says: {i}|{pad}"
    await asyncio.to_thread(plain_uvicorn.wait_for_log, "closing slow consumer")
    stalled.close()
