"""Redis pub/sub (``redis://``, ``rediss://``) through ``redis.asyncio``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from hubbub.brokers.remote import RemoteBroker

PREFIX = "hubbub:"


class RedisBroker(RemoteBroker):
    """One pub/sub connection for every channel of this process, one for publishing.

    The pub/sub connection always holds a subscription to this node's own control
    channel, so that its listener has something to listen to before any room exists.
    """

    subscribe_timeout = 10.0  # a server that does not confirm a SUBSCRIBE is lost

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._confirmations: dict[str, asyncio.Future[None]] = {}

    async def _connect(self) -> None:
        self._client = Redis.from_url(
            self.url, socket_connect_timeout=5, socket_keepalive=True, health_check_interval=15
        )
        await self._client.ping()
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(PREFIX + "node:" + self.node.decode())

    async def _disconnect(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        for future in self._confirmations.values():
            future.cancel()
        self._confirmations.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _subscribe_remote(self, channel: str) -> None:
        assert self._pubsub is not None
        name = PREFIX + channel
        confirmed = self._confirmations.get(name)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[name] = confirmed
        await self._pubsub.subscribe(name)
        if not self._connected:
            # The supervisor is (re)subscribing and no listener reads yet: read up to the
            # confirmation here, so that every subscription is live before the hub
            # re-reads its rooms from the store (and before a reconnection is reported).
            async with asyncio.timeout(self.subscribe_timeout):
                while not confirmed.done():
                    self._handle(await self._pubsub.get_message(timeout=None))
        else:  # the listener reads the confirmation
            try:
                await asyncio.shield(confirmed)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are cancelled ourselves
                # _disconnect gave up on the confirmation: the connection was lost, and
                # the supervisor subscribes again once it is back.
                raise ConnectionError(f"connection lost while subscribing to {name}") from None

    async def _unsubscribe_remote(self, channel: str) -> None:
        assert self._pubsub is not None
        await self._pubsub.unsubscribe(PREFIX + channel)

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        assert self._client is not None
        async with self._client.pipeline(transaction=False) as pipe:
            for channel, data in batch:
                pipe.publish(PREFIX + channel, data)
            await pipe.execute()

    async def _listen(self) -> None:
        assert self._pubsub is not None
        async for message in self._pubsub.listen():
            self._handle(message)
        raise ConnectionError("pub/sub stream ended")

    def _handle(self, message: dict[str, Any] | None) -> None:
        # One pub/sub message: a delivery, or the confirmation of a subscription.
        if message is None:
            return
        kind = message["type"]
        if kind == "message":
            name = message["channel"].decode()
            if name.startswith(PREFIX):
                self._received(name[len(PREFIX) :], message["data"])
        elif kind == "subscribe":
            confirmed = self._confirmations.pop(message["channel"].decode(), None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
