"""HTTP requests and WebSocket upgrades through Hubbub's transport, from the first byte.

As ``hubbub serve`` runs it, without sockets: ``HttpEntry`` (built as uvicorn builds
it, with the server's own ``ServerConfig``, permessage-deflate on) on a recording
transport that knows its protocol (``set_protocol``/``get_protocol``). It parses the
head with httptools; a WebSocket upgrade becomes a ``WebSocketSession`` (the transport's
protocol from then on: the ASGI handshake, the ``101``, then frames), anything else is
handed to uvicorn's httptools protocol, which may hand a later upgrade on the same
connection back to a new ``HttpEntry`` (uvicorn's ``ws`` option).

The input is the client's byte stream, delivered in two reads (it chooses the cut; the
second waits while reading is paused, as a socket would, and is dropped if reading
stays paused); the path picks the endpoint: ``/reject`` refuses the handshake (403),
``/asgi`` echoes through ASGI ``receive``/``send``, anything else accepts and attaches a
receiver (as Hubbub's endpoints do). Failures:

- an exception out of ``data_received``, or anything logged at ERROR (a traceback);
- a request left unanswered with the socket open, so that it would stay open forever:
  a ``WebSocketSession`` was made (the upgrade was checked, its deadline is off) and
  nothing was written after it; an ``HttpEntry`` that uvicorn handed an upgrade to made
  no session; nothing at all was written, yet httptools finds a whole first request
  (head and body, or an upgrade) in what was read, or no HTTP at all (whichever
  protocol has the connection by then: the entry, a session or uvicorn's);
- after the peer went away, a task of the connection that does not end
  (``server_state.tasks``) or a protocol still counted among the server's connections
  (``server_state.connections``: a graceful shutdown waits for it).

``FUZZ_KNOWN`` (a comma-separated list of the names below) lets a run go past open
findings of docs/fuzzing.md until they are fixed; it ignores exactly those failures.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import traceback
from typing import Any

import atheris

with atheris.instrument_imports(include=["hubbub", "uvicorn", "websockets"]):
    import httptools
    import uvloop
    from uvicorn.server import ServerState

    from hubbub.config import Settings
    from hubbub.connection import DIRECT_EXTENSION
    from hubbub.server import ServerConfig
    from hubbub.transport.entry import HttpEntry
    from hubbub.transport.websocket import WebSocketSession
    from hubbub.upstream import KeptAliveHttp

from fuzz._run import run

# Open findings that a run may be told to go past (FUZZ_KNOWN=handover,disconnected).
KNOWN_HANDOVER = "handover"
"""Finding 4: an upgrade to anything but a WebSocket (h2c...), or a CONNECT, reaches
uvicorn's protocol without its bytes, and nobody answers."""
KNOWN_DISCONNECTED = "disconnected"
"""Finding 5: an ASGI app that ``send``s on a closing WebSocket gets ``Disconnected``,
and ``WebSocketSession._run_asgi`` then fails with ``UnboundLocalError``."""
KNOWN = set(filter(None, os.environ.get("FUZZ_KNOWN", "").split(",")))

TURNS = 8  # loop turns after each read: the ASGI task accepts, attaches, answers
END_TURNS = 100  # after the peer went away, every task must be done within these


class RecordingTransport(asyncio.Transport):
    """Keeps what the protocols write, and every protocol it is given (in order, with
    how much had been written then)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading_paused = False
        self.protocols: list[tuple[asyncio.BaseProtocol, int]] = []

    def write(self, data: Any) -> None:
        self.written += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocols.append((protocol, len(self.written)))

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocols[-1][0]

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def is_reading(self) -> bool:
        return not self.reading_paused

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


class Request:
    """httptools callbacks: whether a whole request has been read."""

    def __init__(self) -> None:
        self.complete = False

    def on_message_complete(self) -> None:
        self.complete = True


def answer_due(data: bytes) -> str | None:
    """What httptools finds at the start of ``data`` that the server owes an answer
    for: "a request" (head and body), "an upgrade request", "no HTTP"; else None."""
    request = Request()
    try:
        httptools.HttpRequestParser(request).feed_data(data)
    except httptools.HttpParserUpgrade:
        return "an upgrade request"  # raised once the request is read
    except httptools.HttpParserError:
        return "no HTTP"
    return "a request" if request.complete else None


# The server's own settings (limits, timeouts), with permessage-deflate offered, and
# every echo compressed, so that negotiation, inflating and deflating are fuzzed too.
config = ServerConfig(app, Settings(compression=True, compression_min_bytes=0))
config.load()
errors = Errors()
for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "hubbub", "websockets"):
    logger = logging.getLogger(name)
    logger.handlers = [errors]
    logger.propagate = False
loop = uvloop.new_event_loop()
asyncio.set_event_loop(loop)
state = ServerState()


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _handed_back(kinds: list[str]) -> bool:
    # Finding 4 through uvicorn's ws option: the HttpEntry uvicorn made handed the
    # upgrade on to a new uvicorn protocol (without its bytes), and uvicorn then made
    # that HttpEntry the transport's protocol.
    return ("KeptAliveHttp", "HttpEntry") in itertools.pairwise(kinds)


def unanswered(transport: RecordingTransport, read: bytes) -> str | None:
    """Why the client would wait forever on an open socket, or None."""
    if transport.closed:
        return None
    handover_known = KNOWN_HANDOVER in KNOWN
    protocols = transport.protocols
    kinds = [type(protocol).__name__ for protocol, _ in protocols]
    for index, (protocol, written) in enumerate(protocols):
        if isinstance(protocol, WebSocketSession) and len(transport.written) == written:
            return "a WebSocketSession was made, and nothing written since"
        if isinstance(protocol, HttpEntry) and index and kinds[index - 1] != "WebSocketSession":
            if handover_known and _handed_back(kinds):
                continue  # finding 4, through uvicorn's ws option
            return f"uvicorn handed an upgrade to an HttpEntry, which went on to {kinds[index - 1]}"
    due = answer_due(read) if not transport.written else None
    if due is None:
        return None
    if (
        handover_known
        and due == "an upgrade request"
        and kinds[:2] == ["HttpEntry", "KeptAliveHttp"]
    ):
        return None  # finding 4: what uvicorn's protocol reads next is the rest of the stream
    return f"{due} read, nothing written; protocols: {' -> '.join(kinds)}"


async def connect(stream: bytes, cut: int) -> None:
    transport = RecordingTransport()
    entry = HttpEntry(config=config, server_state=state, app_state={})
    transport.set_protocol(entry)
    entry.connection_made(transport)
    read = b""
    for piece in (stream[:cut], stream[cut:]):
        for _ in range(END_TURNS):
            if not transport.reading_paused:
                break
            await asyncio.sleep(0)
        if not piece or transport.closed or transport.reading_paused:
            continue
        protocol = transport.get_protocol()
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(piece)
        read += piece
        await turns(TURNS)
    why = unanswered(transport, read)
    assert why is None, f"request left unanswered with the socket open: {why}"
    last = transport.get_protocol()
    assert isinstance(last, asyncio.Protocol)
    transport.closed = True  # the peer left: the transport is closing when it says so
    last.connection_lost(None)  # and tells only its protocol of the time
    await turns(END_TURNS)
    assert not state.tasks, f"tasks still running after the peer left: {state.tasks}"
    counted = state.connections
    if KNOWN_HANDOVER in KNOWN and _handed_back([type(p).__name__ for p, _ in transport.protocols]):
        counted = {c for c in counted if not isinstance(c, KeptAliveHttp)}  # finding 4
    assert not counted, f"connections still counted: {counted}"


def _known(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if KNOWN_DISCONNECTED in KNOWN and isinstance(exc, UnboundLocalError):
        frames = traceback.extract_tb(exc.__traceback__)
        return bool(frames) and frames[-1].name == "_run_asgi"
    return False


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cut = fdp.ConsumeUInt(2)
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        loop.run_until_complete(connect(stream, cut % (len(stream) + 1)))
        records = [record for record in errors.records if not _known(record)]
        if records:
            record = records[0]
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
    return cut.to_bytes(2, "little") + request  # ConsumeUInt takes the front bytes


_UPGRADE = (
    b"Host: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_HELLO = b"\x81\x85\x01\x02\x03\x04" + bytes(b ^ (i % 4 + 1) for i, b in enumerate(b"hello"))
_HTTP = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
_DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
# "hello" deflated (RFC 7692 §7.2.3.1), masked with 01 02 03 04, RSV1 set
_HELLO_DEFLATED = b"\xc1\x87\x01\x02\x03\x04" + bytes(
    b ^ (i % 4 + 1) for i, b in enumerate(b"\xf2\x48\xcd\xc9\xc9\x07\x00")
)
SEEDS = [
    _seed(b"GET /v1/ws?name=ann HTTP/1.1\r\n" + _UPGRADE),
    _seed(b"GET /asgi HTTP/1.1\r\n" + _UPGRADE + _HELLO, cut=40),
    _seed(b"GET /reject HTTP/1.1\r\n" + _UPGRADE),
    _seed(b"GET /ws HTTP/1.1\r\n" + _UPGRADE + _HELLO + b"\x88\x82\x00\x00\x00\x00\x03\xe8"),
    _seed(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    _seed(b"GET /ws HTTP/1.1\r\nContent-Length: 0\r\n" + _UPGRADE),
    _seed(b"GET /ws HTTP/1.1\r\nSec-WebSocket-Version: 8\r\n" + _UPGRADE),
    _seed(b"GET /ws HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nHost: x\r\n\r\n"),
    _seed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    _seed(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", cut=20),
    _seed(
        b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    # permessage-deflate: offers, and a compressed message for the echo
    _seed(b"GET /asgi HTTP/1.1\r\n" + _DEFLATE + _UPGRADE + _HELLO_DEFLATED + _HELLO),
    _seed(
        b"GET /ws HTTP/1.1\r\nSec-WebSocket-Extensions: permessage-deflate; "
        b"server_max_window_bits=10; client_no_context_takeover, permessage-deflate\r\n"
        + _UPGRADE
        + _HELLO_DEFLATED
    ),
    # An upgrade on a kept-alive connection (uvicorn hands it back to HttpEntry).
    _seed(_HTTP + b"GET /asgi HTTP/1.1\r\n" + _UPGRADE, cut=len(_HTTP)),
    _seed(_HTTP + b"GET /ws HTTP/1.1\r\n" + _UPGRADE + _HELLO, cut=len(_HTTP) + 20),
]


if __name__ == "__main__":
    run(test_one_input, SEEDS, ["-max_len=80000"])  # past the 64 KiB header line limit
