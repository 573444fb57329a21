"""uvicorn, tuned for Hubbub: the WebSocket and HTTP protocols it runs with.

uvicorn's own WebSocket protocol (``websockets-sansio``) is the fastest and leanest
of uvicorn's options; Hubbub subclasses it to add what a chat server needs and ASGI
cannot express:

- a :class:`~hubbub.connection.DirectChannel` in the scope, so that a broadcast is
  written into each client's transport as one pre-encoded frame, without a task
  switch, and queued in the client's bounded outbox while its transport is full;
- *attached receivers*: an endpoint may hand the connection a receiver and return;
  from then on each message is a plain call from ``data_received`` and the
  disconnect another one. An idle connection then holds no task and no coroutine
  frames (half of what a FastAPI WebSocket costs in memory), and a message costs no
  task switch. One turn of the loop handles at most :data:`MESSAGES_PER_TURN`
  messages of one client; the rest wait for the next turn with reading paused;
- a close that is written even when the buffer is full, and an abort when it cannot
  get out in time (uvicorn's graceful ``transport.close()`` waits forever for a peer
  that never reads);
- close code 1001 on shutdown (uvicorn sends 1012), flushing what is queued first;
- invalid UTF-8 closes with 1007 and one INFO line instead of a stack trace;
- an HTTP request deadline, so a client that connects and never completes its
  handshake is dropped;
- an upgrade request that websockets' handshake parser refuses (414, 431, 400) gets
  its answer and a closed socket (uvicorn writes neither), and its line limit is raised
  to :data:`UPGRADE_MAX_LINE_BYTES`, so that a browser's big cookie jar opens a
  WebSocket as it loads a page.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
from collections.abc import Callable
from typing import Any, cast

import httptools
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets import http11
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from hubbub.config import Settings
from hubbub.connection import DIRECT_EXTENSION, Receiver
from hubbub.errors import CloseCode
from hubbub.framing import FramingServerProtocol

logger = logging.getLogger("hubbub.server")

WS_PROTOCOL = "hubbub.server:HubbubWebSocketProtocol"
HTTP_PROTOCOL = "hubbub.server:HubbubHttpProtocol"

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_DATA = frozenset((_TEXT, _BINARY, _CONT))
_PING, _PONG = Opcode.PING, Opcode.PONG

MESSAGES_PER_TURN = 64
"""Messages of one client handled in one turn of the event loop (attached receivers)."""

UPGRADE_MAX_LINE_BYTES = 64 * 1024
"""Longest request line or header line (with its CRLF) of an upgrade request."""

# websockets refuses a handshake whose request line or a header line is over 8 KiB with
# 414/431, while uvicorn's HTTP parser has no limit: a user whose cookies for the site
# add up to 9 KB would get the page and then a chat that never connects (a browser sends
# all its cookies in one line, each up to 4 KB). httptools has read the whole request
# before websockets sees it, so that limit saves no memory; 64 KiB is above what proxies
# in front of a site usually pass (8-32 KiB). websockets reads MAX_LINE_LENGTH at each
# parse; when its documented variable WEBSOCKETS_MAX_LINE_LENGTH is set, that decides.
if "WEBSOCKETS_MAX_LINE_LENGTH" not in os.environ:
    http11.MAX_LINE_LENGTH = UPGRADE_MAX_LINE_BYTES


class _Writable:
    """uvicorn's ``writable`` flag without the cost of an :class:`asyncio.Event` per
    connection (its waiter deque is most of a kilobyte): waiters are rare (ASGI sends
    into a full buffer), so their list is made when the first one comes."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


# What an attached connection keeps of its ASGI scope once the endpoint has returned.
_KEPT_SCOPE_KEYS = ("type", "scheme", "server", "client", "root_path", "path", "query_string")


class _Disconnects:
    """Stands in for uvicorn's ASGI receive queue once a receiver is attached: the
    protocol's first disconnect event becomes one call to the receiver, in a turn of its
    own (a close can start in the middle of a fan-out, which must not see the member
    list change); nothing else is queued any more."""

    __slots__ = ("loop", "receiver")

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Receiver) -> None:
        self.loop = loop
        self.receiver: Receiver | None = receiver

    def put_nowait(self, event: dict[str, Any]) -> None:
        receiver = self.receiver
        if receiver is not None and event["type"] == "websocket.disconnect":
            self.receiver = None
            self.loop.call_soon(receiver.disconnected, event.get("code", CloseCode.NO_STATUS))

    def empty(self) -> bool:
        return True


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration, with Hubbub's loggers on uvicorn's handler; with
    ``log_format="json"`` every line (uvicorn's too) is one JSON object."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": "hubbub.logs.JsonFormatter"}
    # On every handler, so that no line of any logger shows a token from a URL.
    config.setdefault("filters", {})["redact"] = {"()": "hubbub.logs.RedactCredentials"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    config["loggers"]["hubbub"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus Hubbub's settings (picklable, for ``--workers``)."""

    def __init__(self, app: Any, settings: Settings, **kwargs: Any) -> None:
        self.hubbub = settings
        super().__init__(
            app,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            loop="uvloop",
            http=HTTP_PROTOCOL,
            ws=WS_PROTOCOL,
            ws_max_size=settings.max_frame_bytes,
            ws_ping_interval=settings.ping_interval,
            ws_ping_timeout=settings.ping_timeout,
            # Compression costs CPU and ~100 KiB of zlib state per client; off.
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout + settings.close_timeout),
            access_log=False,
            log_config=logging_config(settings.log_level, settings.log_format),
            **kwargs,
        )


def _settings_of(config: uvicorn.Config) -> Settings:
    settings = getattr(config, "hubbub", None)
    return settings if isinstance(settings, Settings) else Settings()


class HubbubHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._request_deadline = _settings_of(config).handshake_timeout
        self._deadline_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline_timer = self.loop.call_later(self._request_deadline, self._too_slow)

    def on_message_begin(self) -> None:
        # Every request, not only a connection's first, has the deadline for its headers:
        # a keep-alive connection that starts a second request and stalls is dropped too.
        super().on_message_begin()
        if self._deadline_timer is None:
            self._deadline_timer = self.loop.call_later(self._request_deadline, self._too_slow)

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        # uvicorn's, except that bytes which follow the upgrade request in the same
        # read (frames a client sent right behind its handshake) are handed to the
        # WebSocket protocol; uvicorn drops them.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
        except httptools.HttpParserUpgrade as upgrade:
            if not self._should_upgrade():
                self._unsupported_upgrade_warning()
                return
            self.handle_websocket_upgrade()
            tail = data[upgrade.args[0] :]
            if tail:
                self.transport.get_protocol().data_received(tail)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def _too_slow(self) -> None:
        self._deadline_timer = None
        if not self.transport.is_closing():
            logger.info(
                "dropping a connection that sent no complete request within %.1fs",
                self._request_deadline,
            )
            self.transport.abort()


class HubbubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol plus the direct channel (see module doc)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        settings = _settings_of(config)
        self.close_timeout = settings.close_timeout
        self._shutdown_timeout = settings.shutdown_timeout
        self.writable = cast(asyncio.Event, _Writable())
        if not config.ws_per_message_deflate:  # the fast path reads no compressed frames
            self.conn.__class__ = FramingServerProtocol  # see FramingServerProtocol
        self._writable_callback: Callable[[], None] | None = None
        self._receiver: Receiver | None = None
        self._deferred: list[Frame] | None = None  # frames left for the next turn
        self._held = False  # the receiver asked to stop reading for now
        # Bytes that came after the handshake request but before our 101: read once the
        # 101 is out (websockets would answer a ping in them ahead of the 101).
        self._early = bytearray()
        self._early_limit = 4 * max(settings.max_frame_bytes, 1024)
        self.conn_id = ""  # set by the Connection on this channel

    # -- DirectChannel ---------------------------------------------------------

    def is_writable(self) -> bool:
        """True while the transport's buffer is below its high-water mark."""
        return self.writable.is_set()

    def write_frame(self, frame: bytes) -> None:
        """Write one complete frame, unless the connection is closing or gone."""
        if not self.close_sent and not self.disconnected:
            self.transport.write(frame)

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Register the outbox drain called from ``resume_writing``."""
        self._writable_callback = callback

    def close_now(self, code: int, reason: str) -> None:
        """Close with ``code`` without waiting for buffer space; abort after the timeout."""
        if (
            self.close_sent
            or self.disconnected
            or self.transport.is_closing()
            or self.conn.state is not State.OPEN  # the peer's close is being answered
        ):
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._arm_close_deadline(self.close_timeout)

    def attach(self, receiver: Receiver) -> None:
        """Deliver every further message and the disconnect by calling ``receiver``;
        the ASGI application may then return, and the connection stays open."""
        pending = self.queue
        self._receiver = receiver
        disconnects = _Disconnects(self.loop, receiver)
        self.queue = cast(Any, disconnects)
        while not pending.empty():  # what arrived before the endpoint attached
            event = cast(dict[str, Any], pending.get_nowait())
            if event["type"] == "websocket.receive":
                self._receive(event.get("text"), event.get("bytes"))
            else:
                disconnects.put_nowait(event)
        self._update_reading()

    def hold_reading(self, hold: bool) -> None:
        """Stop (or restart) reading from the socket while the receiver is behind;
        frames already read wait too."""
        self._held = hold
        self._update_reading()
        if not hold and self._deferred is not None:
            self.loop.call_soon(self._next_turn)

    def _update_reading(self) -> None:
        # Attached: reading pauses while frames wait for the next turn or the receiver
        # holds it, except after our close frame (its answer must be read).
        paused = (self._held or self._deferred is not None) and not self.close_sent
        if paused != self.read_paused and not self.disconnected:
            self.read_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # -- uvicorn overrides -----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._early or (self.handshake_initiated and not self.handshake_complete):
            self._early += data
            if len(self._early) > self._early_limit:
                logger.info(
                    "aborting %s: %d bytes sent before the handshake completed",
                    self._peer(),
                    len(self._early),
                    extra=self._extra(),
                )
                self._early.clear()
                self.transport.abort()
            return
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self._refuse_request()

    def _refuse_request(self) -> None:
        # websockets' parser refused the request and queued its answer (414: request line
        # too long; 431: a header line too long, too many headers), which uvicorn never
        # writes nor closes after. A request it cannot take (a body, a transfer coding)
        # gets no answer from websockets; httptools read it as HTTP, so it gets a 400.
        exc = self.conn.handshake_exc
        assert exc is not None
        reason = exc.__cause__ or exc
        output = b"".join(self.conn.data_to_send())
        if not output:
            refusal = self.conn.reject(400, f"Failed to open a WebSocket connection: {reason}.\n")
            output = refusal.serialize()
        status = int(output.split(b" ", 2)[1])
        logger.info("refusing the upgrade from %s with %d: %s", self._peer(), status, reason)
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(output)
        self.transport.close()

    def start_keepalive(self) -> None:
        # Called by uvicorn right after the 101 is written.
        super().start_keepalive()
        if self._early:
            self.loop.call_soon(self._read_early)

    def _read_early(self) -> None:
        data = bytes(self._early)
        self._early.clear()
        if data and not self.disconnected:
            super().data_received(data)

    async def run_asgi(self) -> None:
        # uvicorn's, except that an endpoint which attached a receiver leaves the
        # connection open when it returns.
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            logger.exception("Exception in ASGI application")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                logger.error("ASGI callable should return None, but returned %r.", result)
        if self._receiver is not None and not self.close_sent and not self.disconnected:
            # The receiver carries the connection from here; drop what only the
            # handshake and the endpoint needed (the parser's generator frame keeps
            # the request object itself alive, so its headers are emptied).
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
            scope = cast(dict[str, Any], self.scope)
            kept = {key: scope[key] for key in _KEPT_SCOPE_KEYS if key in scope}
            scope.clear()
            scope.update(kept)
        elif self.close_timer is None:
            self.transport.close()

    def handle_events(self) -> None:
        if self._receiver is None:
            super().handle_events()
            return
        events = cast(list[Frame], self.conn.events_received())
        if self._deferred is not None:
            self._deferred.extend(events)  # behind already: keep the order
        else:
            self._handle_frames(events)

    def _handle_frames(self, frames: list[Frame]) -> None:
        budget = MESSAGES_PER_TURN
        for index, frame in enumerate(frames):
            opcode = frame.opcode
            if self.close_sent and opcode in _DATA:
                continue  # past our close only its answer matters: nothing is kept
            if opcode is _TEXT and frame.fin:
                # The common case, without uvicorn's fragment bookkeeping.
                try:
                    text = bytes(frame.data).decode()
                except UnicodeDecodeError:
                    self.frames = [frame.data]  # type: ignore[list-item]
                    self.curr_msg_data_type = "text"
                    self.send_receive_event_to_app()  # closes 1007
                else:
                    self._receive(text, None)
            elif opcode is _TEXT:
                self.handle_text(frame)
            elif opcode is _BINARY:
                self.handle_bytes(frame)
            elif opcode is _CONT:
                self.handle_cont(frame)
            elif opcode is _PING:
                self.handle_ping()
                continue
            elif opcode is _PONG:
                self.handle_pong(frame)
                continue
            else:
                self.handle_close(frame)
                continue
            if frame.fin:
                budget -= 1
                if (budget == 0 or self._held) and index + 1 < len(frames):
                    self._defer(frames[index + 1 :])
                    return

    def _defer(self, frames: list[Frame]) -> None:
        self._deferred = frames
        self._update_reading()
        if not self._held:  # else hold_reading(False) brings the next turn
            self.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        if self._held or self._deferred is None:
            return
        frames, self._deferred = self._deferred, None
        if not self.disconnected:
            self._handle_frames(frames)
        self._update_reading()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.close_sent:  # the upgrade was accepted by the handshake parser
            extensions = cast(dict[str, Any], self.scope["extensions"])
            extensions[DIRECT_EXTENSION] = self

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._writable_callback is not None:
            self._writable_callback()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable_callback = None
        super().connection_lost(exc)  # tells the receiver, if it has not been told yet
        self._receiver = None  # no cycle with the Connection, which points here
        self._deferred = None

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type != "text" and self._receiver is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type != "text":
            self._receive(None, data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            logger.info(
                "closing %s: text frame is not valid UTF-8", self._peer(), extra=self._extra()
            )
            self.close_now(CloseCode.INVALID_DATA, "invalid UTF-8")
            return
        if self._receiver is not None:
            self._receive(text, None)
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _receive(self, text: str | None, data: bytes | None) -> None:
        receiver = self._receiver
        assert receiver is not None
        try:
            if text is not None:
                receiver.receive_text(text)
            else:
                receiver.receive_bytes(data or b"")
        except Exception:
            logger.exception("closing %s: the endpoint failed", self._peer(), extra=self._extra())
            self.close_now(CloseCode.INTERNAL_ERROR, "internal error")

    def keepalive_timeout(self) -> None:
        if self.close_sent or self.transport.is_closing():
            self.pong_timer = None
            self.pending_ping_payload = None
            return  # a close is under way, with its own deadline
        logger.info(
            "closing %s: no pong within %.1fs",
            self._peer(),
            self.ping_timeout or 0,
            extra=self._extra(),
        )
        super().keepalive_timeout()
        # uvicorn closed gracefully; a peer that reads nothing would keep it open forever.
        self._arm_close_deadline(self.close_timeout)

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.disconnected:
            self.stop_keepalive()
            if self._writable_callback is not None:
                # Flush the outbox into the transport: the deadline below bounds it.
                self.writable.set()
                self._writable_callback()
            self.close_now(CloseCode.GOING_AWAY, "server shutting down")
            self._arm_close_deadline(self._shutdown_timeout)
            return
        super().shutdown()

    # -- helpers ---------------------------------------------------------------

    def _arm_close_deadline(self, seconds: float) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(seconds, self._close_deadline)

    def _close_deadline(self) -> None:
        self.close_timer = None
        if self.transport.is_closing() and self.transport.get_write_buffer_size() == 0:
            return
        if self.transport.get_write_buffer_size():
            logger.info(
                "aborting %s: close frame not delivered in time", self._peer(), extra=self._extra()
            )
            self.transport.abort()
        else:
            self.transport.close()

    def _peer(self) -> str:
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
        return f"conn {self.conn_id} {peer}" if self.conn_id else peer

    def _extra(self) -> dict[str, str]:
        return {"conn": self.conn_id} if self.conn_id else {}
