"""The contract of ``stores/base.py``, for SQLite and PostgreSQL on real databases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hubbub.protocol import timestamp
from hubbub.stores import Retention, Store

OpenStore = Callable[..., Awaitable[Store]]


async def test_append_numbers_each_room_from_one(open_store: OpenStore) -> None:
    store = await open_store()
    ts = timestamp()
    first = await store.append("a", "alice", "one", ts)
    assert (first.room, first.seq, first.sender, first.text, first.ts) == (
        "a",
        1,
        "alice",
        "one",
        ts,
    )
    assert (await store.append("a", "bob", "two", ts)).seq == 2
    assert (await store.append("b", "bob", "other room", ts)).seq == 1
    assert await store.last_seq("a") == 2
    assert await store.last_seq("never") == 0
    assert await store.rooms() == [("a", 2), ("b", 1)]


async def test_read_after_before_and_limit(open_store: OpenStore) -> None:
    store = await open_store()
    for i in range(1, 11):
        await store.append("r", "u", f"m{i}", timestamp())

    def seqs(messages: list) -> list[int]:  # type: ignore[type-arg]
        return [m.seq for m in messages]

    assert seqs(await store.read("r")) == list(range(1, 11))
    assert seqs(await store.read("r", after=7)) == [8, 9, 10]
    assert seqs(await store.read("r", after=2, limit=3)) == [3, 4, 5]
    assert seqs(await store.read("r", before=4)) == [1, 2, 3]
    assert seqs(await store.read("r", before=9, limit=3)) == [6, 7, 8]  # the last 3 before 9
    assert seqs(await store.read("r", after=3, before=6)) == [4, 5]
    assert seqs(await store.read("r", after=10)) == []
    assert seqs(await store.read("nothing")) == []
    message = (await store.read("r", after=4, limit=1))[0]
    assert (message.text, message.sender) == ("m5", "u")


async def test_text_round_trips_exactly(open_store: OpenStore) -> None:
    store = await open_store()
    texts = ["", "émoji 🎉", "'; DROP TABLE messages; --", "x" * 100_000, "line\nbreak\ttab"]
    for text in texts:
        await store.append("t", "u", text, timestamp())
    assert [m.text for m in await store.read("t", limit=10)] == texts


async def test_concurrent_appenders_on_several_stores_get_every_seq_once(
    open_store: OpenStore,
) -> None:
    stores = [await open_store() for _ in range(4)]  # four "processes"

    async def writer(store: Store, n: int) -> list[int]:
        return [
            (await store.append("hot", f"w{n}", f"{n}-{i}", timestamp())).seq for i in range(50)
        ]

    results = await asyncio.gather(*(writer(s, n) for n, s in enumerate(stores) for _ in range(2)))
    seqs = sorted(seq for result in results for seq in result)
    assert seqs == list(range(1, 401))  # no gap, no duplicate
    for result in results:
        assert result == sorted(result)  # one writer's messages keep its order
    stored = await stores[0].read("hot", limit=1000)
    assert [m.seq for m in stored] == list(range(1, 401))


async def test_retention_by_count_keeps_the_newest(open_store: OpenStore) -> None:
    store = await open_store(Retention(max_messages=30))
    for i in range(1, 201):
        await store.append("r", "u", str(i), timestamp())
    kept = await store.read("r", limit=1000)
    assert kept[-1].seq == 200
    assert 30 <= len(kept) < 30 + 100  # pruned every 100 appends, never renumbered
    assert [m.seq for m in kept] == list(range(201 - len(kept), 201))
    assert (await store.append("r", "u", "next", timestamp())).seq == 201


async def test_schema_is_created_once_and_reopened(open_store: OpenStore) -> None:
    first = await open_store()
    await first.append("r", "u", "kept", timestamp())
    await first.stop()
    again = await open_store()
    assert [m.text for m in await again.read("r")] == ["kept"]
    await first.stop()  # idempotent


async def test_retention_by_age_drops_old_messages(open_store: OpenStore) -> None:
    store = await open_store(Retention(max_age_seconds=3600))
    for i in range(1, 100):
        await store.append("r", "u", f"old {i}", "2020-01-01T00:00:00.000Z")
    await store.append("r", "u", "new", timestamp())  # seq 100: a retention pass runs
    kept = await store.read("r", limit=1000)
    assert [(m.seq, m.text) for m in kept] == [(100, "new")]
    assert await store.last_seq("r") == 100


async def test_every_store_on_one_database_shares_one_deployment(open_store: OpenStore) -> None:
    first = await open_store()
    second = await open_store()
    assert first.deployment == second.deployment
    assert len(first.deployment.epoch) == 16 and len(first.deployment.secret) == 64
    int(first.deployment.epoch, 16)
