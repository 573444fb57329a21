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
import enum
import itertools
import logging
import os
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

from starlette.websockets import WebSocket

from hubbub.errors import BinaryRefused, CloseCode, Closing, EndpointFailed, SlowConsumer
from hubbub.metrics import Metrics
from hubbub.outgoing import OutFrame

logger = logging.getLogger("hubbub.connection")

# Connection ids for log lines: unique within a process, from a random start so that the
# workers of one deployment do not repeat each other's (a counter: no system call each).
_ids = itertools.count(int.from_bytes(os.urandom(4), "big"))

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


class State(enum.Enum):
    """Where a connection is in its life; only forwards."""

    OPEN = "open"  # accepted (or being accepted): sends go out
    CLOSING = "closing"  # this side closed it (or a send failed): sends are dropped
    ENDED = "ended"  # the disconnect is known: nothing more comes in


class Outbox:
    """Frames waiting for one client, within its bounds (``--outbox-max-*``)."""

    __slots__ = ("_drained", "_frames", "max_bytes", "max_messages", "peak", "size")

    def __init__(self, limits: Limits) -> None:
        self.max_bytes = limits.outbox_max_bytes
        self.max_messages = limits.outbox_max_messages
        self._frames: deque[OutFrame] | None = None  # made when first needed
        self.size = 0  # bytes waiting
        self.peak = 0  # most frames ever waiting (a slow consumer's counts the one refused)
        self._drained: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._frames or ())

    def __bool__(self) -> bool:
        return bool(self._frames)

    def push(self, frame: OutFrame) -> bool:
        """Queue ``frame``; False if it does not fit (the client is a slow consumer)."""
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        if len(frames) >= self.max_messages or self.size + frame.size > self.max_bytes:
            self.peak = max(self.peak, len(frames) + 1)
            return False
        frames.append(frame)
        self.size += frame.size
        self.peak = max(self.peak, len(frames))
        return True

    def pop(self) -> OutFrame:
        assert self._frames is not None
        frame = self._frames.popleft()
        self.size -= frame.size
        return frame

    def clear(self) -> None:
        if self._frames is not None:
            self._frames.clear()
        self.size = 0
        self.notify()

    @property
    def over_half(self) -> bool:
        """More than half of either bound is in use."""
        return len(self) > self.max_messages // 2 or self.size > self.max_bytes // 2

    def notify(self, closing: bool = False) -> None:
        """Wake :meth:`wait_for_room` if there is room now (or the connection closes)."""
        if self._drained is not None and (closing or not self.over_half):
            self._drained.set()

    async def wait_for_room(self, closing: Callable[[], bool]) -> None:
        while not closing() and self.over_half:
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()


class DirectOutlet:
    """Writes frames straight into the transport of Hubbub's own server while it is
    writable; queues them while it is not; the transport's resume drains the queue."""

    __slots__ = ("channel", "deflate", "outbox")

    def __init__(self, channel: DirectChannel, outbox: Outbox) -> None:
        self.channel = channel
        self.outbox = outbox
        self.deflate: tuple[int, int] | None = None

    def start(self, conn_id: str) -> None:
        channel = self.channel
        channel.conn_id = conn_id
        self.deflate = channel.deflate
        channel.on_writable(self.drain)

    def send(self, frame: OutFrame) -> bool:
        channel = self.channel
        if not self.outbox and channel.is_writable():
            deflate = self.deflate
            channel.write_frame(frame.wire if deflate is None else frame.deflated(*deflate))
            return True
        return self.outbox.push(frame)

    def drain(self) -> None:
        # The transport became writable again; refill it until it pauses.
        channel, outbox, deflate = self.channel, self.outbox, self.deflate
        while outbox and channel.is_writable():
            frame = outbox.pop()
            channel.write_frame(frame.wire if deflate is None else frame.deflated(*deflate))
        outbox.notify()

    def close(self, code: int, reason: str) -> None:
        self.channel.close_now(code, reason)

    def release(self) -> None:
        self.channel.on_writable(None)

    async def wait(self) -> None:
        pass  # nothing of its own to wait for


class AsgiOutlet:
    """Under another ASGI server: a writer task owns every await on the socket."""

    __slots__ = ("_closer", "_wakeup", "_writer", "connection", "outbox")

    def __init__(self, connection: Connection, outbox: Outbox) -> None:
        self.connection = connection
        self.outbox = outbox
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    def start(self, conn_id: str) -> None:
        self._wakeup = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="hubbub-writer")

    def send(self, frame: OutFrame) -> bool:
        if not self.outbox.push(frame):
            return False
        if self._wakeup is not None:
            self._wakeup.set()
        return True

    async def _write_loop(self) -> None:
        assert self._wakeup is not None
        send = self.connection.websocket.send
        outbox, wakeup = self.outbox, self._wakeup
        while True:
            while not outbox:
                wakeup.clear()
                await wakeup.wait()
            frame = outbox.pop()
            outbox.notify()
            try:
                await send(frame.asgi_event)
            except Exception:  # the peer went away; the reader will see the disconnect
                self.connection.failed_to_send()
                return

    def close(self, code: int, reason: str) -> None:
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close(code, reason), name="hubbub-close")

    async def _close(self, code: int, reason: str) -> None:
        connection = self.connection
        try:
            await asyncio.wait_for(
                connection.websocket.close(code, reason), connection.close_timeout
            )
        except TimeoutError:
            # Another ASGI server offers no way to abort; it will reap the socket.
            logger.info(
                "conn %s: close frame not written within %.1fs",
                connection.id,
                connection.close_timeout,
                extra={"conn": connection.id},
            )
        except Exception:  # already disconnected
            logger.debug("close after disconnect", exc_info=True)

    def release(self) -> None:
        for task in (self._writer, self._closer):
            if task is not None and not task.done():
                task.cancel()

    async def wait(self) -> None:
        for task in (self._writer, self._closer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class Connection:
    """A client socket with a bounded outbox. Created by the hub, one per WebSocket.

    Its :class:`State` only moves forwards; how frames reach the socket is one outlet,
    chosen once (:class:`DirectOutlet` under ``hubbub serve``, :class:`AsgiOutlet`
    elsewhere); how messages reach the endpoint is chosen by the endpoint
    (:meth:`serve`, :meth:`serve_serially` or :meth:`texts`).
    """

    __slots__ = (
        "_direct",
        "_finish",
        "_handle",
        "_held",
        "_inbox",
        "_metrics",
        "_on_end",
        "_on_slow",
        "_on_text",
        "_outbox",
        "_outlet",
        "_state",
        "_worker",
        "_workers",
        "close_code",
        "close_timeout",
        "id",
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
        self.id = f"{next(_ids) & 0xFFFFFFFF:08x}"  # "conn" in log lines
        self._metrics = metrics
        self.close_code: int | None = None
        self.close_timeout = limits.close_timeout
        self._on_slow = on_slow
        self._state = State.OPEN
        self._outbox = Outbox(limits)
        extensions = websocket.scope.get("extensions") or {}
        self._direct: DirectChannel | None = extensions.get(DIRECT_EXTENSION)
        self._outlet: DirectOutlet | AsgiOutlet = (
            DirectOutlet(self._direct, self._outbox)
            if self._direct is not None
            else AsgiOutlet(self, self._outbox)
        )
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

    # -- lifecycle -------------------------------------------------------------

    async def accept(self) -> None:
        """Complete the handshake and start draining the outbox."""
        await self.websocket.accept()
        self._outlet.start(self.id)

    def release(self) -> None:
        """Drop what the connection owns; called once the peer is gone. Tasks of the
        ASGI path are cancelled, not awaited (see :meth:`finish`)."""
        self._state = State.ENDED
        self._outbox.clear()
        self._on_text = self._on_end = self._handle = None
        self._outlet.release()

    async def finish(self) -> None:
        """:meth:`release`, then wait until the ASGI path's tasks have ended."""
        self.release()
        await self._outlet.wait()

    @property
    def state(self) -> State:
        """Where the connection is in its life."""
        return self._state

    @property
    def closing(self) -> bool:
        """True once the connection is closing; sends are then dropped."""
        return self._state is not State.OPEN

    @property
    def outbox_peak(self) -> int:
        """Most frames ever waiting in the outbox (for the metrics)."""
        return self._outbox.peak

    @property
    def queued(self) -> tuple[int, int]:
        """Frames and bytes waiting in the outbox."""
        return len(self._outbox), self._outbox.size

    # -- outgoing --------------------------------------------------------------

    def send(self, frame: OutFrame) -> None:
        """Queue ``frame`` for this client; never blocks. Overflow closes the client.

        Not counted in the metrics: fan-out counts a whole broadcast at once
        (``Metrics.sent``); a frame for this client alone goes through :meth:`send_one`.
        """
        if self._state is State.OPEN and not self._outlet.send(frame):
            self._on_slow(self)
            self.close_for(SlowConsumer())

    async def wait_for_room(self) -> None:
        """Return once at most half of the outbox budget is in use (or the connection is
        closing): for senders of bulk data such as a backlog, so they never overflow it."""
        await self._outbox.wait_for_room(lambda: self._state is not State.OPEN)

    @property
    def crowded(self) -> bool:
        """True while more than half of the outbox budget is in use: time for a sender of
        bulk data to :meth:`wait_for_room`."""
        return self._outbox.over_half

    def send_one(self, frame: OutFrame) -> None:
        """Queue ``frame`` for this client alone, and count it in the metrics."""
        if self._metrics is not None:
            self._metrics.sent(1, frame.size)
        self.send(frame)

    def send_text(self, text: str) -> None:
        """Queue one text message for this client only (counted)."""
        self.send_one(OutFrame.from_text(text))

    def failed_to_send(self) -> None:
        """The ASGI server could not send: the peer is going; nothing more is sent."""
        if self._state is State.OPEN:
            self._state = State.CLOSING

    # -- closing ---------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Start closing with ``code``; queued frames are dropped. Never blocks."""
        if self._state is not State.OPEN:
            return
        self._state = State.CLOSING
        self.close_code = code
        self._handle = None  # closed by us: nothing more is acted on
        if self._finish is not None:
            self._wake_worker()
        self._outbox.clear()
        self._outbox.notify(closing=True)
        self._outlet.close(code, reason)

    def close_for(self, error: Closing) -> None:
        """:meth:`close` with the close code and reason ``error``'s type carries."""
        self.close(error.close_code, error.close_reason)

    def _ended(self, code: int) -> None:
        # The disconnect is known (from the channel or from ASGI receive).
        self._state = State.ENDED
        if self.close_code is None:
            self.close_code = code
        self._outbox.notify(closing=True)

    # -- incoming --------------------------------------------------------------

    async def serve(self, on_text: Callable[[str], None], on_end: Callable[[], None]) -> None:
        """Call ``on_text`` for each text message, then ``on_end`` once the peer is gone
        (or the connection closes). A binary message closes 1003.

        On the direct path this returns at once: the server's protocol makes the calls
        from its data callbacks, so an idle connection holds no task and no coroutine.
        Elsewhere it runs the receive loop itself and returns after ``on_end``.
        """
        ended = self._state is State.ENDED
        if self._direct is not None and not ended:
            self._on_text = on_text
            self._on_end = on_end
            self._direct.attach(self)
            return
        try:
            if not ended:
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
        ended = self._state is State.ENDED
        if self._direct is None or ended:
            try:
                if not ended:
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
            if finish is not None and self._state is not State.OPEN:
                self._finish = None  # closing, and every message that counts is done
                await finish()
        finally:
            self._worker = None

    def _failed(self) -> None:
        logger.exception("conn %s: the endpoint failed", self.id, extra={"conn": self.id})
        self.close_for(EndpointFailed())

    def receive_text(self, text: str) -> None:
        """:class:`Receiver`: a text message from the direct channel."""
        if self._metrics is not None:
            self._metrics.frames_in.inc()
        if self._state is not State.OPEN:
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
        self.close_for(BinaryRefused())

    def disconnected(self, code: int) -> None:
        """:class:`Receiver`: the connection is closing or gone."""
        self._ended(code)
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
                    self.close_for(BinaryRefused())
                    continue
                if self._state is State.OPEN:
                    yield text
            elif message["type"] == "websocket.disconnect":
                self._ended(message.get("code", CloseCode.NORMAL))
                return
