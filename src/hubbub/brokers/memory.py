"""The embedded broker: nothing to install, and nothing beyond this process."""

from __future__ import annotations

from typing import Any

from hubbub.brokers.base import Broker


class MemoryBus:
    """Connects the memory brokers that share it (several hubs inside one process)."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryBroker]] = {}


class MemoryBroker(Broker):
    """Delivers synchronously to the other brokers on its bus; by default it has its own
    bus, so a lone hub's publishes reach nobody else (it delivers locally by itself)."""

    def __init__(self, url: str = "memory://", bus: MemoryBus | None = None, **_: Any) -> None:
        super().__init__(url)
        self.bus = bus or MemoryBus()

    @property
    def shared_across_processes(self) -> bool:
        return False

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        for members in self.bus.subscribers.values():
            members.discard(self)

    async def subscribe(self, channel: str) -> None:
        self.bus.subscribers.setdefault(channel, set()).add(self)

    async def unsubscribe(self, channel: str) -> None:
        members = self.bus.subscribers.get(channel)
        if members is not None:
            members.discard(self)
            if not members:
                del self.bus.subscribers[channel]

    def publish(self, channel: str, payload: bytes) -> None:
        self.stats.published += 1
        for broker in self.bus.subscribers.get(channel, ()):
            if broker is not self and broker._deliver is not None:
                broker.stats.received += 1
                broker._deliver(channel, payload)
