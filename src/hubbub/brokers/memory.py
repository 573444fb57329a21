"""The embedded broker: fan-out inside this one process, nothing to install."""

from __future__ import annotations

from hubbub.brokers.base import Broker


class MemoryBroker(Broker):
    """Delivers synchronously to this process; reaches no other process."""

    def __init__(self, url: str = "memory://") -> None:
        super().__init__(url)
        self._channels: set[str] = set()

    @property
    def shared_across_processes(self) -> bool:
        return False

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, payload: bytes) -> None:
        if channel in self._channels and self._deliver is not None:
            self._deliver(channel, payload)
