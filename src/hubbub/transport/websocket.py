"""One WebSocket connection, from the accepted upgrade to the closed socket.

:class:`WebSocketSession` is the transport's protocol once :mod:`~hubbub.transport.entry`
has read an upgrade request. It runs the ASGI application for the handshake (so
FastAPI's routing, ``Depends``, ``Cookie`` and ``Query`` behave as under any server),
writes the ``101`` itself, and from then on:

- offers itself to the endpoint as a :class:`~hubbub.connection.DirectChannel`: one
  pre-encoded frame is written straight into the transport, a close goes out even when
  the buffer is full, and a socket that will not take it is aborted after the timeout;
- *attached receivers*: an endpoint may hand the session a receiver and return; each
  message is then a plain call from ``data_received`` and the disconnect another one,
  so an idle connection holds no task and no coroutine. One turn of the loop hands at
  most :data:`MESSAGES_PER_TURN` messages of one client on; the rest waits for the next
  turn, reading paused;
- without a receiver, messages go through ASGI ``receive`` as usual.

Incoming bytes go through a :class:`~hubbub.transport.incoming.FrameReader`, which
hands over messages, pings, pongs and a well-formed close (echoed here, then the TCP
stream ended); the frames it does not handle go to websockets' sans-I/O
``ServerProtocol``, made only when one comes, and driven only through its documented
methods (``receive_data``, ``events_received``, ``data_to_send``, ``send_close``,
``fail`` and ``state``). Frames written to one client in one turn go out in one write
at the turn's end (:meth:`WebSocketSession.write_frame`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.frames import Close, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from hubbub.connection import Receiver
from hubbub.errors import CloseCode, Closing, EndpointFailed, KeepaliveTimeout, ShuttingDown
from hubbub.outgoing import encode_deflated_frame, encode_frame
from hubbub.transport.deflate import negotiate
from hubbub.transport.incoming import FrameReader

if TYPE_CHECKING:
    from hubbub.transport.entry import Context

logger = logging.getLogger("hubbub.server")
_core_logger = logging.getLogger("hubbub.server.core")

MESSAGES_PER_TURN = 64
"""Messages of one client handled in one turn of the event loop."""

CORK_BYTES = 16 * 1024
"""Frames written to one client in one turn go out at once when they reach this size."""

ASGI_INBOX_LIMIT = 32
"""Messages waiting for an ASGI ``receive`` before reading from the socket pauses."""

# What an attached connection keeps of its ASGI scope once the endpoint has returned.
_KEPT_SCOPE_KEYS = ("type", "scheme", "server", "client", "root_path", "path", "query_string")

_CONNECTING, _OPEN, _CLOSING, _CLOSED = range(4)
_PONG_FIRST = 0x8A
_CLOSE_FIRST = 0x88
# Close codes an endpoint may send (RFC 6455 §7.4), besides 3000-4999.
_SENDABLE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, *range(3000, 5000)}
)
_PING = b"\x89\x00"


class Disconnected(OSError):
    """ASGI ``send`` on a connection that is closed (what the ASGI spec asks for)."""


def _status_response(status: int, reason: str, body: str, headers: str = "") -> bytes:
    payload = body.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n{headers}\r\n"
    ).encode() + payload


class WebSocketSession(asyncio.Protocol):
    """The protocol of one WebSocket connection (see the module doc)."""

    __slots__ = (
        "_accept_key",
        "_asgi_waiter",
        "_close_timer",
        "_core",
        "_corked",
        "_corked_size",
        "_early",
        "_held",
        "_inbox",
        "_paused",
        "_phase",
        "_reader",
        "_receiver",
        "_send_waiters",
        "_told",
        "_turn",
        "_writable",
        "_writable_callback",
        "conn_id",
        "ctx",
        "deflate",
        "ping_due",
        "scope",
        "transport",
    )

    def __init__(
        self,
        ctx: Context,
        transport: asyncio.Transport,
        scope: dict[str, Any],
        accept_key: bytes,
        early: bytes,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.scope = scope
        self.conn_id = ""  # set by the Connection on this channel
        # permessage-deflate accepted: (window bits, smallest payload compressed).
        self.deflate: tuple[int, int] | None = None
        self.ping_due = 0  # keepalive: the sweep whose ping is unanswered
        self._accept_key = accept_key
        self._phase = _CONNECTING
        self._early = bytearray(early)
        self._reader: FrameReader | None = None
        self._core: ServerProtocol | None = None
        self._corked: list[bytes] | None = None  # frames written this turn, not yet out
        self._corked_size = 0
        self._receiver: Receiver | None = None
        self._inbox: deque[dict[str, Any]] | None = None
        self._asgi_waiter: asyncio.Future[None] | None = None
        self._send_waiters: list[asyncio.Future[None]] | None = None
        self._writable = True
        self._writable_callback: Callable[[], None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._told = False  # the endpoint has been told of the disconnect
        self._held = False  # the receiver (or a full ASGI inbox) stopped reading
        self._paused = False  # reading from the transport is paused
        self._turn = False  # a next turn is scheduled

    def start(self) -> None:
        """Run the ASGI application for this connection."""
        task = asyncio.get_running_loop().create_task(self._run_asgi())
        self.ctx.track_task(task)

    # -- ASGI --------------------------------------------------------------------------

    async def _run_asgi(self) -> None:
        try:
            result = await self.ctx.app(self.scope, self._asgi_receive, self._asgi_send)
        except Disconnected:
            return  # the client is gone or its close is answered: nothing more to do
        except BaseException:
            logger.exception("Exception in ASGI application")
            if self._phase == _CONNECTING:
                self._respond(
                    _status_response(500, "Internal Server Error", "Internal Server Error")
                )
            else:
                self._close_for(EndpointFailed())
            return
        if self._phase == _CONNECTING:
            logger.error("ASGI callable returned without completing handshake.")
            self._respond(_status_response(500, "Internal Server Error", "Internal Server Error"))
            return
        if result is not None:
            logger.error("ASGI callable should return None, but returned %r.", result)
        if self._receiver is not None and self._phase == _OPEN:
            # The receiver carries the connection from here: drop what only the
            # handshake and the endpoint needed.
            scope = self.scope
            kept = {key: scope[key] for key in _KEPT_SCOPE_KEYS if key in scope}
            scope.clear()
            scope.update(kept)
        elif self._phase == _OPEN:
            self.close_now(CloseCode.NORMAL, "")

    async def _asgi_receive(self) -> dict[str, Any]:
        if self._phase == _CONNECTING and self._inbox is None:
            self._inbox = deque()
            return {"type": "websocket.connect"}
        inbox = self._inbox
        assert inbox is not None
        while not inbox:
            if self._phase == _CLOSED:
                return {"type": "websocket.disconnect", "code": CloseCode.ABNORMAL}
            waiter = self._asgi_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._asgi_waiter = None
        message = inbox.popleft()
        if self._held and self._receiver is None and len(inbox) <= ASGI_INBOX_LIMIT // 2:
            self.hold_reading(False)
        return message

    def _to_asgi(self, message: dict[str, Any]) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)
        waiter = self._asgi_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if (
            len(inbox) >= ASGI_INBOX_LIMIT
            and not self._held
            and message["type"] != "websocket.disconnect"
        ):
            self.hold_reading(True)

    async def _asgi_send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        phase = self._phase
        if phase == _CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._log_handshake("403")
                self._respond(_status_response(403, "Forbidden", ""))
            elif kind == "websocket.http.response.start":
                self._deny_start(message)
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} before the handshake")
            return
        if kind == "websocket.http.response.body":
            self.transport.write(message.get("body", b""))
            if not message.get("more_body", False):
                self._phase = _CLOSED
                self.transport.close()
            return
        if phase != _OPEN:
            raise Disconnected("the WebSocket is closed")
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                payload, first = text.encode(), 0x81
            else:
                payload, first = message.get("bytes") or b"", 0x82
            deflate = self.deflate
            if deflate is not None and len(payload) >= deflate[1]:
                self._write(encode_deflated_frame(payload, deflate[0], first))
            else:
                self._write(encode_frame(payload, first))
            if not self._writable:
                await self._wait_writable()
        elif kind == "websocket.close":
            self.close_now(message.get("code") or CloseCode.NORMAL, message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")

    async def _wait_writable(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        if self._send_waiters is None:
            self._send_waiters = []
        self._send_waiters.append(waiter)
        await waiter
        if self._phase == _CLOSED:
            raise Disconnected("the WebSocket is closed")

    # -- the handshake -----------------------------------------------------------------

    def _accept(self, message: dict[str, Any]) -> None:
        if self.transport.is_closing():
            self._phase = _CLOSED
            raise Disconnected("the client left during the handshake")
        lines = [
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: " + self._accept_key + b"\r\n"
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            lines.append(b"sec-websocket-protocol: " + subprotocol.encode() + b"\r\n")
        for name, value in message.get("headers") or ():
            lines.append(bytes(name) + b": " + bytes(value) + b"\r\n")
        ctx = self.ctx
        reader = FrameReader(self, ctx.max_size)
        if ctx.compression:
            offers = b",".join(
                v for k, v in self.scope["headers"] if k == b"sec-websocket-extensions"
            )
            negotiated = negotiate(offers, ctx.compression_window_bits) if offers else None
            if negotiated is not None:
                lines.append(b"sec-websocket-extensions: " + negotiated.header + b"\r\n")
                self.deflate = (negotiated.server_bits, ctx.compression_min_bytes)
                reader.inflate_bits = negotiated.client_bits
        lines.append(b"\r\n")
        self.transport.write(b"".join(lines))
        self._log_handshake("accepted")
        self._phase = _OPEN
        self._reader = reader
        self.ctx.keepalive.add(self)
        if self._early:
            asyncio.get_running_loop().call_soon(self._read_early)
        else:
            self._early = None  # type: ignore[assignment]

    def _read_early(self) -> None:
        data = bytes(self._early or b"")
        self._early = None  # type: ignore[assignment]
        if data and self._phase != _CLOSED:
            self.data_received(data)

    def _deny_start(self, message: dict[str, Any]) -> None:
        status = int(message["status"])
        lines = [f"HTTP/1.1 {status} \r\n".encode()]
        for name, value in message.get("headers") or ():
            lines.append(bytes(name) + b": " + bytes(value) + b"\r\n")
        lines.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(lines))
        self._phase = _CLOSING

    def _respond(self, response: bytes) -> None:
        # A refusal before the 101: the answer, then the end of the stream.
        self._phase = _CLOSED
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # -- DirectChannel -----------------------------------------------------------------

    def is_writable(self) -> bool:
        """True while the transport's buffer is below its high-water mark."""
        return self._writable

    def write_frame(self, frame: bytes) -> None:
        """Write one complete frame, unless the connection is closing or gone.

        Frames written in one turn of the loop go out together at its end (one system
        call instead of one per frame: a fan-out of several messages in one turn), or
        as soon as :data:`CORK_BYTES` of them wait.
        """
        if self._phase == _OPEN:
            corked = self._corked
            if corked is None:
                self._corked = [frame]
                self._corked_size = len(frame)
                self.ctx.cork(self)
            else:
                corked.append(frame)
                self._corked_size += len(frame)
                if self._corked_size >= CORK_BYTES:
                    self.flush()

    def flush(self) -> None:
        """Hand the frames corked this turn to the transport."""
        corked = self._corked
        if corked is not None:
            self._corked = None
            if self._phase != _CLOSED:
                self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def _write(self, data: bytes) -> None:
        # Every write behind the corked frames, in order.
        if self._corked is not None:
            self.flush()
        self.transport.write(data)

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Register the outbox drain called when the transport can take more."""
        self._writable_callback = callback

    def close_now(self, code: int, reason: str) -> None:
        """Close with ``code`` without waiting for buffer space; abort after the timeout."""
        if self._phase != _OPEN or self.transport.is_closing():
            return
        payload = code.to_bytes(2, "big") + reason.encode()
        if code in _SENDABLE_CLOSE_CODES and len(payload) <= 125:
            self._write(encode_frame(payload, _CLOSE_FIRST))
        else:  # websockets' core refuses it as it always has (an ASGI app's odd code)
            core = self._core_protocol()
            core.send_close(code, reason)
            self._write_core(core)
        self._phase = _CLOSING
        assert self._reader is not None
        self._reader.dropping = True
        self._tell(code)
        if self._paused and not self._held:
            self._resume()
        elif self._held:
            # Our close's answer must still be read: nothing else is handed on now.
            self._held = False
            self._resume()
        self._arm_close_deadline(self.ctx.close_timeout)

    def _close_for(self, error: Closing) -> None:
        self.close_now(error.close_code, error.close_reason)

    def attach(self, receiver: Receiver) -> None:
        """Deliver every further message and the disconnect by calling ``receiver``;
        the ASGI application may then return, and the connection stays open."""
        self._receiver = receiver
        inbox, self._inbox = self._inbox, None
        for message in inbox or ():  # what arrived before the endpoint attached
            if message["type"] == "websocket.receive":
                self._hand(message.get("text"), message.get("bytes"))
            else:
                self._told = False
                self._tell(message.get("code", CloseCode.NO_STATUS))
        if self._held and self._phase == _OPEN:
            self.hold_reading(False)

    def hold_reading(self, hold: bool) -> None:
        """Stop (or restart) reading from the socket while the receiver is behind;
        frames already read wait too."""
        if hold == self._held:
            return
        self._held = hold
        reader = self._reader
        if hold:
            if reader is not None:
                reader.budget = 0
            if self._phase == _OPEN:
                self._pause()
        elif reader is not None and reader.pending:
            self._schedule_turn()
        else:
            self._resume()

    # -- reading -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None or self._early is not None:
            self._buffer_early(data)
            return
        reader.budget = 0 if self._held else MESSAGES_PER_TURN
        reader.read(data)
        if reader.budget == 0 and reader.pending:
            self._pause()
            if not self._held:
                self._schedule_turn()

    def _buffer_early(self, data: bytes) -> None:
        # Before our 101 is out (websockets would answer a ping in these ahead of it).
        if self._phase == _CLOSED:
            return
        if self._early is None:
            self._early = bytearray()
        self._early += data
        if len(self._early) > 4 * max(self.ctx.max_size, 1024):
            logger.info(
                "aborting %s: %d bytes sent before the handshake completed",
                self._peer(),
                len(self._early),
                extra=self._extra(),
            )
            self._early.clear()
            self.transport.abort()

    def _schedule_turn(self) -> None:
        if not self._turn:
            self._turn = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn = False
        reader = self._reader
        if self._held or reader is None or self._phase == _CLOSED:
            return
        reader.budget = MESSAGES_PER_TURN
        reader.read(b"")
        if reader.budget == 0 and reader.pending:
            if not self._held:
                self._schedule_turn()
        else:
            self._resume()

    def _pause(self) -> None:
        if not self._paused and self._phase != _CLOSED:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self._phase != _CLOSED:
            self._paused = False
            self.transport.resume_reading()

    # FrameSink: what the reader hands over.

    def on_text(self, text: str) -> None:
        self._hand(text, None)

    def on_bytes(self, data: bytes) -> None:
        self._hand(None, data)

    def _hand(self, text: str | None, data: bytes | None) -> None:
        receiver = self._receiver
        if receiver is None:
            if text is not None:
                self._to_asgi({"type": "websocket.receive", "text": text})
            else:
                self._to_asgi({"type": "websocket.receive", "bytes": data})
            return
        try:
            if text is not None:
                receiver.receive_text(text)
            else:
                receiver.receive_bytes(data or b"")
        except Exception:
            logger.exception("closing %s: the endpoint failed", self._peer(), extra=self._extra())
            self._close_for(EndpointFailed())

    def on_ping(self, payload: bytes) -> None:
        # Not while the buffer is full: a client that pings and never reads would grow
        # it without bound (RFC 6455 §5.5.3 lets a pong answer only the latest ping).
        if self._phase == _OPEN and self._writable:
            self._write(encode_frame(payload, _PONG_FIRST))

    def on_pong(self) -> None:
        self.ping_due = 0

    def on_close(self, code: int, payload: bytes) -> None:
        # The client's close: echoed (RFC 6455 §5.5.1) unless it answers ours, then the
        # server ends the TCP connection (§7.1.1).
        if self._phase == _OPEN:
            self._phase = _CLOSING
            self._write(encode_frame(payload, _CLOSE_FIRST))
            self._tell(code)
        self._end_stream()

    def _end_stream(self) -> None:
        if self._phase != _CLOSED:
            self._phase = _CLOSING
        self.flush()
        self.transport.close()
        self._arm_close_deadline(self.ctx.close_timeout)

    def to_core(self, data: bytes) -> None:
        if self._core is None and self._phase != _OPEN:
            self._end_stream()  # a bad frame after our close: nothing more to say
            return
        core = self._core_protocol()
        core.receive_data(data)
        for event in core.events_received():
            if event.opcode is Opcode.CLOSE:  # type: ignore[union-attr]
                self._tell(Close.parse(event.data).code)  # type: ignore[union-attr]
        self._write_core(core)

    def fail(self, code: int, reason: str) -> None:
        if code == CloseCode.INVALID_DATA:
            logger.info(
                "closing %s: text frame is not valid UTF-8", self._peer(), extra=self._extra()
            )
        if self._core is None and self._phase != _OPEN:
            self._end_stream()  # after our close: nothing more to say
            return
        core = self._core_protocol()
        if core.state is State.OPEN:
            core.fail(code, reason)
        self._write_core(core)

    def _core_protocol(self) -> ServerProtocol:
        core = self._core
        if core is None:
            core = self._core = ServerProtocol(
                state=State.OPEN, max_size=self.ctx.max_size, logger=_core_logger
            )
        return core

    def _write_core(self, core: ServerProtocol) -> None:
        # What websockets' core has to send; an empty chunk is its end of the stream.
        transport = self.transport
        for chunk in core.data_to_send():
            if not chunk:
                self._end_stream()
            elif not transport.is_closing():
                if chunk[0] == 0x88 and len(chunk) >= 4:
                    self._tell(int.from_bytes(chunk[2:4], "big"))
                if self._phase == _OPEN:
                    self._phase = _CLOSING
                    if self._reader is not None:
                        self._reader.dropping = True
                self._write(chunk)

    # -- the end ----------------------------------------------------------------------

    def _tell(self, code: int) -> None:
        # The endpoint learns of the close once, with the first code, in a turn of its
        # own (a close can start in the middle of a fan-out, which must not see the
        # member list change).
        if self._told:
            return
        self._told = True
        receiver = self._receiver
        if receiver is not None:
            asyncio.get_running_loop().call_soon(receiver.disconnected, code)
        elif self._inbox is not None or self._phase != _CONNECTING:
            self._to_asgi({"type": "websocket.disconnect", "code": code, "reason": ""})

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        self._corked = None
        self.ctx.untrack_connection(self)
        self.ctx.keepalive.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._writable_callback = None
        if self._inbox is not None or self._receiver is not None or self._reader is not None:
            self._tell(CloseCode.ABNORMAL)
        waiter = self._asgi_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._wake_senders()
        self._receiver = None  # no cycle with the Connection, which points here
        self._reader = None

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake_senders()
        if self._writable_callback is not None:
            self._writable_callback()

    def _wake_senders(self) -> None:
        waiters, self._send_waiters = self._send_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # -- keepalive and shutdown ---------------------------------------------------------

    def send_ping(self) -> None:
        """:class:`~hubbub.transport.keepalive.Pingable`: write a ping."""
        if self._phase == _OPEN:
            self._write(_PING)

    def ping_timed_out(self) -> None:
        """:class:`~hubbub.transport.keepalive.Pingable`: no pong in time."""
        if self._phase != _OPEN:
            return
        logger.info(
            "closing %s: no pong within %.1fs",
            self._peer(),
            self.ctx.keepalive.timeout,
            extra=self._extra(),
        )
        self._close_for(KeepaliveTimeout())

    def shutdown(self) -> None:
        """The server is stopping (called by uvicorn): flush, then close with 1001."""
        if self._phase == _OPEN:
            if self._writable_callback is not None:
                # Flush the outbox into the transport: the deadline below bounds it.
                self._writable = True
                self._writable_callback()
            self._close_for(ShuttingDown())
            self._arm_close_deadline(self.ctx.shutdown_timeout)
        elif self._phase == _CONNECTING:
            self._respond(_status_response(503, "Service Unavailable", "Server shutting down"))

    def _arm_close_deadline(self, seconds: float) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._phase != _CLOSED:
            self._close_timer = asyncio.get_running_loop().call_later(seconds, self._close_deadline)

    def _close_deadline(self) -> None:
        self._close_timer = None
        transport = self.transport
        if transport.get_write_buffer_size():
            logger.info(
                "aborting %s: close frame not delivered in time", self._peer(), extra=self._extra()
            )
            transport.abort()
        elif not transport.is_closing():
            transport.close()

    # -- helpers ----------------------------------------------------------------------

    def _log_handshake(self, outcome: str) -> None:
        # One line per WebSocket, as uvicorn's access log has one per request.
        if logger.isEnabledFor(logging.INFO):
            scope = self.scope
            query = scope.get("query_string") or b""
            target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
            logger.info('%s - "WebSocket %s" %s', self._peer(), target, outcome)

    def _peer(self) -> str:
        client = self.scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "client"
        return f"conn {self.conn_id} {peer}" if self.conn_id else peer

    def _extra(self) -> dict[str, str]:
        return {"conn": self.conn_id} if self.conn_id else {}
