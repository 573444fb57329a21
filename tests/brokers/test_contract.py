"""The contract of ``brokers/base.py``, run against every backend on its real server."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path

from hubbub.brokers import Broker
from hubbub.brokers.redis import RedisBroker
from hubbub.brokers.remote import MAX_SENDERS, RemoteBroker
from hubbub.config import Settings
from hubbub.hub import Hub
from hubbub.stores import store_from_url
from tests.brokers.conftest import Pair
from tests.spies import SpyConnection

TIMEOUT = 10
MakePair = Callable[[], Awaitable[Pair]]


class Inbox:
    """Collects what a broker delivers."""

    def __init__(self, broker: Broker) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        broker.set_delivery(lambda channel, payload: self.queue.put_nowait((channel, payload)))

    async def next(self) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    async def take(self, n: int) -> list[tuple[str, bytes]]:
        return [await self.next() for _ in range(n)]


async def test_publish_reaches_the_other_process_and_not_itself(make_pair: MakePair) -> None:
    a, b = await make_pair()
    inbox_a, inbox_b = Inbox(a), Inbox(b)
    await a.subscribe("chat")
    await b.subscribe("chat")
    a.publish("chat", b"from a")
    b.publish("chat", b"from b")
    assert await inbox_b.next() == ("chat", b"from a")
    assert await inbox_a.next() == ("chat", b"from b")
    # Each process's own message never comes back to it: a sentinel proves the queue is empty.
    b.publish("chat", b"sentinel")
    assert await inbox_a.next() == ("chat", b"sentinel")
    assert inbox_b.queue.empty()


async def test_order_from_one_publisher_is_kept(make_pair: MakePair) -> None:
    a, b = await make_pair()
    inbox = Inbox(b)
    await b.subscribe("ordered")
    for i in range(2000):
        a.publish("ordered", str(i).encode())
    assert await inbox.take(2000) == [("ordered", str(i).encode()) for i in range(2000)]


async def test_many_channels_each_get_their_own(make_pair: MakePair) -> None:
    a, b = await make_pair()
    inbox = Inbox(b)
    channels = [f"room-{i}" for i in range(50)]
    for channel in channels:
        await b.subscribe(channel)
    a.publish("not-subscribed", b"nobody")
    for channel in channels:
        a.publish(channel, channel.encode())
    assert await inbox.take(50) == [(c, c.encode()) for c in channels]


async def test_unsubscribe_stops_delivery(make_pair: MakePair) -> None:
    a, b = await make_pair()
    inbox = Inbox(b)
    await b.subscribe("x")
    await b.subscribe("y")
    a.publish("x", b"1")
    assert await inbox.next() == ("x", b"1")
    await b.unsubscribe("x")
    a.publish("x", b"2")
    a.publish("y", b"sentinel")
    assert await inbox.next() == ("y", b"sentinel")
    assert inbox.queue.empty()


async def test_large_and_unusual_payloads_arrive_intact(make_pair: MakePair) -> None:
    a, b = await make_pair()
    inbox = Inbox(b)
    await b.subscribe("big")
    payloads = [
        b"",
        "\x00 nul, 'quotes', \"double\", \\ and émoji 🎉".encode(),
        bytes(range(256)),  # not UTF-8
        b"x" * 7999,
        b"y" * 8001,
        "é".encode() * 32768,  # 64 KiB
        b"z" * (1024 * 1024),
    ]
    for payload in payloads:
        a.publish("big", payload)
    assert await inbox.take(len(payloads)) == [("big", p) for p in payloads]


async def test_concurrent_first_subscribers_all_receive(
    make_pair: MakePair, tmp_path: Path
) -> None:
    a, b = await make_pair()
    hub = Hub(Settings(), b, store_from_url(f"sqlite:///{tmp_path}/unused.db"))
    members = [SpyConnection() for _ in range(1000)]
    await asyncio.gather(*(hub.join("lobby", m) for m in members))  # type: ignore[arg-type]
    done = asyncio.Event()
    sentinel_member = SpyConnection()
    sentinel_member.send = lambda frame: done.set()  # type: ignore[method-assign]
    await hub.join("lobby", sentinel_member)  # type: ignore[arg-type]
    a.publish("lobby", b"hello everyone")
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert [len(m.frames) for m in members] == [1] * 1000
    assert all(m.frames[0].payload == b"hello everyone" for m in members)


async def test_stop_leaves_no_task_behind(make_pair: MakePair) -> None:
    before = asyncio.all_tasks()
    a, b = await make_pair()
    await a.subscribe("c")
    await b.subscribe("c")
    a.publish("c", b"x")
    await a.stop()
    await b.stop()
    await b.stop()  # idempotent
    assert asyncio.all_tasks() - before == set()
    assert not a.ready or a.shared_across_processes is False
    gc.collect()  # unclosed sockets or transports would warn here (warnings are errors)


async def test_a_batch_sent_again_is_not_delivered_twice(make_pair: MakePair) -> None:
    a, b = await make_pair()
    if not isinstance(a, RemoteBroker):
        return  # the memory broker never re-sends
    inbox = Inbox(b)
    await b.subscribe("again")
    original = a._send
    failed = asyncio.Event()

    async def send_then_fail(batch: list[tuple[str, bytes]]) -> None:
        await original(batch)
        if not failed.is_set():
            failed.set()  # it got through, but the publisher believes it did not
            raise ConnectionError("lost the answer")

    a._send = send_then_fail  # type: ignore[method-assign]
    for i in range(5):
        a.publish("again", str(i).encode())
    a.publish("again", b"after")
    got = await inbox.take(6)
    assert got == [("again", p) for p in [b"0", b"1", b"2", b"3", b"4", b"after"]]
    a.publish("again", b"sentinel")
    assert await inbox.next() == ("again", b"sentinel")  # nothing repeated in between
    assert a.stats.listener_errors == 1


def test_a_channel_remembers_a_bounded_number_of_senders() -> None:
    # Bookkeeping only (no server): every process that ever published on a channel
    # that never empties (presence, the tutorial's chat) used to stay remembered.
    broker = RedisBroker("redis://127.0.0.1:1")
    heard: list[bytes] = []
    broker.set_delivery(lambda channel, payload: heard.append(payload))
    broker._channels.add("c")
    for n in range(3 * MAX_SENDERS):
        node = b"%016x" % n
        broker._received("c", node + b"%016x" % 1 + broker.epoch + b"x")
    assert len(broker._last_counter["c"]) == MAX_SENDERS
    assert len(heard) == 3 * MAX_SENDERS
    last = b"%016x" % (3 * MAX_SENDERS - 1)
    broker._received("c", last + b"%016x" % 1 + broker.epoch + b"again")
    assert heard[-1] == b"x"  # a recent sender's duplicate is still dropped
