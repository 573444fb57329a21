"""HTTP requests and WebSocket upgrades through Hubbub's own server protocols.

As ``hubbub serve`` runs them, without sockets: ``HubbubHttpProtocol`` (httptools) on
a recording transport, handing an upgrade to ``HubbubWebSocketProtocol`` (websockets'
handshake parser, then frames).

The input is the client's byte stream, delivered in two reads (it chooses the cut);
the path picks the endpoint: ``/reject`` refuses the handshake (403), ``/asgi``
echoes through ASGI ``receive``/``send``, anything else accepts and attaches a
receiver (as Hubbub's endpoints do). Failures:

- an exception out of ``data_received``, or anything logged at ERROR (a traceback);
- an upgrade request that got no answer: the WebSocket protocol exists (httptools
  took the request as an upgrade, so the request deadline is off), yet nothing was
  written and the transport is open, so the socket would stay open forever;
- after the peer goes away, a task of the connection that does not end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import atheris

with atheris.instrument_imports(include=["hubbub", "uvicorn", "websockets"]):
    import uvloop
    from uvicorn.server import ServerState

    from hubbub.config import Settings
    from hubbub.connection import DIRECT_EXTENSION
    from hubbub.server import HubbubHttpProtocol, HubbubWebSocketProtocol, ServerConfig

from fuzz._run import run

TURNS = 8  # loop turns after each read: the ASGI task accepts, attaches, answers
END_TURNS = 100  # after the peer went away, every task must be done within these


class RecordingTransport(asyncio.Transport):
    """Keeps what the protocol writes; knows its protocol (uvicorn swaps it)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: Any) -> None:
        self.written += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

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


class Receiver:
    """An attached receiver, as Hubbub's endpoints hand the connection."""

    def receive_text(self, text: str) -> None:
        pass

    def receive_bytes(self, data: bytes) -> None:
        pass

    def disconnected(self, code: int) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    """A small ASGI app with the three kinds of WebSocket endpoint and an HTTP one."""
    if scope["type"] == "http":
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/reject":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    if scope["path"] != "/asgi":
        scope["extensions"][DIRECT_EXTENSION].attach(Receiver())
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        reply = {"text": message["text"]} if message.get("text") is not None else {}
        await send({"type": "websocket.send", "bytes": message.get("bytes"), **reply})


class Errors(logging.Handler):
    """Keeps every record at ERROR or above (a logged traceback is a failure)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


config = ServerConfig(app, Settings())  # the server's own: ws_max_size, no deflate...
config.load()
errors = Errors()
for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "hubbub", "websockets"):
    logger = logging.getLogger(name)
    logger.handlers = [errors]
    logger.propagate = False
loop = uvloop.new_event_loop()
asyncio.set_event_loop(loop)  # uvicorn builds the WebSocket protocol on the current loop
state = ServerState()


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cut = fdp.ConsumeUInt(2)
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    cut %= len(stream) + 1
    transport = RecordingTransport()
    http = HubbubHttpProtocol(config, state, {}, _loop=loop)
    transport.set_protocol(http)
    http.connection_made(transport)
    try:
        for piece in (stream[:cut], stream[cut:]):
            if piece and not transport.closed:
                protocol = transport.get_protocol()
                assert isinstance(protocol, asyncio.Protocol)
                protocol.data_received(piece)
                loop.run_until_complete(turns(TURNS))
        ws = transport.get_protocol()
        if isinstance(ws, HubbubWebSocketProtocol) and not transport.written:
            assert transport.closed, (
                "upgrade request left unanswered with the socket open; websockets: "
                f"{ws.conn.handshake_exc!r}"
            )
        ws_or_http = transport.get_protocol()
        assert isinstance(ws_or_http, asyncio.Protocol)
        ws_or_http.connection_lost(None)
        if ws_or_http is not http:
            http.connection_lost(None)
        loop.run_until_complete(turns(END_TURNS))
        assert not state.tasks, f"tasks still running after the peer left: {state.tasks}"
        if errors.records:
            record = errors.records[0]
            raise AssertionError(f"logged at {record.levelname}: {record.getMessage()}") from (
                record.exc_info[1] if record.exc_info else None
            )
    finally:
        errors.records.clear()
        for task in list(state.tasks):
            task.cancel()
        state.tasks.clear()
        state.connections.clear()


def _seed(request: bytes, cut: int = 0) -> bytes:
    return cut.to_bytes(2, "little") + request


_UPGRADE = (
    b"Host: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_HELLO = b"\x81\x85\x01\x02\x03\x04" + bytes(b ^ (i % 4 + 1) for i, b in enumerate(b"hello"))
SEEDS = [
    _seed(b"GET /v1/ws?name=ann HTTP/1.1\r\n" + _UPGRADE),
    _seed(b"GET /asgi HTTP/1.1\r\n" + _UPGRADE + _HELLO, cut=40),
    _seed(b"GET /reject HTTP/1.1\r\n" + _UPGRADE),
    _seed(b"GET /ws HTTP/1.1\r\n" + _UPGRADE + _HELLO + b"\x88\x82\x00\x00\x00\x00\x03\xe8"),
    _seed(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    _seed(b"GET /ws HTTP/1.1\r\nContent-Length: 0\r\n" + _UPGRADE),  # some clients send it
    _seed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    _seed(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", cut=20),
    _seed(
        b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
]


if __name__ == "__main__":
    run(test_one_input, SEEDS, ["-max_len=80000"])  # past the 64 KiB header line limit
