"""The hub: this process's connections, who listens to which channel, and fan-out.

Publishing goes to the broker; the broker's deliveries come back here, are encoded
once, and are put into each local member's outbox without awaiting any client.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket

from hubbub.brokers.base import Broker
from hubbub.config import Settings
from hubbub.connection import Connection
from hubbub.errors import CloseCode
from hubbub.frames import OutFrame

logger = logging.getLogger("hubbub.hub")


@dataclass
class HubStats:
    """Counters of what happened on this process since it started."""

    connections_opened: int = 0
    connections_refused: int = 0
    slow_consumers: int = 0
    published: int = 0
    delivered: int = 0


class Hub:
    """Local connections and channel membership; the only place fan-out happens."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.stats = HubStats()
        self.connections: set[Connection] = set()
        self._members: dict[str, set[Connection]] = {}
        # One broker subscription per channel, shared by concurrent first joiners.
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._shutting_down = False
        broker.set_delivery(self._deliver)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Connect the broker."""
        await self.broker.start()

    async def stop(self) -> None:
        """Disconnect the broker; connections are closed by the server before this."""
        self._shutting_down = True
        await self.broker.stop()

    def begin_shutdown(self) -> None:
        """Stop being ready: new connections are refused from now on."""
        self._shutting_down = True

    @property
    def ready(self) -> bool:
        """Whether this process can serve: broker reachable and not shutting down."""
        return not self._shutting_down and self.broker.ready

    # -- connections -----------------------------------------------------------

    async def connect(self, websocket: WebSocket) -> Connection | None:
        """Accept ``websocket`` as a connection, or refuse it (1013) past the limit."""
        connection = Connection(websocket, self.settings, self._on_slow_consumer)
        await connection.accept()
        if self._shutting_down or len(self.connections) >= self.settings.max_connections:
            self.stats.connections_refused += 1
            connection.close(CloseCode.TRY_AGAIN_LATER, "server busy, try again later")
            async for _ in connection.texts():
                pass
            await connection.finish()
            return None
        self.connections.add(connection)
        self.stats.connections_opened += 1
        return connection

    async def disconnect(self, connection: Connection) -> None:
        """Forget ``connection`` everywhere and release it."""
        self.connections.discard(connection)
        for channel in [c for c, members in self._members.items() if connection in members]:
            await self.leave(channel, connection)
        await connection.finish()

    def _on_slow_consumer(self, connection: Connection) -> None:
        self.stats.slow_consumers += 1
        frames, size = connection.queued
        client = connection.websocket.client
        logger.warning(
            "closing slow consumer %s:%s (%d frames, %d bytes queued)",
            client.host if client else "?",
            client.port if client else "?",
            frames,
            size,
        )

    # -- channels --------------------------------------------------------------

    async def join(self, channel: str, connection: Connection) -> None:
        """Make ``connection`` a member of ``channel``; subscribes the broker on first use."""
        members = self._members.get(channel)
        if members is None:
            members = self._members[channel] = set()
        members.add(connection)
        pending = self._subscribing.get(channel)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._subscribing[channel] = pending
            try:
                await self.broker.subscribe(channel)
            except BaseException as exc:
                del self._subscribing[channel]
                pending.set_exception(exc)
                pending.exception()  # retrieved: the joiners below re-raise it themselves
                members.discard(connection)
                raise
            pending.set_result(None)
        else:
            await asyncio.shield(pending)

    async def leave(self, channel: str, connection: Connection) -> None:
        """Remove ``connection`` from ``channel``; unsubscribes the broker when empty."""
        members = self._members.get(channel)
        if members is None:
            return
        members.discard(connection)
        if not members:
            del self._members[channel]
            pending = self._subscribing.pop(channel, None)
            if pending is not None and pending.done():
                await self.broker.unsubscribe(channel)

    async def publish(self, channel: str, text: str) -> None:
        """Send ``text`` to every member of ``channel`` on every process.

        Members on this process get it at once, whatever the broker's state; the broker
        carries it to the other processes.
        """
        self.stats.published += 1
        payload = text.encode()
        self._deliver(channel, payload)
        await self.broker.publish(channel, payload)

    def _deliver(self, channel: str, payload: bytes) -> None:
        members = self._members.get(channel)
        if not members:
            return
        frame = OutFrame(payload)
        # Connection.send never changes membership, so the set is safe to iterate.
        for connection in members:
            connection.send(frame)
        self.stats.delivered += len(members)
