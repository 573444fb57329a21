"""What every broker that talks to a server shares: staying connected, and not losing
what is published while it is not.

A :class:`RemoteBroker` owns one supervisor task. The supervisor connects, subscribes
every channel the hub still needs, then runs two tasks side by side: the backend's
listener and the sender that drains the outbound buffer in batches. When either fails
(the connection broke, the listener raised), both stop, the failure is logged and
counted, and the supervisor reconnects with exponential backoff and jitter. So the
listener cannot die silently, and a publish never waits for the network: it appends
to a bounded buffer that is sent in order once the server is back.

Every payload is prefixed with this process's node id, so that a process can drop its
own messages when the server echoes them back (the hub has delivered those locally
already), with a counter, so that a batch sent again after a failure whose first
attempt did get through is not delivered twice, and with the deployment's epoch, so
that another deployment on the same server is not heard (counted as ``foreign``).
All processes of one deployment must therefore run the same version of this format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from abc import abstractmethod
from collections import deque
from itertools import islice
from urllib.parse import urlsplit, urlunsplit

from hubbub.brokers.base import EPOCH_BYTES, Broker

logger = logging.getLogger("hubbub.broker")

NODE_ID_BYTES = 16
# Between the node id and the payload; ASCII hex, so that text payloads stay text
# (PostgreSQL's NOTIFY carries text, and NUL bytes not at all).
COUNTER_BYTES = 16
MAX_SENDERS = 1024  # per channel: processes whose last counter is remembered


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class RemoteBroker(Broker):
    """Base of the Redis, PostgreSQL and NATS brokers (see the module doc)."""

    backoff_initial = 0.05
    batch_max = 512

    def __init__(
        self,
        url: str,
        *,
        buffer_messages: int = 10_000,
        buffer_bytes: int = 16 * 1024 * 1024,
        backoff_max: float = 1.0,
        namespace: str = "",
    ) -> None:
        super().__init__(url)
        # Channel names on the server: under the deployment's namespace, if it has one.
        self._prefix = f"{namespace}/" if namespace else ""
        self.node = secrets.token_hex(NODE_ID_BYTES // 2).encode()
        self.buffer_messages = buffer_messages
        self.buffer_bytes = buffer_bytes
        self.backoff_max = backoff_max
        # After a reconnection, wait this long before sending what was buffered: every
        # other node lost the server too and retries at most backoff_max apart, so by
        # then they are subscribed again and receive it.
        self.resend_delay = 2 * backoff_max
        self._channels: set[str] = set()
        self._outgoing: deque[tuple[str, bytes]] = deque()
        self._counter = 0
        self._last_counter: dict[str, dict[bytes, int]] = {}  # channel -> node -> counter
        self._outgoing_bytes = 0
        self._wakeup = asyncio.Event()
        self._attempted = asyncio.Event()
        self._connected = False
        self._dropping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._name = f"{urlsplit(url).scheme} broker {redacted(url)}"

    # -- what each backend implements -------------------------------------------

    @abstractmethod
    async def _connect(self) -> None:
        """Open the connection(s); raise if the server cannot be reached."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close whatever ``_connect`` opened; never raises; safe to call twice."""

    @abstractmethod
    async def _subscribe_remote(self, channel: str) -> None:
        """Subscribe on the server; return once deliveries flow."""

    @abstractmethod
    async def _unsubscribe_remote(self, channel: str) -> None:
        """Unsubscribe on the server."""

    @abstractmethod
    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        """Publish ``(channel, data)`` pairs in order; raise if the connection broke."""

    @abstractmethod
    async def _listen(self) -> None:
        """Receive until the connection breaks (then raise); call ``_received`` for each
        message."""

    # -- shared machinery ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._connected

    def _received(self, channel: str, data: bytes) -> None:
        """Hand a message from the server to the hub, unless this process sent it or it
        was delivered already."""
        node = data[:NODE_ID_BYTES]
        if node == self.node or channel not in self._channels:
            return
        start = NODE_ID_BYTES + COUNTER_BYTES
        if data[start : start + EPOCH_BYTES] != self.epoch and self._epoch_bound(channel):
            self._foreign()
            return
        # One process's messages keep their order on a channel, so its counter grows.
        counter = int(data[NODE_ID_BYTES : NODE_ID_BYTES + COUNTER_BYTES], 16)
        senders = self._last_counter.setdefault(channel, {})
        last = senders.pop(node, -1)  # re-inserted below: the dict is oldest-heard first
        if counter <= last:
            senders[node] = last
            return
        senders[node] = counter
        if len(senders) > MAX_SENDERS:
            # Processes that restarted long ago on a channel that never empties: forget
            # the one heard from least recently (at worst, one resent batch twice).
            del senders[next(iter(senders))]
        self.stats.received += 1
        if self._deliver is not None:
            self._deliver(channel[len(self._prefix) :], data[start + EPOCH_BYTES :])

    def _epoch_bound(self, channel: str) -> bool:
        bound = self.epoch_bound
        return bound is None or bound(channel[len(self._prefix) :])

    def _foreign(self) -> None:
        # Another deployment shares the broker server: expected (two deployments on one
        # Redis), but worth a line the first time, and a count every time.
        self.stats.foreign += 1
        if self.metrics is not None:
            self.metrics.broker_foreign.inc()
        if self.stats.foreign == 1:
            logger.warning(
                "%s: ignoring messages of another deployment (another store) on the same "
                "broker; give each deployment its own --namespace",
                self._name,
            )

    async def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name=self._name)
        await self._attempted.wait()

    async def stop(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor

    async def subscribe(self, channel: str) -> None:
        channel = self._prefix + channel
        self._channels.add(channel)
        if self._connected:
            try:
                await self._subscribe_remote(channel)
            except Exception as exc:  # the supervisor re-subscribes after reconnecting
                logger.debug("%s: subscribe %r failed: %s", self._name, channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        channel = self._prefix + channel
        self._channels.discard(channel)
        # Its senders' counters go with it (channels are made per room, node ids per
        # process): deliveries resume with whatever comes after a new subscribe.
        self._last_counter.pop(channel, None)
        if self._connected:
            try:
                await self._unsubscribe_remote(channel)
            except Exception as exc:  # a reconnect forgets it anyway
                logger.debug("%s: unsubscribe %r failed: %s", self._name, channel, exc)

    def publish(self, channel: str, payload: bytes) -> None:
        size = COUNTER_BYTES + EPOCH_BYTES + len(payload)
        if (
            len(self._outgoing) >= self.buffer_messages
            or self._outgoing_bytes + size > self.buffer_bytes
        ):
            self.stats.dropped += 1
            if self.metrics is not None:
                self.metrics.broker_dropped.inc()
            if not self._dropping:
                self._dropping = True
                logger.warning(
                    "%s: outbound buffer full (%d messages, %d bytes); dropping publishes "
                    "until it drains",
                    self._name,
                    len(self._outgoing),
                    self._outgoing_bytes,
                )
            return
        self._counter += 1
        self._outgoing.append(
            (self._prefix + channel, b"%016x" % self._counter + self.epoch + payload)
        )
        self._outgoing_bytes += size
        self._wakeup.set()

    async def _supervise(self) -> None:
        delay = self.backoff_initial
        ever_connected = False
        reported_down = False
        try:
            while True:
                try:
                    await self._connect()
                    subscribed: set[str] = set()
                    # Channels joined meanwhile are picked up by the next round.
                    while pending := self._channels - subscribed:
                        for channel in pending:
                            await self._subscribe_remote(channel)
                        subscribed |= pending
                except Exception as exc:
                    if not reported_down:
                        reported_down = True
                        logger.warning(
                            "%s: unreachable (%s); retrying with backoff",
                            self._name,
                            describe(exc),
                        )
                else:
                    self._set_connected(True)
                    reported_down = False
                    delay = self.backoff_initial
                    if ever_connected:
                        self.stats.reconnects += 1
                        if self.metrics is not None:
                            self.metrics.broker_reconnects.inc()
                        if self._on_reconnect is not None:
                            self._on_reconnect()
                        logger.warning(
                            "%s: reconnected; %d channels re-subscribed, %d buffered "
                            "messages to send in %.1fs",
                            self._name,
                            len(self._channels),
                            len(self._outgoing),
                            self.resend_delay,
                        )
                    else:
                        logger.info("%s: connected", self._name)
                    ever_connected = True
                    self._attempted.set()
                    try:
                        await self._run_connected(
                            resend_after=self.resend_delay if self.stats.reconnects else 0.0
                        )
                    except Exception as exc:
                        self.stats.listener_errors += 1
                        reported_down = True
                        logger.warning(
                            "%s: connection lost (%s); reconnecting", self._name, describe(exc)
                        )
                    finally:
                        self._set_connected(False)
                await self._disconnect()
                self._attempted.set()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)
        finally:
            self._set_connected(False)
            await self._disconnect()

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if self.metrics is not None:
            self.metrics.broker_connected.set(1 if connected else 0)

    async def _run_connected(self, resend_after: float) -> None:
        tasks = {
            asyncio.create_task(self._listen(), name=f"{self._name} listener"),
            asyncio.create_task(self._send_loop(resend_after), name=f"{self._name} sender"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # re-raises the failure
        raise ConnectionError("listener stopped")

    async def _send_loop(self, resend_after: float) -> None:
        if resend_after and self._outgoing:
            await asyncio.sleep(resend_after)  # see resend_delay in __init__
        outgoing = self._outgoing
        while True:
            while not outgoing:
                self._wakeup.clear()
                await self._wakeup.wait()
            count = min(len(outgoing), self.batch_max)
            batch = [(channel, self.node + data) for channel, data in islice(outgoing, count)]
            await self._send(batch)  # on failure the batch stays queued, to be resent
            for _ in range(count):
                _, payload = outgoing.popleft()
                self._outgoing_bytes -= len(payload)
            self.stats.published += count
            if self._dropping and len(outgoing) < self.buffer_messages // 2:
                self._dropping = False
                logger.warning("%s: outbound buffer drained; publishing again", self._name)


def describe(exc: BaseException) -> str:
    """``exc`` in one line for a log: its type, and its message if it has one."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
