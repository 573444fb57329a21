"""What a store is: the history of every room, and the sequence numbers that order it."""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from hubbub.protocol import Message, Moderation, Person, RoomEvent, RoomSummary
from hubbub.stores.chat import Membership, MessageChange, ModerationChange


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
class RoomSettings:
    """How a room behaves: ``dm``, the users of a direct-message room (None for any
    other room); ``receipts``: read receipts are passed to the other members."""

    dm: tuple[Person, ...] | None = None
    receipts: bool = False


SEND_ID_SECONDS = 24 * 3600  # a send's id is kept at least this long


class AlreadySent(Exception):  # not an error: the answer to a repeat
    """``append`` with a ``send_id`` the store keeps: the message first stored with it."""

    def __init__(self, seq: int, ts: str) -> None:
        super().__init__(seq, ts)
        self.seq = seq
        self.ts = ts


@dataclass(frozen=True)
class OutboxEvent:
    """One event waiting in a webhook target's outbox."""

    number: int  # its place in the outbox: unique, never reused
    body: bytes  # a JSON object without its id
    created: str  # when it was written (ISO 8601 UTC)


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
    - Every event of a room (a message, an edit, a delete, a reaction, a moderation
      action) takes the room's next ``seq``, and ``read`` returns them all; a message
      is kept in its current state (``docs/protocol.md``, "Chat"). ``change`` and
      ``moderate`` decide with :mod:`hubbub.stores.chat` on rows read inside the write
      transaction, so two processes never change one message at once; a delete also
      erases the text of the message's edits.
    - Membership (:class:`~hubbub.stores.chat.Membership`) is kept per room and user:
      made by ``join_member``, changed by moderation and ``mark_read``.
    """

    def __init__(self, url: str, retention: Retention | None = None) -> None:
        self.url = url
        self.retention = retention or Retention()
        self._deployment: Deployment | None = None
        # Webhook URLs: each room-log event is written to each one's outbox in the
        # transaction that stores it (none: nothing is written).
        self.webhook_targets: tuple[str, ...] = ()

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
    async def append(
        self,
        room: str,
        sender: str,
        text: str,
        ts: str,
        *,
        user: str | None = None,
        reply_to: int | None = None,
        data: dict[str, Any] | None = None,
        send_id: str | None = None,
    ) -> Message:
        """Store one message; returns it with its ``seq``. A ``reply_to`` that names no
        message of the room raises ``ProtocolError(no_such_message)`` and stores nothing.

        With ``send_id``, the message is stored once per ``(room, user or "", send_id)``
        for at least :data:`SEND_ID_SECONDS`: if that key is kept already, nothing is
        stored and :class:`AlreadySent` (the first message's ``seq`` and ``ts``) is
        raised, atomically with the check (two processes storing the same key at once
        store it once)."""

    @abstractmethod
    async def sent_before(self, room: str, user: str | None, send_id: str) -> AlreadySent | None:
        """The message stored with this ``send_id`` (as ``append`` keys it), if any."""

    @abstractmethod
    async def change(self, room: str, change: MessageChange, ts: str) -> RoomEvent | None:
        """Edit, delete or react to a message (:func:`hubbub.stores.chat.change_message`
        decides): the event stored, with its ``seq``; None if nothing changed."""

    @abstractmethod
    async def moderate(self, room: str, change: ModerationChange, ts: str) -> Moderation:
        """Change a member's standing (:func:`hubbub.stores.chat.moderate` decides) and
        store the event, in one transaction."""

    @abstractmethod
    async def read(
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        messages_only: bool = False,
    ) -> list[RoomEvent]:
        """Events of ``room`` with ``after < seq < before``, ascending (with
        ``messages_only``, only its messages, each in its current state).

        With ``after`` (or neither bound) the *first* ``limit`` of them; with only
        ``before``, the *last* ``limit`` of them (paging backwards).
        """

    @abstractmethod
    async def last_seq(self, room: str) -> int:
        """The ``seq`` of the room's newest message; 0 for a room without messages."""

    @abstractmethod
    async def rooms(self) -> list[tuple[str, int]]:
        """Every room with messages, and its last ``seq``."""

    @abstractmethod
    async def join_member(self, room: str, user: str, name: str) -> tuple[Membership, bool]:
        """Make ``user`` a member of ``room`` (or keep it one, under ``name``, and undo a
        ``forget_member`` or a kick, unless it is banned); its standing, and whether
        the room is in its list now and was not before."""

    @abstractmethod
    async def forget_member(self, room: str, user: str) -> None:
        """End the membership: the room leaves the user's list (its standing — a ban, a
        role — is kept)."""

    @abstractmethod
    async def membership(self, room: str, user: str) -> Membership | None:
        """The user's standing in the room; None if it never was a member."""

    @abstractmethod
    async def standings(self, room: str) -> dict[str, Membership]:
        """The members of ``room`` whose standing is not the default one (a role other
        than member, a ban or a mute), by user id."""

    @abstractmethod
    async def mark_read(self, room: str, user: str, seq: int) -> tuple[int, int]:
        """Keep the highest ``seq`` the user has read in the room (at most the room's
        last); ``(that seq, the unread count after it)``, counted as in ``user_rooms``."""

    @abstractmethod
    async def user_rooms(self, user: str) -> list[RoomSummary]:
        """The rooms the user is a member of (not forgotten, not banned), by name, each
        with its last ``seq``, the user's read ``seq``, the number of messages after it
        that are not the user's own and not deleted (at most ``protocol.UNREAD_CAP``),
        the user's role, and for a direct-message room its people."""

    @abstractmethod
    async def open_dm(self, people: list[Person]) -> str:
        """The direct-message room of ``people`` (:func:`hubbub.stores.chat.dm_room` of
        their ids), made once with receipts on, every one of them a member."""

    @abstractmethod
    async def room_settings(self, room: str) -> RoomSettings:
        """How the room behaves (defaults for a room never set up)."""

    @abstractmethod
    async def set_receipts(self, room: str, on: bool) -> None:
        """Turn read receipts on or off for ``room``."""

    # -- the webhooks' outbox (docs/webhooks.md) -----------------------------------

    @abstractmethod
    async def enqueue(self, room: str, body: bytes) -> None:
        """Put an event that no other write carries (``member.joined`` …) into every
        webhook target's outbox."""

    @abstractmethod
    async def outbox_lease(self, target: str, owner: str, seconds: float) -> bool:
        """Take or renew the lease on delivering ``target``'s outbox for ``seconds``;
        False while another owner holds it."""

    @abstractmethod
    async def outbox_batch(self, target: str, limit: int) -> list[OutboxEvent]:
        """The oldest ``limit`` events waiting for ``target``, in order."""

    @abstractmethod
    async def outbox_done(self, target: str, number: int) -> None:
        """``target`` has the event ``number``: it is deleted."""

    @abstractmethod
    async def outbox_depth(self, target: str) -> tuple[int, str | None]:
        """How many events wait for ``target``, and when the oldest was written."""
