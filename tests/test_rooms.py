"""rooms.py without sockets: ordering, duplicates, gap filling and the resume boundary."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from hubbub import protocol
from hubbub.outgoing import OutFrame
from hubbub.protocol import Message
from hubbub.rooms import RoomFeed


def msg(seq: int, room: str = "r") -> Message:
    return Message(room=room, seq=seq, sender="s", text=f"t{seq}", ts="2026-01-01T00:00:00.000Z")


class ListStore:
    """The store's read contract over a list; reads can be held to widen race windows."""

    def __init__(self, upto: int = 0) -> None:
        self.messages = [msg(i) for i in range(1, upto + 1)]
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0

    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[Message]:
        self.reads += 1
        await self.gate.wait()
        low, high = after or 0, before or 2**63
        rows = [m for m in self.messages if low < m.seq < high]
        return rows[-limit:] if before is not None and after is None else rows[:limit]


class Sink:
    """A connection stand-in recording the seq of every message frame."""

    closing = False
    crowded = False  # reads as fast as anything is sent

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def send(self, frame: OutFrame) -> None:
        self.seqs.append(protocol.decode_room_frame(frame.payload).seq)

    async def wait_for_room(self) -> None:
        pass


class Feed:
    def __init__(self, store: ListStore, delivered: int) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.feed = RoomFeed("r", store, delivered, self.spawn)  # type: ignore[arg-type]

    def spawn(self, work: Awaitable[None]) -> None:
        self.tasks.append(asyncio.ensure_future(work))  # type: ignore[arg-type]

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.wait_for(self.tasks.pop(0), 5)


async def test_in_order_messages_go_straight_through_once() -> None:
    store = ListStore()
    f = Feed(store, 0)
    sink = Sink()
    f.feed.add(sink, "u", "a", 0, catching_up=False)  # type: ignore[arg-type]
    for seq in (1, 2, 2, 3, 1, 3):
        f.feed.on_message(msg(seq))
    assert sink.seqs == [1, 2, 3]
    assert store.reads == 0 and f.tasks == []


async def test_a_gap_is_filled_from_the_store_before_going_on() -> None:
    store = ListStore(upto=6)
    f = Feed(store, 0)
    sink = Sink()
    f.feed.add(sink, "u", "a", 0, catching_up=False)  # type: ignore[arg-type]
    f.feed.on_message(msg(1))
    f.feed.on_message(msg(4))  # 2 and 3 went missing
    f.feed.on_message(msg(5))
    assert sink.seqs == [1]
    await f.settle()
    assert sink.seqs == [1, 2, 3, 4, 5]
    f.feed.on_message(msg(3))  # late duplicates are dropped
    f.feed.on_message(msg(6))
    assert sink.seqs == [1, 2, 3, 4, 5, 6]


async def test_messages_arriving_during_a_fill_wait_their_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ListStore(upto=8)
    store.gate.clear()
    f = Feed(store, 0)
    sink = Sink()
    f.feed.add(sink, "u", "a", 0, catching_up=False)  # type: ignore[arg-type]
    f.feed.on_message(msg(3))
    await asyncio.sleep(0)  # the fill is now waiting on the store
    for seq in (7, 1, 5, 8):  # 1 and 5 come from the store first: stale when released
        f.feed.on_message(msg(seq))
    store.gate.set()
    await f.settle()
    assert sink.seqs == list(range(1, 9))
    assert f.feed.delivered == 8
    assert "no longer stored" not in caplog.text  # never skipped, never went backwards


async def test_resync_reads_everything_missed() -> None:
    store = ListStore(upto=5)
    f = Feed(store, 2)
    sink = Sink()
    f.feed.add(sink, "u", "a", 2, catching_up=False)  # type: ignore[arg-type]
    f.feed.resync()
    await f.settle()
    assert sink.seqs == [3, 4, 5]


async def test_catch_up_has_no_gap_and_no_duplicate_at_the_boundary() -> None:
    store = ListStore(upto=450)  # more than two backlog pages
    f = Feed(store, 450)
    live = Sink()
    f.feed.add(live, "u1", "live", 450, catching_up=False)  # type: ignore[arg-type]
    resumer = Sink()
    member = f.feed.add(resumer, "u2", "r", 10, catching_up=True)  # type: ignore[arg-type]
    store.gate.clear()
    catching = asyncio.ensure_future(f.feed.catch_up(member))
    await asyncio.sleep(0)
    # Live traffic while the backlog read is in flight, some of it also in the store.
    for seq in range(451, 461):
        store.messages.append(msg(seq))
        f.feed.on_message(msg(seq))
    store.gate.set()
    await asyncio.wait_for(catching, 5)
    assert resumer.seqs == list(range(11, 461))
    assert live.seqs == list(range(451, 461))
    f.feed.on_message(msg(461))
    assert resumer.seqs[-1] == 461


async def test_messages_removed_by_retention_are_skipped_not_waited_for() -> None:
    store = ListStore(upto=10)
    store.messages = store.messages[5:]  # 1..5 pruned
    f = Feed(store, 0)
    sink = Sink()
    f.feed.add(sink, "u", "a", 0, catching_up=False)  # type: ignore[arg-type]
    f.feed.on_message(msg(8))
    await f.settle()
    assert sink.seqs == [6, 7, 8]
