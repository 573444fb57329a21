"""A store that measures another: every operation's duration goes to the metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from hubbub.metrics import Metrics
from hubbub.protocol import Message, Moderation, Person, RoomEvent, RoomSummary
from hubbub.stores.base import AlreadySent, OutboxEvent, RoomSettings, Store
from hubbub.stores.chat import Membership, MessageChange, ModerationChange

T = TypeVar("T")

OPS = (
    "append",
    "change",
    "moderate",
    "read",
    "last_seq",
    "rooms",
    "join_member",
    "forget_member",
    "membership",
    "standings",
    "mark_read",
    "user_rooms",
    "open_dm",
    "room_settings",
    "set_receipts",
    "enqueue",
    "outbox_lease",
    "outbox_batch",
    "outbox_done",
    "outbox_depth",
)


class TimedStore(Store):
    """Wraps ``inner``; observes ``hubbub_store_operation_seconds{op=...}`` per call."""

    def __init__(self, inner: Store, metrics: Metrics) -> None:
        self.inner = inner  # first: the base's __init__ sets webhook_targets, on it
        super().__init__(inner.url, inner.retention)
        seconds = metrics.store_seconds
        self._seconds = {op: seconds.labels(op=op) for op in OPS}

    async def _timed(self, op: str, call: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await call
        finally:
            self._seconds[op].observe(time.perf_counter() - start)

    async def start(self) -> None:
        await self.inner.start()
        self._deployment = self.inner.deployment

    async def stop(self) -> None:
        await self.inner.stop()

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
        return await self._timed(
            "append",
            self.inner.append(
                room, sender, text, ts, user=user, reply_to=reply_to, data=data, send_id=send_id
            ),
        )

    async def sent_before(self, room: str, user: str | None, send_id: str) -> AlreadySent | None:
        return await self._timed("append", self.inner.sent_before(room, user, send_id))

    async def change(self, room: str, change: MessageChange, ts: str) -> RoomEvent | None:
        return await self._timed("change", self.inner.change(room, change, ts))

    async def moderate(self, room: str, change: ModerationChange, ts: str) -> Moderation:
        return await self._timed("moderate", self.inner.moderate(room, change, ts))

    async def read(
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        messages_only: bool = False,
    ) -> list[RoomEvent]:
        return await self._timed(
            "read",
            self.inner.read(
                room, after=after, before=before, limit=limit, messages_only=messages_only
            ),
        )

    async def last_seq(self, room: str) -> int:
        return await self._timed("last_seq", self.inner.last_seq(room))

    async def rooms(self) -> list[tuple[str, int]]:
        return await self._timed("rooms", self.inner.rooms())

    async def join_member(self, room: str, user: str, name: str) -> tuple[Membership, bool]:
        return await self._timed("join_member", self.inner.join_member(room, user, name))

    async def forget_member(self, room: str, user: str) -> None:
        await self._timed("forget_member", self.inner.forget_member(room, user))

    async def membership(self, room: str, user: str) -> Membership | None:
        return await self._timed("membership", self.inner.membership(room, user))

    async def standings(self, room: str) -> dict[str, Membership]:
        return await self._timed("standings", self.inner.standings(room))

    async def mark_read(self, room: str, user: str, seq: int) -> tuple[int, int]:
        return await self._timed("mark_read", self.inner.mark_read(room, user, seq))

    async def user_rooms(self, user: str) -> list[RoomSummary]:
        return await self._timed("user_rooms", self.inner.user_rooms(user))

    async def open_dm(self, people: list[Person]) -> str:
        return await self._timed("open_dm", self.inner.open_dm(people))

    async def room_settings(self, room: str) -> RoomSettings:
        return await self._timed("room_settings", self.inner.room_settings(room))

    async def set_receipts(self, room: str, on: bool) -> None:
        await self._timed("set_receipts", self.inner.set_receipts(room, on))

    @property
    def webhook_targets(self) -> tuple[str, ...]:
        return self.inner.webhook_targets

    @webhook_targets.setter
    def webhook_targets(self, targets: tuple[str, ...]) -> None:
        self.inner.webhook_targets = targets

    async def enqueue(self, room: str, body: bytes) -> None:
        await self._timed("enqueue", self.inner.enqueue(room, body))

    async def outbox_lease(self, target: str, owner: str, seconds: float) -> bool:
        return await self._timed("outbox_lease", self.inner.outbox_lease(target, owner, seconds))

    async def outbox_batch(self, target: str, limit: int) -> list[OutboxEvent]:
        return await self._timed("outbox_batch", self.inner.outbox_batch(target, limit))

    async def outbox_done(self, target: str, number: int) -> None:
        await self._timed("outbox_done", self.inner.outbox_done(target, number))

    async def outbox_depth(self, target: str) -> tuple[int, str | None]:
        return await self._timed("outbox_depth", self.inner.outbox_depth(target))
