"""Core NATS pub/sub (``nats://``) through ``nats-py``; no JetStream.

One connection per process, one NATS subscription per Hubbub channel; how channels
become subjects and payloads become frames (split beyond the server's
``max_payload``, re-joined and de-duplicated on arrival) is ``nats_wire.py``.

Reconnection, re-subscription and the outage buffer belong to :class:`RemoteBroker`,
so nats-py's own reconnection and PINGs are turned off: when the connection drops,
nats-py closes the client, its callbacks resolve this connection's ``lost`` future, and
``_listen`` raises at once; after ``ping_interval`` seconds without that, ``_listen``
PINGs the server and raises if no PONG comes within ``ping_timeout`` (a frozen server).
nats-py's errors are logged in one line each (connection errors at DEBUG: the
supervisor reports the lost connection itself), never with a stack trace. Subscribing
and sending return after a round trip that proves the server has processed the SUB or
the whole batch. The connection is opened with ``no_echo``, so the server does not even
send this process its own messages back (``_received`` would drop them anyway).
Incomplete large messages are bounded by :attr:`NatsBroker.reassembly_bytes`; what is
discarded for it is counted in ``stats.dropped`` and logged, and what was gathered is
forgotten on reconnection.

Slow consumer
    nats-py drops messages a subscription cannot queue (its pending limits); each such
    drop is counted in ``stats.dropped`` and the first one per connection is logged.

What nats-py does not document (its write queue, its tasks, its socket) is reached only
through ``hubbub.upstream``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hubbub import upstream
from hubbub.brokers.nats_wire import MIN_MAX_PAYLOAD, Reassembler, frames_for, subject_for
from hubbub.brokers.remote import RemoteBroker, describe, logger

T = TypeVar("T")

_NEVER = 365 * 24 * 3600
# Errors that mean the connection itself is gone; the supervisor reports those once.
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    nats_errors.StaleConnectionError,  # includes UnexpectedEOF
    nats_errors.ConnectionClosedError,
    nats_errors.NoServersError,
)


@dataclass
class _Link:
    """One connection and everything that belongs to it, so that callbacks of a closed
    connection can only touch their own state."""

    nc: Client
    lost: asyncio.Future[str]
    subs: dict[str, Subscription] = field(default_factory=dict)
    # nats-py's task per subscription, until it ends (awaited by _disconnect).
    sub_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    last_error: str = ""
    slow_reported: bool = False

    def track(self, sub: Subscription) -> None:
        """Remember the task nats-py runs for ``sub``, until it ends."""
        task = upstream.nats_subscription_task(sub)
        if task is not None and not task.done():
            self.sub_tasks.add(task)
            task.add_done_callback(self.sub_tasks.discard)

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
        # nats-py cancels its tasks on close but never awaits them: awaited below, so
        # that none outlives us.
        tasks = [*upstream.nats_tasks(nc), *link.sub_tasks]
        try:
            await asyncio.wait_for(nc.close(), self.close_timeout)
        except Exception as exc:
            logger.debug("%s: close failed: %s", self._name, describe(exc))
        finally:
            # Also when cancelled (stop() during a reconnection): nothing may outlive this.
            # close() may have timed out or returned early (an earlier close is stuck
            # sending to a frozen server): drop the socket rather than leave it open.
            upstream.nats_abort(nc)
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
        description = describe(exc)
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
        # Tracked as soon as subscribe() returns: it makes the task, and nats-py drops a
        # cancellation that arrives after that (see _stop_if_cancelled), so it returns.
        sub = await link.nc.subscribe(subject_for(channel), cb=self._handler(link, channel))
        link.track(sub)
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
    # flush()'s PONG proves nothing about commands still queued for nats-py's flusher
    # (its PING overtakes them): first wait until they are written to the socket.
    await upstream.nats_write_pending(nc)
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
