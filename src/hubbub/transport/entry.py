"""Where every TCP connection starts: one parse of the request head, then either a
WebSocket of Hubbub's own or uvicorn's HTTP protocol.

:class:`HttpEntry` is the protocol class uvicorn is given (its ``http`` option, and its
``ws`` option for an upgrade on a kept-alive connection, which uvicorn hands over as a
re-serialised request). It reads the request head with httptools, with limits, and a
deadline for the whole head:

- a WebSocket upgrade is checked (RFC 6455 §4.2.1) and becomes a
  :class:`~hubbub.transport.websocket.WebSocketSession` directly: the parsed head is its
  ASGI scope, nothing is parsed twice, and no HTTP protocol object is made for it.
  Bytes that came behind the request in the same read are the session's (frames a
  client sent without waiting for the ``101``);
- any other request goes, with the bytes read so far, to uvicorn's HTTP protocol
  (:func:`hubbub.upstream.hand_over_http`), which keeps the connection from then on.

A request line or header line over :data:`MAX_LINE_BYTES` gets 414 or 431, more than
:data:`MAX_HEADERS` headers or a head over :data:`MAX_HEAD_BYTES` 431, a head that is
not HTTP 400; each answer is whole and followed by the end of the stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import weakref
from typing import Any, cast
from urllib.parse import unquote

import httptools

from hubbub.config import Settings
from hubbub.connection import DIRECT_EXTENSION
from hubbub.transport.keepalive import Keepalive
from hubbub.transport.websocket import WebSocketSession, _status_response
from hubbub.upstream import (
    asgi_app,
    hand_over_http,
    track_connection,
    track_task,
    untrack_connection,
)

logger = logging.getLogger("hubbub.server")

MAX_LINE_BYTES = 64 * 1024
"""Longest request line or header line, with its CRLF. A browser sends all of a site's
cookies in one line (each up to 4 KB), so a user with 9 KB of them must not get the
page and then a chat that never connects; 64 KiB is above what proxies in front of a
site usually pass (8-32 KiB)."""

MAX_HEADERS = 128
MAX_HEAD_BYTES = 256 * 1024

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Refused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason


class Context:
    """What every connection of one server shares (one per uvicorn server)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any]) -> None:
        settings = getattr(config, "hubbub", None)
        if not isinstance(settings, Settings):
            settings = Settings()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.app = asgi_app(config)
        self.root_path: str = config.root_path
        self.max_size = settings.max_frame_bytes
        self.close_timeout = settings.close_timeout
        self.shutdown_timeout = settings.shutdown_timeout
        self.handshake_timeout = settings.handshake_timeout
        self.compression = settings.compression
        self.compression_min_bytes = settings.compression_min_bytes
        self.compression_window_bits = settings.compression_window_bits
        self.keepalive = Keepalive(settings.ping_interval, settings.ping_timeout)
        self._corked: list[WebSocketSession] = []

    def cork(self, session: WebSocketSession) -> None:
        """``session`` has frames to send: flush them at the end of this turn."""
        if not self._corked:
            asyncio.get_running_loop().call_soon(self._uncork)
        self._corked.append(session)

    def _uncork(self) -> None:
        corked, self._corked = self._corked, []
        for session in corked:
            session.flush()

    def track_connection(self, protocol: asyncio.Protocol) -> None:
        track_connection(self.server_state, protocol)

    def untrack_connection(self, protocol: asyncio.Protocol) -> None:
        untrack_connection(self.server_state, protocol)

    def track_task(self, task: asyncio.Task[None]) -> None:
        track_task(self.server_state, task)


_contexts: weakref.WeakKeyDictionary[Any, Context] = weakref.WeakKeyDictionary()


def _context(config: Any, server_state: Any, app_state: dict[str, Any]) -> Context:
    context = _contexts.get(server_state)
    if context is None or context.config is not config:
        context = _contexts[server_state] = Context(config, server_state, app_state)
    return context


class HttpEntry(asyncio.Protocol):
    """The first protocol of every connection (see the module doc)."""

    __slots__ = (
        "_chunks",
        "_complete",
        "_ctx",
        "_deadline",
        "_head_bytes",
        "_headers",
        "_parser",
        "_session",
        "_url",
        "transport",
    )

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], **_: Any) -> None:
        self._ctx = _context(config, server_state, app_state)
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._chunks: list[bytes] = []
        self._complete = False
        self._deadline: asyncio.TimerHandle | None = None
        # Set when uvicorn handed over an upgrade on a kept-alive connection: uvicorn
        # then makes this object the transport's protocol, so it passes everything on.
        self._session: WebSocketSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._ctx.track_connection(self)
        self._deadline = asyncio.get_running_loop().call_later(
            self._ctx.handshake_timeout, self._too_slow
        )

    def data_received(self, data: bytes) -> None:
        if self._session is not None:
            self._session.data_received(data)
            return
        self._chunks.append(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[upgrade.args[0] :])
            return
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.reason, str(refused))
            else:  # pragma: no cover - the callbacks raise nothing else
                raise
            return
        except httptools.HttpParserError:
            self._refuse(400, "Bad Request", "Invalid HTTP request received.")
            return
        if self._complete:
            self._hand_over()

    # httptools' callbacks

    def on_url(self, url: bytes) -> None:
        if self._complete:
            return  # a pipelined request behind the one handed over
        self._url += url
        # "GET " + url + " HTTP/1.1" + CRLF
        if len(self._parser.get_method()) + len(self._url) + 12 > MAX_LINE_BYTES:
            raise _Refused(414, "Request-URI Too Long", "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._complete:
            return
        line = len(name) + len(value) + 4
        self._head_bytes += line
        if line > MAX_LINE_BYTES:
            raise _Refused(431, "Request Header Fields Too Large", "header line too long")
        if len(self._headers) >= MAX_HEADERS or self._head_bytes > MAX_HEAD_BYTES:
            raise _Refused(431, "Request Header Fields Too Large", "too many headers")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        self._complete = True

    # the two ways on

    def _hand_over(self) -> None:
        # Not a WebSocket: uvicorn's HTTP protocol takes the connection from here.
        self._ctx.untrack_connection(self)
        chunks, self._chunks = self._chunks, []
        ctx = self._ctx
        hand_over_http(
            ctx.config,
            ctx.server_state,
            ctx.app_state,
            self.transport,
            data=b"".join(chunks),
            deadline=ctx.handshake_timeout,
        )

    def _upgrade(self, tail: bytes) -> None:
        headers = self._headers
        values: dict[bytes, bytes] = {}
        for name, value in headers:
            values[name] = value if name not in values else values[name] + b"," + value
        try:
            accept_key = _check_upgrade(self._parser, values)
        except _Refused as refused:
            self._refuse(refused.status, refused.reason, str(refused))
            return
        if accept_key is None:  # another protocol (h2c...): uvicorn answers it as HTTP
            self._complete = True
            self._hand_over()
            return
        self._chunks = []
        transport = self.transport
        ctx = self._ctx
        parsed = httptools.parse_url(self._url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        server = transport.get_extra_info("sockname")
        client = transport.get_extra_info("peername")
        secure = transport.get_extra_info("sslcontext") is not None
        subprotocols = values.get(b"sec-websocket-protocol")
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if secure else "ws",
            "server": tuple(server[:2]) if isinstance(server, tuple) else None,
            "client": tuple(client[:2]) if isinstance(client, tuple) else None,
            "root_path": ctx.root_path,
            "path": ctx.root_path + path,
            "raw_path": ctx.root_path.encode("ascii") + raw_path,
            "query_string": parsed.query or b"",
            "headers": headers,
            "subprotocols": [
                p.strip() for p in subprotocols.decode("latin-1").split(",") if p.strip()
            ]
            if subprotocols
            else [],
            "state": dict(ctx.app_state),
            "extensions": {"websocket.http.response": {}},
        }
        session = WebSocketSession(ctx, transport, scope, accept_key, tail)
        scope["extensions"][DIRECT_EXTENSION] = session
        ctx.untrack_connection(self)
        ctx.track_connection(session)
        self._session = session
        transport.set_protocol(session)
        session.start()

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        self._cancel_deadline()
        self._ctx.untrack_connection(self)
        client = self.transport.get_extra_info("peername")
        peer = f"{client[0]}:{client[1]}" if isinstance(client, tuple) else "client"
        logger.info("refusing the request from %s with %d: %s", peer, status, detail)
        extra = "sec-websocket-version: 13\r\n" if status == 426 else ""
        self.transport.write(_status_response(status, reason, f"{reason}: {detail}.\n", extra))
        self.transport.close()

    # the connection's end

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._ctx.untrack_connection(self)
        if self._session is not None:
            self._session.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._session is not None:
            self._session.pause_writing()

    def resume_writing(self) -> None:
        if self._session is not None:
            self._session.resume_writing()

    def shutdown(self) -> None:
        """The server is stopping (called by uvicorn) while this head is being read."""
        self.transport.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.info(
                "dropping a connection that sent no complete request within %.1fs",
                self._ctx.handshake_timeout,
            )
            self.transport.abort()


def _check_upgrade(parser: httptools.HttpRequestParser, values: dict[bytes, bytes]) -> bytes | None:
    """The ``Sec-WebSocket-Accept`` value for a valid WebSocket upgrade request, None for
    an upgrade to another protocol; :class:`_Refused` for an invalid one."""
    upgrade = [token.strip().lower() for token in values.get(b"upgrade", b"").split(b",")]
    if b"websocket" not in upgrade:
        return None  # uvicorn, which reads the last Upgrade header, agrees: not a WebSocket
    if upgrade != [b"websocket"]:
        raise _Refused(400, "Bad Request", "a WebSocket upgrade names one protocol")
    if parser.get_method() != b"GET" or parser.get_http_version() != "1.1":
        raise _Refused(400, "Bad Request", "a WebSocket upgrade is a GET over HTTP/1.1")
    if b"content-length" in values or b"transfer-encoding" in values:
        raise _Refused(400, "Bad Request", "a WebSocket upgrade has no body")
    if b"host" not in values:
        raise _Refused(400, "Bad Request", "missing Host header")
    tokens = {t.strip().lower() for t in values.get(b"connection", b"").split(b",")}
    if b"upgrade" not in tokens:
        raise _Refused(400, "Bad Request", "missing Connection: Upgrade")
    if values.get(b"sec-websocket-version", b"").strip() != b"13":
        raise _Refused(426, "Upgrade Required", "unsupported Sec-WebSocket-Version")
    key = values.get(b"sec-websocket-key", b"").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise _Refused(400, "Bad Request", "invalid Sec-WebSocket-Key")
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())
