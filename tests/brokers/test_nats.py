"""What the contract suite does not show about the NATS broker: channel names that are
not valid subjects, payloads beyond the server's ``max_payload`` (and their reassembly
per sender), and a server that dies and comes back."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import string
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub.brokers import broker_from_url
from hubbub.brokers.nats import (
    PART_HEADER_BYTES,
    WHOLE_HEADER_BYTES,
    NatsBroker,
    Reassembler,
    frames_for,
    subject_for,
)
from hubbub.brokers.remote import NODE_ID_BYTES
from tests.brokers.test_contract import Inbox
from tests.integration.private import PrivateService, private
from tests.services import service_url

TIMEOUT = 20
NODE_A = b"a" * NODE_ID_BYTES
NODE_B = b"b" * NODE_ID_BYTES

ODD_NAMES = [
    "a",
    "a.b",
    "a.b.c",
    "a b",
    " ",
    "*",
    ">",
    "a.*",
    "a.>",
    "hubbub.>",
    "r.a",
    "YQ",  # base64url of "a": literal and encoded names must not meet
    "",
    "\x00",
    "tab\there",
    "line\r\nbreak",
    "é",
    "🎉 party",
    "room-1",
    "x" * 500 + "é",
]

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


def payload_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- subjects ------------------------------------------------------------------------


def test_subjects_are_distinct_valid_and_never_wildcards() -> None:
    subjects = [subject_for(name) for name in ODD_NAMES]
    assert len(set(subjects)) == len(ODD_NAMES)
    allowed = set(string.ascii_letters + string.digits + "-_.")
    for subject in subjects:
        assert set(subject) <= allowed, subject
        assert all(subject.split(".")), subject  # no empty token
        assert subject.startswith("hubbub.")
    # Names that are already safe stay readable on the wire.
    assert subject_for("room-1") == "hubbub.r.room-1"


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


# -- framing and reassembly, without a server ---------------------------------------


def reassemble(frames: list[bytes], channel: str = "c") -> list[bytes]:
    reassembler = Reassembler(1 << 30, lambda channel, size: None)
    complete = [reassembler.feed(channel, frame) for frame in frames]
    return [data for data in complete if data is not None]


@given(size=st.integers(0, 3000), limit=st.integers(PART_HEADER_BYTES + 1, 600))
def test_frames_fit_the_limit_and_reassemble(size: int, limit: int) -> None:
    data = NODE_A + payload_of(size, size)
    frames = list(frames_for(data, 7, limit))
    assert all(len(frame) <= limit for frame in frames)
    assert reassemble(frames) == [data]


def test_a_resent_batch_is_delivered_once() -> None:
    small, large = NODE_A + b"small", NODE_A + payload_of(1, 1000)
    sent = [*frames_for(small, 1, 200), *frames_for(large, 2, 200)]
    # The connection broke after the small message and two parts of the large one,
    # before the server confirmed them; the same batch goes out again.
    assert reassemble(sent[:3] + sent) == [small, large]
    # ... also when the break came after the server had delivered all of it.
    assert reassemble(sent + sent) == [small, large]


def test_a_message_joined_midway_or_with_a_gap_is_not_delivered() -> None:
    first, second = NODE_A + payload_of(1, 1000), NODE_A + payload_of(2, 1000)
    frames, next_frames = list(frames_for(first, 1, 200)), list(frames_for(second, 2, 200))
    assert reassemble(frames[1:] + next_frames) == [second]
    assert reassemble(frames[:2] + frames[3:] + next_frames) == [second]


def test_senders_and_channels_do_not_mix() -> None:
    one, two = NODE_A + payload_of(1, 900), NODE_B + payload_of(2, 700)
    reassembler = Reassembler(1 << 30, lambda channel, size: None)
    complete = []
    # The same sequence numbers from two senders, and one sender on two channels,
    # with their parts interleaved.
    streams = [
        [("c", f) for f in frames_for(one, 1, 200)],
        [("c", f) for f in frames_for(two, 1, 200)],
        [("d", f) for f in frames_for(one, 1, 200)],
    ]
    while any(streams):
        for stream in streams:
            if stream:
                channel, frame = stream.pop(0)
                data = reassembler.feed(channel, frame)
                if data is not None:
                    complete.append((channel, data))
    assert sorted(complete) == sorted([("c", one), ("c", two), ("d", one)])
    assert reassembler.pending_bytes == 0
    assert reassembler.duplicates == 0


def test_incomplete_messages_beyond_the_budget_are_dropped_and_reported() -> None:
    dropped: list[tuple[str, int]] = []
    reassembler = Reassembler(1000, lambda channel, size: dropped.append((channel, size)))
    old = list(frames_for(NODE_A + payload_of(1, 2000), 1, 500))
    new = list(frames_for(NODE_B + payload_of(2, 2000), 1, 500))
    assert reassembler.feed("c", old[0]) is None
    assert reassembler.feed("c", new[0]) is None
    assert reassembler.feed("c", new[1]) is None  # over budget: the oldest goes
    assert dropped == [("c", 500 - PART_HEADER_BYTES)]
    assert reassembler.pending_bytes == 2 * (500 - PART_HEADER_BYTES)
    reassembler.forget("c")
    assert reassembler.pending_bytes == 0


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
