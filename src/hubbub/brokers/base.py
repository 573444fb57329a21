"""What a broker is: cross-process fan-out of opaque payloads on named channels."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

Delivery = Callable[[str, bytes], None]
"""Called with ``(channel, payload)`` for every message on a subscribed channel."""


class Broker(ABC):
    """Moves payloads between the processes (and machines) that share it.

    Contract, for every implementation:

    - ``publish`` delivers ``payload`` once to every process subscribed to ``channel``
      at the time the broker handles it, this process included.
    - Payloads from one publisher on one channel arrive in the order they were published.
    - Delivery is at-most-once: a process that is disconnected while a payload is
      published may miss it (the store, not the broker, is the source of truth).
    - ``subscribe`` and ``unsubscribe`` are called by the hub at most once per channel
      per process (the hub counts local members); they are idempotent anyway.
    - The delivery callback runs on the event loop and must not block; a broker never
      awaits a client.
    - ``stop`` releases every connection and task the broker owns.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._deliver: Delivery | None = None

    def set_delivery(self, deliver: Delivery) -> None:
        """Register the one callback that receives every payload (the hub's)."""
        self._deliver = deliver

    @property
    def shared_across_processes(self) -> bool:
        """Whether separate processes using this URL reach each other."""
        return True

    @property
    def ready(self) -> bool:
        """Whether the broker is connected and can publish now."""
        return True

    @abstractmethod
    async def start(self) -> None:
        """Connect. Raises ``BrokerUnavailable`` if the server cannot be reached."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect and release everything; idempotent."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``; returns once deliveries are flowing."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""

    @abstractmethod
    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every subscriber of ``channel``."""
