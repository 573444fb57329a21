"""Core NATS pub/sub (``nats://``) through ``nats-py``; no JetStream.

One connection per process, one NATS subscription per Hubbub channel. Reconnection,
re-subscription and the outage buffer belong to :class:`RemoteBroker`, so nats-py's own
reconnection and PINGs are turned off: when the connection drops, nats-py closes the
client, its callbacks resolve this connection's ``lost`` future, and ``_listen`` raises
at once; after ``ping_interval`` seconds without that, ``_listen`` PINGs the server and
raises if no PONG comes within ``ping_timeout`` (a frozen server). nats-py's errors are
logged in one line each (connection errors at DEBUG: the supervisor reports the lost
connection itself), never with a stack trace. Subscribing and sending return after a
round trip that proves the server has processed the SUB or the whole batch. The
connection is opened with ``no_echo``, so the server does not even send this process
its own messages back (``_received`` would drop them anyway).

Subjects
    A channel whose name is made only of ``A-Z a-z 0-9 _ -`` travels on
    ``hubbub.r.<name>``. Any other name (dots, spaces, ``*``, ``>``, non-ASCII, ...)
    travels on ``hubbub.b.<base64url of its UTF-8, unpadded>``, and the empty name on
    ``hubbub.e``. The second token keeps the three forms apart, so distinct channels
    never share a subject and no channel is ever a wildcard. The server's control-line
    limit (4 KiB by default) bounds names to about 2.9 KiB of UTF-8.

Frames
    Every message starts with a kind byte, the sender's node id and the sender's
    message sequence number (big-endian u64): 25 bytes of overhead. The sequence number
    lets a receiver drop duplicates: when the connection breaks before the server has
    confirmed a batch (the PONG after it), the shared sender re-sends the whole batch on
    the next connection, although the server may have delivered part of it already. A
    re-sent message keeps its number (numbers advance only when a batch is confirmed, and
    a re-sent batch starts with the same messages), and a receiver delivers a message
    only if its number is above the last one it delivered from that sender on that
    channel.

Large payloads
    The server refuses messages above its ``max_payload`` (announced in its INFO, 1 MiB
    by default), and Hubbub payloads may be larger. Rather than drop them, a message
    that does not fit in one frame (``0x00``) is split into consecutive parts (``0x01``),
    each carrying the part index and count (two big-endian u32) and a slice of the
    payload, every part within ``max_payload``. A sender publishes the parts of one
    message back to back on the channel's subject, and NATS keeps one connection's
    messages in order, so the receiver reassembles per (channel, sender) and delivers the
    payload when the last part arrives; payloads from one sender stay in order whatever
    their size. Part 0 always starts afresh (a re-sent batch), a part out of sequence
    discards what was gathered (this process subscribed mid-message, or the client
    dropped a part), and incomplete messages are bounded by
    :attr:`NatsBroker.reassembly_bytes`: beyond it the oldest is discarded, counted in
    ``stats.dropped`` and logged. What was gathered is forgotten on reconnection.

Slow consumer
    nats-py drops messages a subscription cannot queue (its pending limits); each such
    drop is counted in ``stats.dropped`` and the first one per connection is logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import re
import struct
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hubbub.brokers.remote import NODE_ID_BYTES, RemoteBroker, logger

T = TypeVar("T")

SUBJECT_PREFIX = "hubbub."
WHOLE = b"\x00"
PART = b"\x01"
_SEQ = struct.Struct(">Q")
_PART_INDEX = struct.Struct(">II")  # index, count
WHOLE_HEADER_BYTES = 1 + NODE_ID_BYTES + _SEQ.size
PART_HEADER_BYTES = WHOLE_HEADER_BYTES + _PART_INDEX.size
# A server announcing less than this could not carry a useful share of a payload per part.
MIN_MAX_PAYLOAD = 1024

_NEVER = 365 * 24 * 3600
_LITERAL = re.compile(r"[A-Za-z0-9_-]+")
# Errors that mean the connection itself is gone; the supervisor reports those once.
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    nats_errors.StaleConnectionError,  # includes UnexpectedEOF
    nats_errors.ConnectionClosedError,
    nats_errors.NoServersError,
)


@functools.lru_cache(maxsize=4096)
def subject_for(channel: str) -> str:
    """The NATS subject that carries ``channel`` (see the module doc); never a wildcard."""
    if _LITERAL.fullmatch(channel):
        return f"{SUBJECT_PREFIX}r.{channel}"
    if not channel:
        return f"{SUBJECT_PREFIX}e"
    raw = channel.encode("utf-8", "surrogatepass")
    return f"{SUBJECT_PREFIX}b.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode('ascii')}"


def frames_for(data: bytes, seq: int, max_payload: int) -> Iterator[bytes]:
    """The NATS messages that carry ``data`` (node id + payload), the sender's message
    number ``seq``, each within ``max_payload`` bytes (see the module doc)."""
    head = data[:NODE_ID_BYTES] + _SEQ.pack(seq)
    payload = data[NODE_ID_BYTES:]
    if WHOLE_HEADER_BYTES + len(payload) <= max_payload:
        yield WHOLE + head + payload
        return
    piece = max_payload - PART_HEADER_BYTES
    if piece < 1:
        raise ValueError(f"max_payload {max_payload} leaves no room for a part")
    count = -(-len(payload) // piece)
    for index in range(count):
        yield (
            PART
            + head
            + _PART_INDEX.pack(index, count)
            + payload[index * piece : (index + 1) * piece]
        )


@dataclass
class _Partial:
    seq: int
    count: int
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0


class Reassembler:
    """Turns received frames back into ``node id + payload``, per (channel, sender):
    joins parts and drops what was already delivered (see the module doc).

    ``on_drop(channel, size)`` is called for each incomplete message discarded to stay
    within ``budget`` bytes.
    """

    def __init__(self, budget: int, on_drop: Callable[[str, int], None]) -> None:
        self.budget = budget
        self.on_drop = on_drop
        self.pending_bytes = 0
        self.duplicates = 0
        self._partial: dict[tuple[str, bytes], _Partial] = {}
        self._delivered: dict[tuple[str, bytes], int] = {}  # last seq, per channel and sender

    def feed(self, channel: str, frame: bytes) -> bytes | None:
        """The complete ``node id + payload`` that ``frame`` finishes, else None."""
        kind = frame[:1]
        if kind == WHOLE and len(frame) >= WHOLE_HEADER_BYTES:
            return self._whole(channel, frame)
        if kind == PART and len(frame) >= PART_HEADER_BYTES:
            return self._part(channel, frame)
        logger.debug("nats broker: ignoring a malformed frame on %r", channel)
        return None

    def _whole(self, channel: str, frame: bytes) -> bytes | None:
        node = frame[1 : 1 + NODE_ID_BYTES]
        key = (channel, node)
        if self._partial:
            # The sender moved on: what it left unfinished here will not be completed.
            self._discard(key)
        if self._duplicate(key, _SEQ.unpack_from(frame, 1 + NODE_ID_BYTES)[0]):
            return None
        return node + frame[WHOLE_HEADER_BYTES:]

    def _part(self, channel: str, frame: bytes) -> bytes | None:
        node = frame[1 : 1 + NODE_ID_BYTES]
        (seq,) = _SEQ.unpack_from(frame, 1 + NODE_ID_BYTES)
        index, count = _PART_INDEX.unpack_from(frame, WHOLE_HEADER_BYTES)
        key = (channel, node)
        partial = self._partial.get(key)
        if index == 0:
            # A re-sent batch starts its message again from part 0.
            self._discard(key)
            last = self._delivered.get(key)
            if last is not None and seq <= last:
                self.duplicates += 1
                return None  # its later parts find no partial and are ignored
            partial = self._partial[key] = _Partial(seq, count)
        elif (
            partial is None
            or seq != partial.seq
            or index != len(partial.pieces)
            or count != partial.count
        ):
            # Subscribed mid-message, an earlier part was dropped, or a duplicate.
            self._discard(key)
            logger.debug("nats broker: part %d/%d on %r out of sequence", index, count, channel)
            return None
        piece = frame[PART_HEADER_BYTES:]
        partial.pieces.append(piece)
        partial.size += len(piece)
        self.pending_bytes += len(piece)
        if index + 1 < count:
            self._keep_within_budget()
            return None
        self._discard(key)
        if self._duplicate(key, seq):
            return None
        return node + b"".join(partial.pieces)

    def _keep_within_budget(self) -> None:
        while self.pending_bytes > self.budget and self._partial:
            oldest = next(iter(self._partial))
            self.on_drop(oldest[0], self._partial[oldest].size)
            self._discard(oldest)

    def reset(self) -> None:
        """Discard incomplete messages (the connection that carried them is gone); what
        was delivered is remembered, so that re-sent batches are not delivered again."""
        self._partial.clear()
        self.pending_bytes = 0

    def forget(self, channel: str) -> None:
        """Discard everything about ``channel`` (it was unsubscribed)."""
        for key in [key for key in self._partial if key[0] == channel]:
            self._discard(key)
        for key in [key for key in self._delivered if key[0] == channel]:
            del self._delivered[key]

    def _duplicate(self, key: tuple[str, bytes], seq: int) -> bool:
        last = self._delivered.get(key)
        if last is not None and seq <= last:
            self.duplicates += 1
            return True
        self._delivered[key] = seq
        return False

    def _discard(self, key: tuple[str, bytes]) -> None:
        partial = self._partial.pop(key, None)
        if partial is not None:
            self.pending_bytes -= partial.size


@dataclass
class _Link:
    """One connection and everything that belongs to it, so that callbacks of a closed
    connection can only touch their own state."""

    nc: Client
    lost: asyncio.Future[str]
    subs: dict[str, Subscription] = field(default_factory=dict)
    last_error: str = ""
    slow_reported: bool = False

    async def guard(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run ``operation`` unless the connection is lost first (then raise).

        nats-py leaves a pending flush or a forced publish flush waiting for a PONG that
        a dead server never sends; this makes such waits end with the connection.
        """
        if self.lost.done():
            operation.close()
            raise ConnectionError(self.lost.result())
        task = asyncio.create_task(operation)
        try:
            await asyncio.wait((task, self.lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise ConnectionError(self.lost.result() if self.lost.done() else "cancelled")
        return task.result()


class NatsBroker(RemoteBroker):
    """Core NATS: one connection, one subscription per channel (see the module doc)."""

    # Seconds per TCP attempt; nats-py makes two before giving up (see _connect).
    connect_timeout = 3
    # Seconds of silence after which the listener PINGs the server, and seconds it then
    # waits for the PONG: a frozen server is noticed within about 20 s.
    ping_interval = 10
    ping_timeout = 10
    close_timeout = 2.0
    reassembly_bytes = 64 * 1024 * 1024
    """Bytes of incomplete large messages kept, over every channel and sender (read when
    the broker is built)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._link: _Link | None = None
        self._reassembler = Reassembler(self.reassembly_bytes, self._reassembly_dropped)
        # The number of the first message of the next batch; advances only once the
        # server has confirmed a batch, so that a re-sent batch keeps its numbers.
        self._next_seq = 0

    @property
    def max_payload(self) -> int | None:
        """The largest NATS message the connected server accepts; None when disconnected."""
        return self._link.nc.max_payload if self._link is not None else None

    # -- connection ----------------------------------------------------------------

    async def _connect(self) -> None:
        if self._link is not None:
            await self._disconnect()
        link = _Link(nc=Client(), lost=asyncio.get_running_loop().create_future())
        self._link = link
        self._reassembler.reset()

        async def on_error(exc: Exception) -> None:
            self._nats_error(link, exc)

        async def on_gone() -> None:
            if not link.lost.done():
                link.lost.set_result(link.last_error or "disconnected")

        try:
            await link.nc.connect(
                self.url,
                error_cb=on_error,
                disconnected_cb=on_gone,
                closed_cb=on_gone,
                name=f"hubbub {self.node.decode()}",
                no_echo=True,
                # The supervisor reconnects with backoff: nats-py must give up at once.
                # With one server, 1 means two immediate attempts (0 would mean forever).
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=self.connect_timeout,
                # The listener checks liveness itself: when nats-py's own PINGs find the
                # server frozen, its close() first waits to send what is pending to that
                # server, so neither the callbacks nor the end of the connection come.
                ping_interval=_NEVER,
            )
        except nats_errors.NoServersError:
            # Says only that attempts ran out; the reason is what the error callback saw.
            raise ConnectionError(link.last_error or "no server reachable") from None
        if link.nc.max_payload < MIN_MAX_PAYLOAD:
            raise ConnectionError(f"server max_payload {link.nc.max_payload} is too small")

    async def _disconnect(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        nc = link.nc
        # nats-py cancels its tasks on close but never awaits them; collected before
        # close() forgets the subscriptions, awaited below so that none outlives us.
        tasks = _client_tasks(nc)
        try:
            await asyncio.wait_for(nc.close(), self.close_timeout)
        except Exception as exc:
            logger.debug("%s: close failed: %s", self._name, _describe(exc))
        finally:
            # Also when cancelled (stop() during a reconnection): nothing may outlive this.
            # close() may have timed out or returned early (an earlier close is stuck
            # sending to a frozen server): drop the socket rather than leave it open.
            _abort_transport(nc)
            if not link.lost.done():
                link.lost.set_result("closed")
            pending = [task for task in tasks if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self.close_timeout)

    def _current(self) -> _Link:
        link = self._link
        if link is None:
            raise ConnectionError("not connected")
        return link

    def _nats_error(self, link: _Link, exc: Exception) -> None:
        """nats-py's error callback: one line, never a stack trace."""
        if isinstance(exc, nats_errors.SlowConsumerError):
            self.stats.dropped += 1
            if not link.slow_reported:
                link.slow_reported = True
                logger.warning(
                    "%s: slow consumer, dropping messages on %s", self._name, exc.subject
                )
            return
        description = _describe(exc)
        if isinstance(exc, _CONNECTION_ERRORS):
            link.last_error = description
            # The supervisor logs the lost connection once; this is only the detail.
            logger.debug("%s: %s", self._name, description)
        else:
            logger.warning("%s: %s", self._name, description)

    def _reassembly_dropped(self, channel: str, size: int) -> None:
        self.stats.dropped += 1
        logger.warning(
            "%s: dropping an incomplete large message on %r (%d bytes gathered; "
            "reassembly_bytes is %d)",
            self._name,
            channel,
            size,
            self.reassembly_bytes,
        )

    # -- channels ------------------------------------------------------------------

    async def _subscribe_remote(self, channel: str) -> None:
        link = self._current()
        if channel not in link.subs:
            await link.guard(self._subscribe_on(link, channel))

    async def _subscribe_on(self, link: _Link, channel: str) -> None:
        sub = await link.nc.subscribe(subject_for(channel), cb=self._handler(link, channel))
        link.subs[channel] = sub  # before the round trip, so that an unsubscribe finds it
        _stop_if_cancelled()
        await _round_trip(link.nc)  # the server has processed SUB once it answers
        if channel not in self._channels and link.subs.get(channel) is sub:
            # Left while this was in flight, and the unsubscribe found nothing to undo.
            del link.subs[channel]
            await sub.unsubscribe()

    async def _unsubscribe_remote(self, channel: str) -> None:
        link = self._link
        if link is None:
            return
        self._reassembler.forget(channel)
        sub = link.subs.pop(channel, None)
        if sub is not None:
            await sub.unsubscribe()

    def _handler(self, link: _Link, channel: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(msg: Msg) -> None:
            if link is not self._link:
                return  # a message left over from a closed connection
            data = self._reassembler.feed(channel, msg.data)
            if data is not None:
                self._received(channel, data)

        return on_message

    # -- data ----------------------------------------------------------------------

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        link = self._current()
        first = self._next_seq
        await link.guard(self._publish(link.nc, batch, first))
        self._next_seq = first + len(batch)

    async def _publish(self, nc: Client, batch: list[tuple[str, bytes]], first: int) -> None:
        limit = nc.max_payload
        for seq, (channel, data) in enumerate(batch, first):
            subject = subject_for(channel)
            for frame in frames_for(data, seq, limit):
                await nc.publish(subject, frame)
                _stop_if_cancelled()
        await _round_trip(nc)
        if not nc.is_connected:
            raise ConnectionError("connection closed while publishing")

    async def _listen(self) -> None:
        link = self._current()
        while True:
            try:
                # Shielded: a timeout must not resolve the connection's future.
                reason = await asyncio.wait_for(asyncio.shield(link.lost), self.ping_interval)
            except TimeoutError:
                try:
                    await link.guard(link.nc.flush(timeout=self.ping_timeout))
                except nats_errors.TimeoutError:
                    raise ConnectionError("no PONG from the server") from None
            else:
                raise ConnectionError(reason)


async def _round_trip(nc: Client) -> None:
    """Return once the server has processed every command sent so far."""
    # nats-py's flush() writes its PING straight to the socket, ahead of commands still
    # queued for its flusher task, so its PONG alone proves nothing about them: first
    # wait until the flusher has handed them to the socket.
    await nc._flush_pending(force_flush=True)
    _stop_if_cancelled()
    await nc.flush()


def _stop_if_cancelled() -> None:
    """Honour a cancellation that nats-py swallowed.

    While a command waits for its flusher (a forced flush), nats-py catches and drops
    CancelledError; the task still counts the request, so raise it here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _client_tasks(nc: Client) -> list[asyncio.Task[Any]]:
    """The tasks nats-py runs for ``nc`` (its own loops and one per subscription)."""
    candidates: list[object] = [
        nc._reading_task,
        nc._ping_interval_task,
        nc._flusher_task,
        nc._reconnection_task,
    ]
    candidates += [getattr(sub, "_wait_for_msgs_task", None) for sub in nc._subs.values()]
    return [task for task in candidates if isinstance(task, asyncio.Task)]


def _abort_transport(nc: Client) -> None:
    """Drop ``nc``'s socket at once, unsent data and all (a no-op once it is closed)."""
    writer = getattr(nc._transport, "_io_writer", None)
    if isinstance(writer, asyncio.StreamWriter):
        with contextlib.suppress(Exception):
            writer.transport.abort()
