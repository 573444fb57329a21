"""What the PostgreSQL broker does beyond the contract: payloads that a NOTIFY cannot
carry, channel names that an identifier cannot hold, PostgreSQL's folding of identical
notifications, and a listen connection that the server ends."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from hubbub.brokers.base import EPOCH_BYTES
from hubbub.brokers.postgres import HEADER, NOTIFY_MAX_BYTES, TABLE, PostgresBroker, pg_channel
from hubbub.brokers.remote import COUNTER_BYTES
from tests.brokers.test_contract import TIMEOUT, Inbox
from tests.services import service_url

Pair = tuple[PostgresBroker, PostgresBroker]


@pytest.fixture
def url() -> str:
    return service_url("postgres")


@pytest.fixture
async def db(url: str) -> AsyncIterator[Any]:
    """A connection of the test's own, to look into the table."""
    connection = await asyncpg.connect(url)
    yield connection
    await connection.close()


class ObservedBroker(PostgresBroker):
    """Sets ``listening`` whenever its listener starts: connected and subscribed again."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.listening = asyncio.Event()

    async def _listen(self) -> None:
        self.listening.set()
        await super()._listen()


@pytest.fixture
async def make_brokers(url: str) -> AsyncIterator[Callable[[], Awaitable[Pair]]]:
    started: list[PostgresBroker] = []

    async def make() -> Pair:
        pair = (ObservedBroker(url), ObservedBroker(url))
        for broker in pair:
            started.append(broker)
            await broker.start()
            assert broker.ready
        return pair

    yield make
    for broker in started:
        await broker.stop()


async def stored_count(db: Any, payload: bytes) -> int:
    # A stored payload is the publisher's counter and epoch, then the payload itself.
    count: int = await db.fetchval(
        f"SELECT count(*) FROM {TABLE} WHERE substring(payload from $2) = $1",
        payload,
        COUNTER_BYTES + EPOCH_BYTES + 1,
    )
    return count


async def test_what_a_notify_cannot_carry_goes_through_the_table(
    make_brokers: Callable[[], Awaitable[Pair]], db: Any
) -> None:
    a, b = await make_brokers()
    inbox = Inbox(b)
    await b.subscribe("t")
    token = secrets.token_hex(8).encode()  # unique: other runs may share the database
    # What the server accepts inline, exactly (the counter travels with the payload).
    room = NOTIFY_MAX_BYTES - HEADER - COUNTER_BYTES - EPOCH_BYTES - len(token)
    inline = [b"small and UTF-8 " + token, token + b"m" * room]
    stored = [
        token + b"m" * (room + 1),
        b"big " + token + b"x" * 100_000,
        b"not UTF-8 \xff " + token,
        b"NUL \x00 " + token,
    ]
    for payload in [*inline, *stored]:
        a.publish("t", payload)
    assert await inbox.take(6) == [("t", p) for p in [*inline, *stored]]
    # The NOTIFYs are delivered at commit, so the rows are visible by now.
    assert [await stored_count(db, p) for p in inline] == [0, 0]
    assert [await stored_count(db, p) for p in stored] == [1, 1, 1, 1]


async def test_old_rows_are_deleted_before_more_are_stored(
    make_brokers: Callable[[], Awaitable[Pair]], db: Any
) -> None:
    a, b = await make_brokers()
    inbox = Inbox(b)
    await b.subscribe("t")
    old = await db.fetchval(
        f"INSERT INTO {TABLE} (payload, created_at) VALUES ($1, now() - interval '1 hour') "
        "RETURNING id",
        b"left over",
    )
    fresh = secrets.token_bytes(10_000)
    a.publish("t", fresh)  # a's first stored payload: a purges first
    assert await inbox.next() == ("t", fresh)
    assert await db.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id = $1", old) == 0
    assert await stored_count(db, fresh) == 1


async def test_channel_names_that_do_not_fit_an_identifier(
    make_brokers: Callable[[], Awaitable[Pair]],
) -> None:
    names = [
        "a" * 56,  # "hubbub:" + 56 bytes: exactly 63
        "a" * 57,
        "a" * 57 + "b",  # the same first 63 bytes as the one before
        "é" * 40,  # 40 characters, 80 bytes
        "café",
        "nul \x00 in a name",
        "lone surrogate \ud800",  # what a JSON "\ud800" escape decodes to
        "MixedCase",  # identifiers are quoted, so not folded to lower case
        "mixedcase",
        'a "quoted" name',
    ]
    pg_names = [pg_channel(name) for name in names]
    assert len(set(pg_names)) == len(names)
    assert all(len(pg_name.encode()) <= 63 for pg_name in pg_names)
    a, b = await make_brokers()
    inbox = Inbox(b)
    for name in names:
        await b.subscribe(name)
    for name in names:
        a.publish(name, name.encode("utf-8", "surrogatepass"))
    assert await inbox.take(len(names)) == [
        (name, name.encode("utf-8", "surrogatepass")) for name in names
    ]


async def test_identical_messages_in_one_transaction_all_arrive(
    make_brokers: Callable[[], Awaitable[Pair]],
) -> None:
    # PostgreSQL folds identical notifications of a transaction into one.
    a, b = await make_brokers()
    inbox = Inbox(b)
    await b.subscribe("t")
    for _ in range(100):
        a.publish("t", b"same")  # publish does not yield: one batch, one transaction
    a.publish("t", b"sentinel")
    assert await inbox.take(101) == [("t", b"same")] * 100 + [("t", b"sentinel")]


async def test_the_notify_counter_wrapping_does_not_drop_messages(
    make_brokers: Callable[[], Awaitable[Pair]],
) -> None:
    # The NOTIFY counter wraps at 8 hex digits; it once shared its attribute with the
    # de-duplication counter, which then went backwards: all later messages dropped.
    a, b = await make_brokers()
    inbox = Inbox(b)
    await b.subscribe("t")
    a._counter = 16**8 - 3
    for i in range(6):
        a.publish("t", b"%d" % i)
        assert await inbox.take(1) == [("t", b"%d" % i)]  # one batch each: wrap between


async def test_a_listen_connection_ended_by_the_server_is_rebuilt(
    make_brokers: Callable[[], Awaitable[Pair]], db: Any
) -> None:
    a, b = await make_brokers()
    assert isinstance(b, ObservedBroker)
    inbox = Inbox(b)
    await b.subscribe("t")
    await asyncio.wait_for(b.listening.wait(), TIMEOUT)
    b.listening.clear()
    pid = b._listener.get_server_pid()
    assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
    await asyncio.wait_for(b.listening.wait(), TIMEOUT)  # reconnected and re-subscribed
    assert b._listener.get_server_pid() != pid
    a.publish("t", b"after")
    assert await inbox.next() == ("t", b"after")
    assert (b.stats.listener_errors, b.stats.reconnects) == (1, 1)
