"""What a store is: the history of every room, and the sequence numbers that order it."""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

from hubbub.protocol import Message


def read_window(after: int | None, before: int | None) -> tuple[int, int, bool]:
    """``Store.read``'s bounds as ``(low, high, backwards)``: ``low < seq < high``, and
    whether the *last* rows below ``high`` are wanted (only ``before`` given)."""
    low = after if after is not None else 0
    high = before if before is not None else 2**63 - 1
    return low, high, before is not None and after is None


@dataclass(frozen=True)
class Deployment:
    """What every process sharing a store shares: made once, with the schema."""

    epoch: str
    """16 hex digits naming this history; a new store is a new epoch (``seq`` restarts)."""
    secret: str
    """Signs guest tokens, so that every process of the deployment can verify them."""

    @classmethod
    def new(cls) -> Deployment:
        """A fresh identity, for a store that has none yet."""
        return cls(epoch=secrets.token_hex(8), secret=secrets.token_hex(32))


@dataclass(frozen=True)
class Retention:
    """How much history a store keeps; 0 means no limit."""

    max_messages: int = 0  # per room
    max_age_seconds: float = 0.0


class Store(ABC):
    """Keeps every room's messages, each with the room's next sequence number.

    Contract, for every implementation:

    - ``append`` gives the message ``seq = previous seq of the room + 1`` (the first is
      1), atomically, even when many processes and machines append to the same room at
      once: no two messages share a ``seq`` and none is skipped.
    - When ``append`` returns, the message is durable and readable by every process;
      appends of one room become readable in ``seq`` order, so once ``seq`` N is
      readable every smaller ``seq`` is too (a gap seen by a node can always be filled).
    - ``read`` returns messages in ascending ``seq``.
    - Retention deletes the oldest messages of a room; it never renumbers.
    - ``start`` makes the store's :class:`Deployment` the first time (in the same
      transaction as the schema, so concurrent first starts agree on one) and reads it
      every time after: every process on the store sees the same one.
    - A store made by an earlier version is upgraded in place by ``start``, keeping
      every message.
    """

    def __init__(self, url: str, retention: Retention | None = None) -> None:
        self.url = url
        self.retention = retention or Retention()
        self._deployment: Deployment | None = None

    @property
    def deployment(self) -> Deployment:
        """The deployment this store belongs to; known once started."""
        assert self._deployment is not None, "store not started"
        return self._deployment

    @abstractmethod
    async def start(self) -> None:
        """Connect, and create or migrate the schema."""

    @abstractmethod
    async def stop(self) -> None:
        """Release every connection and thread; idempotent."""

    @abstractmethod
    async def append(self, room: str, sender: str, text: str, ts: str) -> Message:
        """Store one message; returns it with its ``seq``."""

    @abstractmethod
    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[Message]:
        """Messages of ``room`` with ``after < seq < before``, ascending.

        With ``after`` (or neither bound) the *first* ``limit`` of them; with only
        ``before``, the *last* ``limit`` of them (paging backwards).
        """

    @abstractmethod
    async def last_seq(self, room: str) -> int:
        """The ``seq`` of the room's newest message; 0 for a room without messages."""

    @abstractmethod
    async def rooms(self) -> list[tuple[str, int]]:
        """Every room with messages, and its last ``seq``."""
