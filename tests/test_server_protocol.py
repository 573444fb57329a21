"""The WebSocket session's attached receivers, driven in-process through a recording
transport (the entry protocol reads the upgrade, as under ``hubbub serve``): per-turn
message budget, order, and what a failing endpoint gets."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from hubbub.connection import DIRECT_EXTENSION
from hubbub.transport.entry import HttpEntry
from hubbub.transport.websocket import MESSAGES_PER_TURN, WebSocketSession
from tests.rawws import OP_BINARY, OP_PING, OP_TEXT, frame, handshake_request


class RecordingTransport(asyncio.Transport):
    """Keeps what the protocol writes and whether reading is paused."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading_paused = False
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def write(self, data: Any) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """The server frames written after the handshake response."""
        data = bytes(self.written).partition(b"\r\n\r\n")[2]
        while data:
            opcode, n, at = data[0] & 0x0F, data[1] & 0x7F, 2
            if n == 126:
                (n,), at = struct.unpack("!H", data[2:4]), 4
            yield opcode, data[at : at + n]
            data = data[at + n :]


class Recorder:
    """A receiver that keeps what it is given; fails on the text "boom"."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.binaries: list[bytes] = []
        self.closed_with: list[int] = []

    def receive_text(self, text: str) -> None:
        if text == "boom":
            raise RuntimeError("endpoint bug")
        self.texts.append(text)

    def receive_bytes(self, data: bytes) -> None:
        self.binaries.append(data)

    def disconnected(self, code: int) -> None:
        self.closed_with.append(code)


async def open_attached(early: bytes = b"") -> tuple[WebSocketSession, Recorder, Any]:
    """A protocol on a recording transport whose endpoint accepted and attached a
    :class:`Recorder`; ``early`` arrives in the same read as the handshake."""
    recorder = Recorder()
    attached = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        scope["extensions"][DIRECT_EXTENSION].attach(recorder)
        attached.set()

    # A plain uvicorn config (its defaults: Hubbub's settings) leaves logging alone.
    config = uvicorn.Config(app, log_config=None)
    config.load()
    entry = HttpEntry(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    entry.connection_made(transport)
    entry.data_received(handshake_request("/ws", 8000) + early)
    await asyncio.wait_for(attached.wait(), 5)
    await asyncio.sleep(0)  # let the ASGI task finish
    session = transport.get_protocol()
    assert isinstance(session, WebSocketSession)
    return session, recorder, transport


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_burst_is_handled_a_budget_per_turn_with_reading_paused_in_between() -> None:
    protocol, recorder, transport = await open_attached()
    burst = 3 * MESSAGES_PER_TURN + 5
    protocol.data_received(b"".join(frame(OP_TEXT, str(i).encode()) for i in range(burst)))
    assert len(recorder.texts) == MESSAGES_PER_TURN
    assert transport.reading_paused
    await turns(1)
    assert len(recorder.texts) == 2 * MESSAGES_PER_TURN
    # What arrives while behind goes after what is waiting.
    protocol.data_received(frame(OP_TEXT, b"late"))
    await turns(5)
    assert recorder.texts == [str(i) for i in range(burst)] + ["late"]
    assert not transport.reading_paused


async def test_control_frames_do_not_count_against_the_budget() -> None:
    protocol, recorder, transport = await open_attached()
    pings = b"".join(frame(OP_PING, b"p") for _ in range(2 * MESSAGES_PER_TURN))
    protocol.data_received(pings + frame(OP_TEXT, b"after the pings"))
    assert recorder.texts == ["after the pings"]
    assert not transport.reading_paused
    assert sum(1 for opcode, _ in transport.frames() if opcode == 0xA) == 2 * MESSAGES_PER_TURN


async def test_messages_sent_with_the_handshake_reach_the_receiver_in_order() -> None:
    early = frame(OP_TEXT, b"one") + frame(OP_TEXT, b"two") + frame(OP_BINARY, b"\x00")
    _, recorder, transport = await open_attached(early)
    assert recorder.texts == ["one", "two"]
    assert recorder.binaries == [b"\x00"]
    assert not transport.reading_paused


async def test_a_failing_endpoint_closes_1011_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    protocol, recorder, transport = await open_attached()
    with caplog.at_level(logging.ERROR, logger="hubbub.server"):
        protocol.data_received(frame(OP_TEXT, b"boom") + frame(OP_TEXT, b"after"))
    assert "the endpoint failed" in caplog.text
    opcode, payload = list(transport.frames())[-1]
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, 1011)
    assert recorder.texts == []  # nothing is handed on once the close is sent
    await turns(1)
    assert recorder.closed_with == [1011]


async def test_the_disconnect_is_told_once_with_the_first_code() -> None:
    protocol, recorder, _ = await open_attached()
    protocol.data_received(frame(0x8, struct.pack("!H", 1000)))
    protocol.connection_lost(None)
    await turns(1)
    assert recorder.closed_with == [1000]


async def test_frames_after_our_close_are_dropped_not_kept() -> None:
    protocol, recorder, transport = await open_attached()
    protocol.close_now(1008, "test")
    protocol.data_received(b"".join(frame(OP_TEXT, b"x") for _ in range(3 * MESSAGES_PER_TURN)))
    assert not transport.reading_paused  # the answer to our close must be read
    assert recorder.texts == []


async def test_a_held_receiver_gets_nothing_more_until_released() -> None:
    protocol, recorder, transport = await open_attached()
    protocol.hold_reading(True)
    protocol.data_received(b"".join(frame(OP_TEXT, str(i).encode()) for i in range(10)))
    assert recorder.texts == []
    assert transport.reading_paused
    await turns(3)
    assert recorder.texts == []
    protocol.hold_reading(False)
    await turns(3)
    assert recorder.texts == [str(i) for i in range(10)]
    assert not transport.reading_paused


async def test_an_asgi_endpoint_sending_after_the_clients_close_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Found by fuzz/upgrade.py: a send after the close raised inside the session's task.
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})

    config = uvicorn.Config(echo, log_config=None)
    config.load()
    state = ServerState()
    entry = HttpEntry(config=config, server_state=state, app_state={})
    transport = RecordingTransport()
    entry.connection_made(transport)
    close = frame(0x8, struct.pack("!H", 1000))
    with caplog.at_level(logging.ERROR):
        entry.data_received(handshake_request("/ws", 8000) + frame(OP_TEXT, b"hello") + close)
        (task,) = state.tasks
        await asyncio.wait_for(task, 5)
    assert task.exception() is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_pings_are_not_answered_while_the_buffer_is_full() -> None:
    # Pongs go into the transport whatever its buffer holds: a client that sends pings
    # and never reads would grow the server's memory without limit.
    protocol, _, transport = await open_attached()
    before = len(transport.written)
    protocol.pause_writing()  # the transport's buffer is over its high-water mark
    protocol.data_received(b"".join(frame(OP_PING, b"p" * 100) for _ in range(1000)))
    assert len(transport.written) == before
    protocol.resume_writing()
    protocol.data_received(frame(OP_PING, b"again"))
    assert list(transport.frames())[-1] == (0xA, b"again")
