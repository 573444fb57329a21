"""What a broker is: fan-out of opaque payloads on named channels to *other* processes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from hubbub.metrics import Metrics

EPOCH_BYTES = 16

Delivery = Callable[[str, bytes], None]
"""Called with ``(channel, payload)`` for every message from another process."""


@dataclass
class BrokerStats:
    """What a broker counted since it started (exposed by ``/readyz`` and metrics)."""

    reconnects: int = 0
    listener_errors: int = 0
    dropped: int = 0  # outage buffer overflow
    published: int = 0
    received: int = 0
    foreign: int = 0  # payloads of another deployment (another epoch), dropped


class Broker(ABC):
    """Moves payloads between the processes (and machines) that share it.

    Contract, for every implementation:

    - The hub delivers a message to its own process's members itself; ``publish``
      carries it to every *other* process subscribed to ``channel`` (never back to
      this one).
    - Payloads from one process arrive everywhere in the order that process published
      them, on each channel.
    - ``publish`` is a plain call that never waits (it queues for a sender task) and
      does not fail while the server is
      unreachable: payloads wait in a bounded buffer and go out in order after
      reconnection; what overflows is counted (``stats.dropped``) and logged.
    - Delivery is at-most-once across an outage of a *subscriber*: a process that is
      disconnected while others publish misses those payloads (the store, not the
      broker, is the source of truth for rooms).
    - ``subscribe``/``unsubscribe`` are called at most once per channel per process
      (the hub counts local members). ``subscribe`` returns once deliveries flow, or at
      once while disconnected (the channel is subscribed on reconnection).
    - A lost connection is retried with exponential backoff and jitter forever; each
      state change is logged once; ``ready`` is False meanwhile.
    - The delivery callback runs on the event loop and must not block.
    - ``stop`` releases every connection and task the broker owns.
    - Deployments that share a broker server do not hear each other on the channels
      bound to their store: a payload carries its deployment's epoch (``set_epoch``)
      and, on such a channel, is delivered only where it matches; what is dropped for
      that is counted (``stats.foreign``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.stats = BrokerStats()
        self._deliver: Delivery | None = None
        self._on_reconnect: Callable[[], None] | None = None
        self.metrics: Metrics | None = None
        self.epoch = b"0" * EPOCH_BYTES  # the deployment's; set before start
        self.epoch_bound: Callable[[str], bool] | None = None

    def set_epoch(self, epoch: str, bound: Callable[[str], bool] | None = None) -> None:
        """Carry ``epoch`` (16 hex digits) in every payload, and deliver payloads of the
        channels that are ``bound`` to it (all without ``bound``) only when they carry
        it: another deployment sharing the broker is not heard there."""
        encoded = epoch.encode("ascii")
        if len(encoded) != EPOCH_BYTES:
            raise ValueError(f"an epoch is {EPOCH_BYTES} characters, not {epoch!r}")
        self.epoch = encoded
        self.epoch_bound = bound

    def set_delivery(self, deliver: Delivery) -> None:
        """Register the one callback that receives every payload (the hub's)."""
        self._deliver = deliver

    def set_on_reconnect(self, callback: Callable[[], None]) -> None:
        """Register what to call after a reconnection has re-subscribed every channel
        (the hub re-reads its rooms from the store: what was missed meanwhile is there)."""
        self._on_reconnect = callback

    def set_metrics(self, metrics: Metrics) -> None:
        """Report the connection state, reconnections and drops to ``metrics`` from now on."""
        self.metrics = metrics
        metrics.broker_connected.set(1 if self.ready else 0)

    @property
    def shared_across_processes(self) -> bool:
        """Whether separate processes using this URL reach each other."""
        return True

    @property
    def ready(self) -> bool:
        """Whether the broker is connected now."""
        return True

    @abstractmethod
    async def start(self) -> None:
        """Begin connecting; returns once connected or after a first failed attempt."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect and release everything; idempotent."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel`` from other processes."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""

    @abstractmethod
    def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every other process subscribed to ``channel``; never waits."""
