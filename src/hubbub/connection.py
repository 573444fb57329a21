"""One accepted WebSocket: a bounded outbox, drained without ever blocking the sender.

Two ways to reach the socket:

- *direct*: under ``hubbub serve`` the server's WebSocket protocol puts a
  :class:`DirectChannel` in the ASGI scope. Frames are written straight into the
  transport while it is writable and queued in the outbox while it is not; the
  transport's ``resume_writing`` drains the outbox. No task, no task switch.
- *ASGI*: under any other ASGI server, a writer task owned by the connection drains
  the outbox through ASGI ``send``.

Either way ``send`` never awaits, and a client whose outbox overflows is closed with
1008 "slow consumer".

Incoming messages reach an endpoint through :meth:`Connection.serve` (plain calls,
no task at all on the direct path) or :meth:`Connection.texts` (an async iterator, for
endpoints that await per message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

from starlette.websockets import WebSocket

from hubbub.errors import CloseCode
from hubbub.metrics import Metrics
from hubbub.outgoing import OutFrame

logger = logging.getLogger("hubbub.connection")

DIRECT_EXTENSION = "hubbub.direct"

INBOX_LIMIT = 32
"""Messages waiting for a :meth:`Connection.serve_serially` handler before reading from
the socket pauses (it restarts when half of them are done)."""


class Receiver(Protocol):
    """What a direct channel calls once a connection is attached to it."""

    def receive_text(self, text: str) -> None:
        """A text message arrived."""

    def receive_bytes(self, data: bytes) -> None:
        """A binary message arrived."""

    def disconnected(self, code: int) -> None:
        """The connection is closing or gone (``code`` as received or sent); called once."""


class DirectChannel(Protocol):
    """What Hubbub's uvicorn WebSocket protocol offers a connection (see ``server.py``)."""

    conn_id: str
    """The id of the connection on this channel, for the channel's own log lines."""

    deflate: tuple[int, int] | None
    """permessage-deflate accepted: (window bits, smallest payload compressed); frames
    then go out as :meth:`OutFrame.deflated`."""

    def is_writable(self) -> bool:
        """True while the transport's buffer is below its high-water mark."""

    def write_frame(self, frame: bytes) -> None:
        """Write a complete WebSocket frame; dropped if the connection is closing."""

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` each time the transport becomes writable again."""

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame even if the buffer is full; abort the socket if it is
        still not out after the close timeout."""

    def attach(self, receiver: Receiver) -> None:
        """Call ``receiver`` for every further message and for the disconnect."""

    def hold_reading(self, hold: bool) -> None:
        """Stop reading from the socket (``True``) until called with ``False``."""


class Limits(Protocol):
    """The settings a connection needs."""

    @property
    def outbox_max_bytes(self) -> int:
        """Bytes a client may have queued."""

    @property
    def outbox_max_messages(self) -> int:
        """Frames a client may have queued."""

    @property
    def close_timeout(self) -> float:
        """Seconds a close may take (ASGI path: before giving up on it)."""


class Connection:
    """A client socket with a bounded outbox. Created by the hub, one per WebSocket."""

    __slots__ = (
        "_closer",
        "_closing",
        "_deflate",
        "_direct",
        "_drained",
        "_ended",
        "_finish",
        "_handle",
        "_held",
        "_inbox",
        "_max_bytes",
        "_max_messages",
        "_metrics",
        "_on_end",
        "_on_slow",
        "_on_text",
        "_outbox",
        "_queued_bytes",
        "_wakeup",
        "_worker",
        "_workers",
        "_writer",
        "close_code",
        "close_timeout",
        "id",
        "outbox_peak",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        limits: Limits,
        on_slow: Callable[[Connection], None],
        metrics: Metrics | None = None,
        workers: set[asyncio.Task[None]] | None = None,
    ) -> None:
        self.websocket = websocket
        self.id = secrets.token_hex(4)  # "conn" in log lines
        self._metrics = metrics
        self.outbox_peak = 0  # most frames ever waiting in the outbox (for the metrics)
        self.close_code: int | None = None
        self.close_timeout = limits.close_timeout
        self._max_bytes = limits.outbox_max_bytes
        self._max_messages = limits.outbox_max_messages
        self._on_slow = on_slow
        self._outbox: deque[OutFrame] | None = None  # made when first needed
        self._queued_bytes = 0
        self._closing = False
        extensions = websocket.scope.get("extensions") or {}
        self._direct: DirectChannel | None = extensions.get(DIRECT_EXTENSION)
        self._deflate: tuple[int, int] | None = None
        self._wakeup: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._on_text: Callable[[str], None] | None = None
        self._on_end: Callable[[], None] | None = None
        # serve_serially on the direct path: messages waiting, and the task (only
        # while there is work) that hands them to the handler one at a time.
        self._handle: Callable[[str], Awaitable[None]] | None = None
        self._finish: Callable[[], Awaitable[None]] | None = None
        self._inbox: deque[str] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._workers = workers  # every running worker of the hub, for its shutdown
        self._held = False
        self._ended = False  # the disconnect has been seen (by texts() or the channel)

    # -- lifecycle -------------------------------------------------------------

    async def accept(self) -> None:
        """Complete the handshake and start draining the outbox."""
        await self.websocket.accept()
        if self._direct is not None:
            self._direct.conn_id = self.id
            self._deflate = self._direct.deflate
            self._direct.on_writable(self._drain)
        else:
            self._outbox = deque()
            self._wakeup = asyncio.Event()
            self._writer = asyncio.create_task(self._write_loop(), name="hubbub-writer")

    def release(self) -> None:
        """Drop what the connection owns; called once the peer is gone. Tasks of the
        ASGI path are cancelled, not awaited (see :meth:`finish`)."""
        self._closing = True
        if self._outbox is not None:
            self._outbox.clear()
        self._queued_bytes = 0
        self._on_text = self._on_end = self._handle = None
        if self._direct is not None:
            self._direct.on_writable(None)
        for task in (self._writer, self._closer):
            if task is not None and not task.done():
                task.cancel()

    async def finish(self) -> None:
        """:meth:`release`, then wait until the ASGI path's tasks have ended."""
        self.release()
        for task in (self._writer, self._closer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def closing(self) -> bool:
        """True once the connection is closing; sends are then dropped."""
        return self._closing

    @property
    def queued(self) -> tuple[int, int]:
        """Frames and bytes waiting in the outbox."""
        return len(self._outbox or ()), self._queued_bytes

    # -- outgoing --------------------------------------------------------------

    def send(self, frame: OutFrame) -> None:
        """Queue ``frame`` for this client; never blocks. Overflow closes the client.

        Not counted in the metrics: fan-out counts a whole broadcast at once
        (``Metrics.sent``); a frame for this client alone goes through :meth:`send_one`.
        """
        if self._closing:
            return
        outbox = self._outbox
        direct = self._direct
        if direct is not None and not outbox and direct.is_writable():
            deflate = self._deflate
            direct.write_frame(frame.wire if deflate is None else frame.deflated(*deflate))
            return
        if outbox is None:
            outbox = self._outbox = deque()
        size = frame.size
        if len(outbox) >= self._max_messages or self._queued_bytes + size > self._max_bytes:
            # The peak counts the frame that did not fit: a slow consumer tops the limit.
            self.outbox_peak = max(self.outbox_peak, len(outbox) + 1)
            self._slow_consumer()
            return
        outbox.append(frame)
        self._queued_bytes += size
        self.outbox_peak = max(self.outbox_peak, len(outbox))
        if self._wakeup is not None:
            self._wakeup.set()

    async def wait_for_room(self) -> None:
        """Return once at most half of the outbox budget is in use (or the connection is
        closing): for senders of bulk data such as a backlog, so they never overflow it."""
        while not self._closing and self._over_half():
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()

    @property
    def crowded(self) -> bool:
        """True while more than half of the outbox budget is in use: time for a sender of
        bulk data to :meth:`wait_for_room`."""
        return self._over_half()

    def _over_half(self) -> bool:
        return (
            len(self._outbox or ()) > self._max_messages // 2
            or self._queued_bytes > self._max_bytes // 2
        )

    def _notify_drained(self) -> None:
        if self._drained is not None and (self._closing or not self._over_half()):
            self._drained.set()

    def send_one(self, frame: OutFrame) -> None:
        """Queue ``frame`` for this client alone, and count it in the metrics."""
        if self._metrics is not None:
            self._metrics.sent(1, frame.size)
        self.send(frame)

    def send_text(self, text: str) -> None:
        """Queue one text message for this client only (counted)."""
        self.send_one(OutFrame.from_text(text))

    def _drain(self) -> None:
        # Direct path: the transport became writable again; refill it until it pauses.
        direct = self._direct
        outbox = self._outbox
        assert direct is not None
        deflate = self._deflate
        while outbox and direct.is_writable() and not self._closing:
            frame = outbox.popleft()
            self._queued_bytes -= frame.size
            direct.write_frame(frame.wire if deflate is None else frame.deflated(*deflate))
        self._notify_drained()

    async def _write_loop(self) -> None:
        # ASGI path: one task per connection owns every await on this client's socket.
        assert self._wakeup is not None
        send = self.websocket.send
        outbox = self._outbox
        assert outbox is not None
        wakeup = self._wakeup
        while True:
            while not outbox:
                wakeup.clear()
                await wakeup.wait()
            frame = outbox.popleft()
            self._queued_bytes -= frame.size
            self._notify_drained()
            try:
                await send(frame.asgi_event)
            except Exception:  # the peer went away; the reader will see the disconnect
                self._closing = True
                return

    def _slow_consumer(self) -> None:
        self._on_slow(self)
        self.close(CloseCode.POLICY_VIOLATION, "slow consumer")

    # -- closing ---------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Start closing with ``code``; queued frames are dropped. Never blocks."""
        if self._closing:
            return
        self._closing = True
        self.close_code = code
        self._handle = None  # closed by us: nothing more is acted on
        if self._finish is not None:
            self._wake_worker()
        if self._outbox is not None:
            self._outbox.clear()
        self._queued_bytes = 0
        self._notify_drained()
        if self._direct is not None:
            self._direct.close_now(code, reason)
            return
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close_asgi(code, reason), name="hubbub-close")

    async def _close_asgi(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), self.close_timeout)
        except TimeoutError:
            # Another ASGI server offers no way to abort; it will reap the socket.
            logger.info(
                "conn %s: close frame not written within %.1fs",
                self.id,
                self.close_timeout,
                extra={"conn": self.id},
            )
        except Exception:  # already disconnected
            logger.debug("close after disconnect", exc_info=True)

    # -- incoming --------------------------------------------------------------

    async def serve(self, on_text: Callable[[str], None], on_end: Callable[[], None]) -> None:
        """Call ``on_text`` for each text message, then ``on_end`` once the peer is gone
        (or the connection closes). A binary message closes 1003.

        On the direct path this returns at once: the server's protocol makes the calls
        from its data callbacks, so an idle connection holds no task and no coroutine.
        Elsewhere it runs the receive loop itself and returns after ``on_end``.
        """
        if self._direct is not None and not self._ended:
            self._on_text = on_text
            self._on_end = on_end
            self._direct.attach(self)
            return
        try:
            if not self._ended:
                async for text in self.texts():
                    on_text(text)
        finally:
            on_end()

    async def serve_serially(
        self, handle: Callable[[str], Awaitable[None]], on_end: Callable[[], Awaitable[None]]
    ) -> None:
        """:meth:`serve` for endpoints that await per message: ``handle`` runs for one
        message at a time, in arrival order, and ``on_end`` once after the last one.

        On the direct path this returns at once; a task exists only while messages wait
        (an idle connection holds none), and reading from the socket pauses while
        :data:`INBOX_LIMIT` messages wait. An exception from ``handle`` is logged and
        closes the connection with 1011.
        """
        if self._direct is None or self._ended:
            try:
                if not self._ended:
                    async for text in self.texts():
                        await handle(text)
            finally:
                await on_end()
            return
        self._handle = handle
        self._finish = on_end
        self._direct.attach(self)

    def _wake_worker(self) -> None:
        if self._worker is None:
            worker = self._worker = asyncio.get_running_loop().create_task(self._work())
            if self._workers is not None:
                self._workers.add(worker)
                worker.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        inbox = self._inbox
        direct = self._direct
        assert direct is not None
        try:
            while inbox and self._handle is not None:
                text = inbox.popleft()
                if self._held and len(inbox) <= INBOX_LIMIT // 2:
                    self._held = False
                    direct.hold_reading(False)
                try:
                    await self._handle(text)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # the worker itself is cancelled (shutdown)
                    self._failed()  # a cancellation escaped from below: a bug
                except Exception:
                    self._failed()
            finish = self._finish
            if finish is not None and self._closing:
                self._finish = None  # closing, and every message that counts is done
                await finish()
        finally:
            self._worker = None

    def _failed(self) -> None:
        logger.exception("conn %s: the endpoint failed", self.id, extra={"conn": self.id})
        self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def receive_text(self, text: str) -> None:
        """:class:`Receiver`: a text message from the direct channel."""
        if self._metrics is not None:
            self._metrics.frames_in.inc()
        if self._closing:
            return
        if self._on_text is not None:
            self._on_text(text)
        elif self._handle is not None:
            inbox = self._inbox
            if inbox is None:
                inbox = self._inbox = deque()
            inbox.append(text)
            if len(inbox) >= INBOX_LIMIT and not self._held and self._direct is not None:
                self._held = True
                self._direct.hold_reading(True)
            self._wake_worker()

    def receive_bytes(self, data: bytes) -> None:
        """:class:`Receiver`: a binary message from the direct channel."""
        if self._metrics is not None:
            self._metrics.frames_in.inc()
        self.close(CloseCode.UNSUPPORTED_DATA, "text frames only")

    def disconnected(self, code: int) -> None:
        """:class:`Receiver`: the connection is closing or gone."""
        self._ended = True
        if self.close_code is None:
            self.close_code = code
        self._closing = True
        self._notify_drained()
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()
        if self._finish is not None:
            self._wake_worker()  # runs on_end after the messages still waiting

    async def texts(self) -> AsyncGenerator[str, None]:
        """Yield each text message until the peer is gone. A binary frame closes 1003."""
        receive = self.websocket.receive
        count_in = self._metrics.frames_in.inc if self._metrics is not None else None
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                if count_in is not None:
                    count_in()
                text = message.get("text")
                if text is None:
                    self.close(CloseCode.UNSUPPORTED_DATA, "text frames only")
                    continue
                if not self._closing:
                    yield text
            elif message["type"] == "websocket.disconnect":
                self._ended = True
                if self.close_code is None:
                    self.close_code = message.get("code", CloseCode.NORMAL)
                self._closing = True
                self._notify_drained()
                return
