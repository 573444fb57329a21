"""uvicorn, tuned for Hubbub: the WebSocket and HTTP protocols it runs with.

uvicorn's own WebSocket protocol (``websockets-sansio``) is the fastest and leanest
of uvicorn's options; Hubbub subclasses it to add what a chat server needs and ASGI
cannot express:

- a :class:`~hubbub.connection.DirectChannel` in the scope, so that a broadcast is
  written into each client's transport as one pre-encoded frame, without a task
  switch, and queued in the client's bounded outbox while its transport is full;
- a close that is written even when the buffer is full, and an abort when it cannot
  get out in time (uvicorn's graceful ``transport.close()`` waits forever for a peer
  that never reads);
- close code 1001 on shutdown (uvicorn sends 1012), flushing what is queued first;
- invalid UTF-8 closes with 1007 and one INFO line instead of a stack trace;
- an HTTP request deadline, so a client that connects and never completes its
  handshake is dropped.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from collections.abc import Callable
from typing import Any, cast

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from hubbub.config import Settings
from hubbub.connection import DIRECT_EXTENSION
from hubbub.errors import CloseCode

logger = logging.getLogger("hubbub.server")

WS_PROTOCOL = "hubbub.server:HubbubWebSocketProtocol"
HTTP_PROTOCOL = "hubbub.server:HubbubHttpProtocol"


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration, with Hubbub's loggers on uvicorn's handler; with
    ``log_format="json"`` every line (uvicorn's too) is one JSON object."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": "hubbub.logs.JsonFormatter"}
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
    """uvicorn's httptools protocol with a deadline for the first request's headers."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._request_deadline = _settings_of(config).handshake_timeout
        self._deadline_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline_timer = self.loop.call_later(self._request_deadline, self._too_slow)

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        super().on_headers_complete()

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
        self._writable_callback: Callable[[], None] | None = None
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
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._arm_close_deadline(self.close_timeout)

    # -- uvicorn overrides -----------------------------------------------------

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
        super().connection_lost(exc)

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type != "text":
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            logger.info(
                "closing %s: text frame is not valid UTF-8", self._peer(), extra=self._extra()
            )
            self.close_now(CloseCode.INVALID_DATA, "invalid UTF-8")
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def keepalive_timeout(self) -> None:
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
