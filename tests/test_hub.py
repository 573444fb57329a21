"""hub.py with a controllable broker: one subscription per channel, encode once, leave."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub.brokers.memory import MemoryBroker
from hubbub.config import Settings
from hubbub.hub import Hub
from hubbub.stores import store_from_url
from tests.spies import SpyConnection


class GatedBroker(MemoryBroker):
    """A memory broker whose subscribe waits for a gate and counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.subscribes: list[str] = []
        self.unsubscribes: list[str] = []
        self.fail_with: Exception | None = None

    async def subscribe(self, channel: str) -> None:
        self.subscribes.append(channel)
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        await super().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.unsubscribes.append(channel)
        await super().unsubscribe(channel)


@pytest.fixture
def broker() -> GatedBroker:
    return GatedBroker()


@pytest.fixture
def hub(broker: GatedBroker, tmp_path: Path) -> Hub:
    # Plain channels never touch the store: it is not even started.
    return Hub(Settings(), broker, store_from_url(f"sqlite:///{tmp_path}/unused.db"))


async def test_concurrent_first_joiners_share_one_subscription(
    hub: Hub, broker: GatedBroker
) -> None:
    members = [SpyConnection() for _ in range(50)]
    joins = [asyncio.create_task(hub.join("room", m)) for m in members]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    broker.gate.set()
    await asyncio.wait_for(asyncio.gather(*joins), 5)
    assert broker.subscribes == ["room"]
    hub.publish("room", "hi")
    assert all(len(m.frames) == 1 for m in members)


async def test_a_broadcast_is_encoded_once(hub: Hub, broker: GatedBroker) -> None:
    broker.gate.set()
    members = [SpyConnection() for _ in range(3)]
    for m in members:
        await hub.join("room", m)  # type: ignore[arg-type]
    hub.publish("room", "once")
    frames = {id(m.frames[0]) for m in members}
    assert len(frames) == 1
    assert members[0].frames[0].payload == b"once"


async def test_last_leave_unsubscribes_and_stops_delivery(hub: Hub, broker: GatedBroker) -> None:
    broker.gate.set()
    a, b = SpyConnection(), SpyConnection()
    await hub.join("room", a)  # type: ignore[arg-type]
    await hub.join("room", b)  # type: ignore[arg-type]
    await hub.leave("room", a)  # type: ignore[arg-type]
    assert broker.unsubscribes == []
    hub.publish("room", "to b")
    assert (len(a.frames), len(b.frames)) == (0, 1)
    await hub.disconnect(b)  # type: ignore[arg-type]
    assert broker.unsubscribes == ["room"]
    hub.publish("room", "nobody")
    assert len(b.frames) == 1


async def test_failed_subscribe_reaches_every_waiting_joiner(hub: Hub, broker: GatedBroker) -> None:
    broker.fail_with = ConnectionError("broker down")
    first, second = SpyConnection(), SpyConnection()
    joins = [
        asyncio.create_task(hub.join("room", first)),  # type: ignore[arg-type]
        asyncio.create_task(hub.join("room", second)),  # type: ignore[arg-type]
    ]
    await asyncio.sleep(0)
    broker.gate.set()
    results = await asyncio.gather(*joins, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    # A later join tries again.
    broker.fail_with = None
    await hub.join("room", first)  # type: ignore[arg-type]
    assert broker.subscribes == ["room", "room"]


async def test_other_channels_are_untouched(hub: Hub, broker: GatedBroker) -> None:
    broker.gate.set()
    a, b = SpyConnection(), SpyConnection()
    await hub.join("one", a)  # type: ignore[arg-type]
    await hub.join("two", b)  # type: ignore[arg-type]
    hub.publish("one", "x")
    assert (len(a.frames), len(b.frames)) == (1, 0)


async def test_stop_lets_connection_workers_finish_before_the_broker_stops(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    hub = Hub(Settings(), broker, store_from_url(f"sqlite:///{tmp_path}/h.db"))
    await hub.start()
    stopped: list[str] = []
    original_stop = broker.stop

    async def stop() -> None:
        stopped.append("broker")
        await original_stop()

    broker.stop = stop  # type: ignore[method-assign]

    async def finishing_connection() -> None:  # e.g. leaving its rooms after SIGTERM
        for _ in range(5):
            await asyncio.sleep(0)
        stopped.append("worker done")

    worker = asyncio.get_running_loop().create_task(finishing_connection())
    hub._workers.add(worker)
    worker.add_done_callback(hub._workers.discard)
    await hub.stop()
    assert stopped == ["worker done", "broker"]


async def test_a_join_survives_the_room_closing_under_it(tmp_path: Path) -> None:
    # The room's last member leaves while a new member's join is reading the store:
    # the join opens the room again instead of failing.
    from hubbub.auth import Identity

    store = store_from_url(f"sqlite:///{tmp_path}/h.db")
    hub = Hub(Settings(), MemoryBroker(), store)
    await hub.start()
    gate = asyncio.Event()
    gate.set()
    last_seq = store.last_seq

    async def gated_last_seq(room: str) -> int:
        await gate.wait()
        return await last_seq(room)

    store.last_seq = gated_last_seq  # type: ignore[method-assign]
    old, new = SpyConnection(), SpyConnection()
    ann = Identity("ann", "Ann", ("*",), ("*",))
    bob = Identity("bob", "Bob", ("*",), ("*",))
    await hub.join_room(old, "r", ann, None, lambda last, members: None)  # type: ignore[arg-type]
    gate.clear()
    joining = asyncio.create_task(
        hub.join_room(new, "r", bob, None, lambda last, members: None)  # type: ignore[arg-type]
    )
    for _ in range(5):
        await asyncio.sleep(0)  # the join now waits in last_seq
    assert await hub.leave_room(old, "r")  # type: ignore[arg-type]
    gate.set()
    await joining
    assert hub.is_member(new, "r")  # type: ignore[arg-type]
    await hub.stop()


async def test_a_join_that_fails_on_the_store_leaves_no_feed_behind(tmp_path: Path) -> None:
    # The feed opened (and subscribed), then reading the room's last seq failed: the
    # memberless feed and its subscription used to stay for good.
    from hubbub.auth import Identity

    store = store_from_url(f"sqlite:///{tmp_path}/h.db")
    hub = Hub(Settings(), MemoryBroker(), store)
    await hub.start()
    calls = 0
    last_seq = store.last_seq

    async def failing_second_read(room: str) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first read opens the feed, the second is the join's own
            raise OSError("store gone")
        return await last_seq(room)

    store.last_seq = failing_second_read  # type: ignore[method-assign]
    ann = Identity("ann", "Ann", ("*",), ("*",))
    with pytest.raises(OSError):
        await hub.join_room(SpyConnection(), "r", ann, None, lambda last, members: None)  # type: ignore[arg-type]
    assert "r" not in hub._feeds
    assert "room:r" not in hub.broker.bus.subscribers  # type: ignore[attr-defined]
    await hub.stop()


# -- background tasks ------------------------------------------------------------------


class LogEvents(logging.Handler):
    """Keeps the records of one logger; awaitable, so tests wait on the record itself."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait_for(self, text: str) -> logging.LogRecord:
        async def seen() -> logging.LogRecord:
            while True:
                for record in self.records:
                    if text in record.getMessage():
                        return record
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(seen(), 10)


@pytest.fixture
def hub_log() -> Iterator[LogEvents]:
    handler = LogEvents()
    logger = logging.getLogger("hubbub.hub")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def task_failures(hub: Hub, task: str) -> float:
    value = hub.metrics.registry.get_sample_value("hubbub_task_failures_total", {"task": task})
    return value or 0.0


async def test_a_heartbeat_that_raises_is_logged_counted_and_runs_again(
    tmp_path: Path, hub_log: LogEvents
) -> None:
    hub = Hub(Settings(), MemoryBroker(), store_from_url(f"sqlite:///{tmp_path}/h.db"))
    hub.restart_delay = 0.0  # the backoff, not what this test is about
    presence = hub.presence
    reap = presence.reap
    rounds = 0
    beating_again = asyncio.Event()

    def reap_that_fails_once() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("the reaper broke")
        beating_again.set()
        reap()

    presence.reap = reap_that_fails_once  # type: ignore[method-assign]
    await hub.start()
    try:
        record = await hub_log.wait_for("presence heartbeat")
        await asyncio.wait_for(beating_again.wait(), 10)
    finally:
        await hub.stop()
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert task_failures(hub, "presence heartbeat") == 1
    assert rounds >= 2


async def test_a_one_shot_task_that_raises_is_logged_and_counted(
    hub: Hub, hub_log: LogEvents
) -> None:
    async def snapshot() -> None:
        raise OSError("broker went away")

    hub._spawn(snapshot())
    record = await hub_log.wait_for("snapshot")
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and isinstance(record.exc_info[1], OSError)
    assert task_failures(hub, snapshot.__qualname__) == 1  # named after its coroutine
    assert not hub._tasks


# -- closing a connection --------------------------------------------------------------


class CountedConnection(SpyConnection):
    """A spy that counts how often it is hashed: once per look-up in a set or dict, so
    a close that scans every user or channel hashes it once per user or channel."""

    def __init__(self) -> None:
        super().__init__()
        self.hashed = 0
        self.closed: list[tuple[int, str]] = []

    def __hash__(self) -> int:
        self.hashed += 1
        return id(self)

    def close(self, code: int, reason: str = "") -> None:
        self.closed.append((code, reason))

    def release(self) -> None:
        pass


async def test_a_close_looks_at_what_the_connection_touched_not_at_everyone(
    hub: Hub, broker: GatedBroker
) -> None:
    broker.gate.set()
    for i in range(200):
        other = CountedConnection()
        hub.register_user(other, f"user{i}")  # type: ignore[arg-type]
        await hub.join(f"channel{i}", other)  # type: ignore[arg-type]
    for close in ("disconnect", "drop"):
        leaving = CountedConnection()
        hub.register_user(leaving, "me")  # type: ignore[arg-type]
        await hub.join("mine", leaving)  # type: ignore[arg-type]
        leaving.hashed = 0
        if close == "disconnect":
            await hub.disconnect(leaving)  # type: ignore[arg-type]
        else:
            hub.drop(leaving)  # type: ignore[arg-type]
        assert leaving.hashed < 20, close  # one scan of users or channels: 200 or more
        assert await hub.disconnect_user("me") == 0
        hub.publish("mine", "nobody")
        assert leaving.frames == []


async def test_a_close_looks_at_the_rooms_of_the_connection_only(tmp_path: Path) -> None:
    from hubbub.auth import Identity

    hub = Hub(Settings(), MemoryBroker(), store_from_url(f"sqlite:///{tmp_path}/h.db"))
    await hub.start()
    try:
        for i in range(50):
            member = Identity(f"user{i}", f"User {i}", ("*",), ("*",))
            await hub.join_room(CountedConnection(), f"r{i}", member, None, lambda *_: None)  # type: ignore[arg-type]
        leaving = CountedConnection()
        ann = Identity("ann", "Ann", ("*",), ("*",))
        await hub.join_room(leaving, "mine", ann, None, lambda *_: None)  # type: ignore[arg-type]
        leaving.hashed = 0
        await hub.disconnect(leaving)  # type: ignore[arg-type]
        assert leaving.hashed < 20  # one scan of the rooms: 50 or more
        assert not hub.is_member(leaving, "mine")  # type: ignore[arg-type]
        assert "ann" not in hub.presence.members("mine")
    finally:
        await hub.stop()


async def test_a_user_stays_known_while_another_of_its_connections_is_open(hub: Hub) -> None:
    first, second = CountedConnection(), CountedConnection()
    hub.register_user(first, "ann")  # type: ignore[arg-type]
    hub.register_user(second, "ann")  # type: ignore[arg-type]
    hub.drop(first)  # type: ignore[arg-type]
    assert await hub.disconnect_user("ann") == 1
    assert (first.closed, second.closed) == ([], [(1008, "disconnected by the server")])
    hub.drop(second)  # type: ignore[arg-type]
    assert await hub.disconnect_user("ann") == 0


async def test_a_ban_that_arrives_while_a_join_is_under_way_refuses_that_join(
    tmp_path: Path,
) -> None:
    # The ban's event reached the feed while the join was awaiting the store, after its
    # ban check and before the member was added: the user used to stay in the room.
    from hubbub.auth import Identity
    from hubbub.errors import ErrorCode, ProtocolError
    from hubbub.stores.chat import ModerationChange

    store = store_from_url(f"sqlite:///{tmp_path}/h.db")
    hub = Hub(Settings(), MemoryBroker(), store)
    await hub.start()
    watcher, troll = SpyConnection(), SpyConnection()
    ann = Identity("ann", "Ann", ("*",), ("*",))
    bob = Identity("bob", "Bob", ("*",), ("*",))
    await hub.join_room(watcher, "r", ann, None, lambda last, members: None)  # type: ignore[arg-type]
    await store.join_member("r", "bob", "Bob")
    join_member = store.join_member

    async def banned_meanwhile(room: str, user: str, name: str) -> object:
        standing = await join_member(room, user, name)
        await hub.moderate(room, ModerationChange("ban", "bob", "srv", "srv", "owner"))
        return standing

    store.join_member = banned_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ProtocolError) as refused:
        await hub.join_room(troll, "r", bob, None, lambda last, members: None)  # type: ignore[arg-type]
    assert refused.value.code == ErrorCode.BANNED
    assert not hub.is_member(troll, "r")  # type: ignore[arg-type]
    assert "bob" not in hub.presence.members("r")
    await hub.stop()
