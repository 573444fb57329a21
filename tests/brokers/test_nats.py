"""What the contract suite does not show about the NATS broker, on a real server:
channel names that are not valid subjects, payloads beyond the server's
``max_payload`` (and their reassembly per sender), and a server that dies and comes
back. The wire format itself, without a server: ``test_nats_wire.py``."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from hubbub.brokers import broker_from_url
from hubbub.brokers.nats import NatsBroker
from hubbub.brokers.nats_wire import PART_HEADER_BYTES, WHOLE_HEADER_BYTES
from tests.brokers.test_contract import Inbox
from tests.brokers.test_nats_wire import ODD_NAMES, payload_of
from tests.integration.private import PrivateService, private
from tests.services import service_url

TIMEOUT = 20

MakeBrokers = Callable[[int], Awaitable[list[NatsBroker]]]


@pytest.fixture
async def make_brokers() -> AsyncIterator[MakeBrokers]:
    """Start ``n`` brokers on the machine's NATS server, standing in for ``n`` processes."""
    url = service_url("nats")
    started: list[NatsBroker] = []

    async def make(n: int) -> list[NatsBroker]:
        brokers = []
        for _ in range(n):
            broker = broker_from_url(url)
            assert isinstance(broker, NatsBroker)
            await broker.start()
            started.append(broker)
            assert broker.ready
            brokers.append(broker)
        return brokers

    yield make
    for broker in started:
        await broker.stop()


# -- subjects ------------------------------------------------------------------------


async def test_odd_channel_names_stay_separate(make_brokers: MakeBrokers) -> None:
    a, b = await make_brokers(2)
    inbox = Inbox(b)
    for name in ODD_NAMES:
        await b.subscribe(name)
    for name in ODD_NAMES:
        a.publish(name, name.encode("utf-8", "surrogatepass"))
    # One sentinel per channel: NATS keeps one connection's order and each subscription
    # delivers in order, so anything a channel wrongly received arrives before its own
    # sentinel.
    for name in ODD_NAMES:
        a.publish(name, b"sentinel")
    received = await inbox.take(2 * len(ODD_NAMES))
    expected = [(n, n.encode("utf-8", "surrogatepass")) for n in ODD_NAMES]
    expected += [(n, b"sentinel") for n in ODD_NAMES]
    assert Counter(received) == Counter(expected)
    assert inbox.queue.empty()


async def test_unsubscribed_wildcard_like_names_receive_nothing(
    make_brokers: MakeBrokers,
) -> None:
    a, b = await make_brokers(2)
    inbox = Inbox(b)
    await b.subscribe("*")
    await b.subscribe(">")
    for name in ("a", "a.b", "x y", "é"):
        a.publish(name, b"not for b")
    a.publish("*", b"star")
    a.publish(">", b"gt")
    assert Counter(await inbox.take(2)) == Counter([("*", b"star"), (">", b"gt")])
    assert inbox.queue.empty()


# -- payloads beyond max_payload ------------------------------------------------------


async def test_payloads_beyond_max_payload_arrive_intact_and_in_order(
    make_brokers: MakeBrokers,
) -> None:
    a, b = await make_brokers(2)
    limit = a.max_payload
    assert limit is not None
    piece = limit - PART_HEADER_BYTES
    largest_whole = limit - WHOLE_HEADER_BYTES
    sizes = [
        largest_whole,
        largest_whole + 1,  # the smallest payload that is split
        2 * piece,  # exactly two parts
        2 * piece + 1,
        limit * 7 // 2,
    ]
    inbox = Inbox(b)
    await b.subscribe("big")
    expected = []
    for i, size in enumerate(sizes):
        for payload in (payload_of(i, size), f"small {i}".encode()):
            a.publish("big", payload)
            expected.append(("big", payload))
    received = await inbox.take(len(expected))
    assert [len(p) for _, p in received] == [len(p) for _, p in expected]
    assert received == expected
    assert b.stats.dropped == 0


async def test_large_messages_from_two_senders_are_reassembled_per_sender(
    make_brokers: MakeBrokers,
) -> None:
    a1, a2, b = await make_brokers(3)
    limit = a1.max_payload
    assert limit is not None
    inbox = Inbox(b)
    await b.subscribe("big")
    await b.subscribe("other")
    sent: dict[bytes, list[bytes]] = {b"1": [], b"2": []}
    # Both publish at once, so their parts interleave on the same subject.
    for i in range(3):
        for tag, sender in ((b"1", a1), (b"2", a2)):
            payload = tag + payload_of(i, limit * 3 // 2 + i)
            sender.publish("big", payload)
            sent[tag].append(payload)
            sender.publish("other", tag)  # another channel in between
    received = await inbox.take(12)
    for tag, payloads in sent.items():
        assert [p for c, p in received if c == "big" and p[:1] == tag] == payloads
        assert [p for c, p in received if c == "other" and p == tag] == [tag] * 3


# -- a server that dies ---------------------------------------------------------------


class LogEvents(logging.Handler):
    """Counts log messages that contain a text; awaitable, so tests wait on events."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait_for(self, text: str, count: int) -> None:
        async def seen() -> None:
            while sum(text in r.getMessage() for r in self.records) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(seen(), TIMEOUT)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[PrivateService]:
    service = private("nats", tmp_path)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def log_events() -> Iterator[LogEvents]:
    handler = LogEvents()
    loggers = [logging.getLogger("hubbub.broker"), logging.getLogger("nats")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_server_killed_and_restarted(
    nats_server: PrivateService, log_events: LogEvents
) -> None:
    a = broker_from_url(nats_server.url, backoff_max=0.25)
    b = broker_from_url(nats_server.url, backoff_max=0.25)
    assert isinstance(a, NatsBroker) and isinstance(b, NatsBroker)
    try:
        await a.start()
        await b.start()
        limit = a.max_payload
        assert limit is not None
        inbox = Inbox(b)
        await b.subscribe("room")
        a.publish("room", b"before")
        assert await inbox.next() == ("room", b"before")

        await asyncio.to_thread(nats_server.kill)
        await log_events.wait_for("connection lost", 2)  # both listeners noticed
        assert not a.ready and not b.ready
        during = [f"during {i}".encode() for i in range(50)]
        during.insert(25, payload_of(0, limit * 2))  # split into parts after the outage
        for payload in during:
            a.publish("room", payload)

        await asyncio.to_thread(nats_server.start)
        # b re-subscribes; a waits resend_delay before sending what it buffered.
        assert await inbox.take(len(during)) == [("room", p) for p in during]
        a.publish("room", b"after")
        assert await inbox.next() == ("room", b"after")
        for broker in (a, b):
            assert broker.stats.reconnects == 1
            assert broker.stats.listener_errors == 1
            assert broker.stats.dropped == 0
    finally:
        await a.stop()
        await b.stop()
    # An expected disconnect is one line at most, never a stack trace or an ERROR.
    assert [r for r in log_events.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_a_frozen_server_is_noticed_and_stop_leaves_nothing(
    nats_server: PrivateService, log_events: LogEvents
) -> None:
    before = asyncio.all_tasks()
    a = broker_from_url(nats_server.url)
    assert isinstance(a, NatsBroker) and nats_server.process is not None
    a.ping_interval = a.ping_timeout = 1
    try:
        await a.start()
        await a.subscribe("room")
        # Frozen, not dead: the socket stays open and nothing answers.
        nats_server.process.send_signal(signal.SIGSTOP)
        for _ in range(100):  # more than the socket buffers hold, so writes get stuck
            a.publish("room", bytes(100_000))
        await log_events.wait_for("no PONG", 1)
        assert not a.ready
    finally:
        await a.stop()
    assert asyncio.all_tasks() - before == set()
