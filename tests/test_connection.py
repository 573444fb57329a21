"""connection.py as plain objects: outbox bounds, both write paths, closing, receiving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hubbub.connection import DIRECT_EXTENSION, Connection
from hubbub.outgoing import OutFrame


@dataclass
class Limits:
    outbox_max_bytes: int = 1000
    outbox_max_messages: int = 4
    close_timeout: float = 5.0


class FakeDirect:
    """Stands in for the WebSocket session's direct channel."""

    def __init__(self) -> None:
        self.conn_id = ""
        self.deflate: tuple[int, int] | None = None
        self.writable = True
        self.written: list[bytes] = []
        self.callback: Callable[[], None] | None = None
        self.closed: tuple[int, str] | None = None
        self.receiver: Any = None
        self.holding: list[bool] = []

    def is_writable(self) -> bool:
        return self.writable

    def write_frame(self, frame: bytes) -> None:
        self.written.append(frame)

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        self.callback = callback

    def close_now(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        if self.receiver is not None:  # as the server does: the disconnect follows
            asyncio.get_running_loop().call_soon(self.receiver.disconnected, code)

    def attach(self, receiver: Any) -> None:
        self.receiver = receiver

    def hold_reading(self, hold: bool) -> None:
        self.holding.append(hold)

    def resume(self) -> None:
        self.writable = True
        assert self.callback is not None
        self.callback()


class FakeWebSocket:
    """Just enough of Starlette's WebSocket; ``send`` can be held to simulate a full socket."""

    def __init__(self, direct: FakeDirect | None = None) -> None:
        self.scope: dict[str, Any] = {"extensions": {DIRECT_EXTENSION: direct} if direct else {}}
        self.client = None
        self.sent: list[dict[str, Any]] = []
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.send_allowed = asyncio.Event()
        self.send_allowed.set()
        self.sent_one = asyncio.Event()
        self.close_calls: list[tuple[int, str]] = []
        self.close_blocks = False

    async def accept(self) -> None:
        pass

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_allowed.wait()
        self.sent.append(message)
        self.sent_one.set()

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def close(self, code: int, reason: str = "") -> None:
        self.close_calls.append((code, reason))
        if self.close_blocks:
            await asyncio.Event().wait()


def frame(n: int, size: int = 10) -> OutFrame:
    return OutFrame(str(n).encode().ljust(size, b"."))


async def direct_connection(
    limits: Limits | None = None,
) -> tuple[Connection, FakeDirect, list[Connection]]:
    direct = FakeDirect()
    slow: list[Connection] = []
    conn = Connection(FakeWebSocket(direct), limits or Limits(), slow.append)  # type: ignore[arg-type]
    await conn.accept()
    return conn, direct, slow


async def test_direct_writes_at_once_while_writable() -> None:
    conn, direct, _ = await direct_connection()
    frames = [frame(i) for i in range(10)]
    for f in frames:
        conn.send(f)
    assert direct.written == [f.wire for f in frames]
    assert conn.queued == (0, 0)


async def test_direct_queues_while_full_and_drains_in_order() -> None:
    conn, direct, slow = await direct_connection()
    conn.send(frame(0))
    direct.writable = False
    for i in range(1, 5):
        conn.send(frame(i))
    assert len(direct.written) == 1
    assert conn.queued == (4, 4 * (2 + 10))
    direct.resume()
    assert direct.written == [frame(i).wire for i in range(5)]
    assert conn.queued == (0, 0)
    assert slow == []


async def test_direct_send_after_resume_keeps_order_behind_the_queue() -> None:
    conn, direct, _ = await direct_connection()
    direct.writable = False
    conn.send(frame(1))
    direct.writable = True  # writable again, but the drain has not run yet
    conn.send(frame(2))  # must not overtake frame 1
    assert direct.written == []
    direct.resume()
    assert direct.written == [frame(1).wire, frame(2).wire]


async def test_drain_stops_when_the_transport_fills_again() -> None:
    conn, direct, _ = await direct_connection()
    direct.writable = False
    for i in range(3):
        conn.send(frame(i))

    def write_then_fill(data: bytes) -> None:
        direct.written.append(data)
        direct.writable = False

    direct.write_frame = write_then_fill  # type: ignore[method-assign]
    direct.resume()
    assert direct.written == [frame(0).wire]
    assert conn.queued[0] == 2


async def test_overflow_by_message_count_closes_1008_once() -> None:
    conn, direct, slow = await direct_connection(Limits(outbox_max_messages=3))
    direct.writable = False
    for i in range(3):
        conn.send(frame(i))
    assert slow == [] and direct.closed is None
    conn.send(frame(3))
    assert slow == [conn]
    assert direct.closed == (1008, "slow consumer")
    assert conn.closing and conn.queued == (0, 0)
    conn.send(frame(4))
    direct.resume()
    assert slow == [conn]
    assert direct.written == []


async def test_overflow_by_bytes_closes_1008() -> None:
    conn, direct, slow = await direct_connection(
        Limits(outbox_max_bytes=30, outbox_max_messages=99)
    )
    direct.writable = False
    conn.send(frame(0, size=14))  # 16 bytes on the wire
    conn.send(frame(1, size=14))  # 32 > 30
    assert slow == [conn]
    assert direct.closed == (1008, "slow consumer")


async def test_asgi_path_sends_in_order_through_a_writer_task() -> None:
    ws = FakeWebSocket()
    conn = Connection(ws, Limits(outbox_max_messages=100), lambda c: None)  # type: ignore[arg-type]
    await conn.accept()
    for i in range(5):
        conn.send(frame(i))
    while len(ws.sent) < 5:
        ws.sent_one.clear()
        await asyncio.wait_for(ws.sent_one.wait(), 5)
    assert [m["text"] for m in ws.sent] == [frame(i).payload.decode() for i in range(5)]
    await conn.finish()


async def test_asgi_path_overflow_closes_with_1008_and_cancels_the_writer() -> None:
    ws = FakeWebSocket()
    ws.send_allowed.clear()  # the socket is full
    slow: list[Connection] = []
    conn = Connection(ws, Limits(outbox_max_messages=2), slow.append)  # type: ignore[arg-type]
    await conn.accept()
    for i in range(4):  # one is held in send(), two fill the outbox, the fourth overflows
        conn.send(frame(i))
        await asyncio.sleep(0)  # let the writer pick up the first
    assert slow == [conn]
    await conn.finish()
    assert ws.close_calls == [(1008, "slow consumer")]


async def test_asgi_close_that_never_completes_is_bounded() -> None:
    ws = FakeWebSocket()
    ws.close_blocks = True
    conn = Connection(ws, Limits(close_timeout=0.01), lambda c: None)  # type: ignore[arg-type]
    await conn.accept()
    conn.close(1008, "slow consumer")
    # The close task gives up by itself after close_timeout (nothing cancels it here).
    await asyncio.wait_for(conn._outlet.wait(), 5)
    await conn.finish()


async def test_texts_yields_text_closes_on_binary_and_ends_on_disconnect() -> None:
    conn, direct, _ = await direct_connection()
    ws = conn.websocket
    for message in (
        {"type": "websocket.receive", "text": "a"},
        {"type": "websocket.receive", "bytes": b"b"},
        {"type": "websocket.receive", "text": "after close"},
        {"type": "websocket.disconnect", "code": 1003},
    ):
        ws.incoming.put_nowait(message)  # type: ignore[attr-defined]
    got = [text async for text in conn.texts()]
    assert got == ["a"]
    assert direct.closed == (1003, "text frames only")
    assert conn.close_code == 1003


async def test_disconnect_code_is_recorded() -> None:
    conn, _, _ = await direct_connection()
    conn.websocket.incoming.put_nowait({"type": "websocket.disconnect", "code": 1001})  # type: ignore[attr-defined]
    assert [t async for t in conn.texts()] == []
    assert conn.close_code == 1001
    await conn.finish()
    assert conn.closing


@pytest.mark.parametrize("code", [1000, 1008])
async def test_close_twice_sends_one_close(code: int) -> None:
    conn, direct, _ = await direct_connection()
    conn.close(code, "x")
    conn.close(1011, "y")
    assert direct.closed == (code, "x")


# -- serve_serially on the direct path ----------------------------------------------


async def serial_connection() -> tuple[Connection, FakeDirect, list[str], list[str]]:
    """A direct connection whose handler records each text after a real suspension."""
    direct = FakeDirect()
    connection = Connection(FakeWebSocket(direct), Limits(), lambda c: None)  # type: ignore[arg-type]
    await connection.accept()
    handled: list[str] = []
    ended: list[str] = []

    async def handle(text: str) -> None:
        await asyncio.sleep(0)
        if text == "boom":
            raise RuntimeError("endpoint bug")
        if text == "stray cancel":
            raise asyncio.CancelledError  # e.g. a library's future cancelled under us
        handled.append(text)

    async def on_end() -> None:
        await asyncio.sleep(0)
        ended.append(f"after {len(handled)}")

    await connection.serve_serially(handle, on_end)
    assert direct.receiver is connection
    return connection, direct, handled, ended


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_serial_handler_gets_every_message_in_order_and_holds_reading_when_behind() -> None:
    from hubbub.connection import INBOX_LIMIT

    connection, direct, handled, ended = await serial_connection()
    for i in range(INBOX_LIMIT + 3):
        connection.receive_text(str(i))
    assert direct.holding == [True]
    await settle()
    assert handled == [str(i) for i in range(INBOX_LIMIT + 3)]
    assert direct.holding == [True, False]
    assert ended == []


async def test_serial_on_end_runs_once_after_the_messages_that_came_before_the_close() -> None:
    connection, _, handled, ended = await serial_connection()
    connection.receive_text("a")
    connection.receive_text("b")
    connection.disconnected(1000)
    connection.disconnected(1000)
    await settle()
    assert handled == ["a", "b"]
    assert ended == ["after 2"]


async def test_serial_handler_failure_closes_1011_and_still_ends() -> None:
    connection, direct, handled, ended = await serial_connection()
    connection.receive_text("boom")
    connection.receive_text("dropped: the connection is closing")
    await settle()
    assert direct.closed == (1011, "internal error")
    assert handled == []
    assert ended == ["after 0"]


async def test_serial_idle_connection_holds_no_task() -> None:
    connection, _, handled, _ = await serial_connection()
    connection.receive_text("x")
    await settle()
    assert handled == ["x"]
    assert connection._worker is None


async def test_serial_handler_hit_by_a_stray_cancellation_closes_1011_and_still_ends() -> None:
    connection, direct, _, ended = await serial_connection()
    connection.receive_text("stray cancel")
    await settle()
    assert direct.closed == (1011, "internal error")
    assert ended == ["after 0"]
