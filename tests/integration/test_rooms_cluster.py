"""Rooms across processes: every member sees every message exactly once, in seq order,
with no gap, through any interleaving, reconnections and broker restarts."""

from __future__ import annotations

import asyncio
import functools
import random
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.private import PrivateService, private
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import service_url, temporary_database, temporary_database_sync

FAST = ("--rate-per-second", "100000", "--rate-burst", "100000")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateService]:
    service = private("redis", tmp_path)
    service.start()
    yield service
    service.stop()


def has_read(client: RoomClient, count: int, room: str = "storm") -> bool:
    return len(client.messages.get(room, [])) >= count


def assert_exactly_once_in_order(client: RoomClient, room: str, total: int) -> None:
    assert client.messages.get(room, []) == list(range(1, total + 1))


# Each writer: (server index, number of messages, whether it waits for each ack).
schedules = st.lists(
    st.tuples(st.integers(0, 1), st.integers(1, 40), st.booleans()), min_size=2, max_size=6
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=schedules, readers_on=st.lists(st.integers(0, 1), min_size=1, max_size=3))
def test_any_interleaving_across_two_processes(
    cluster: list[ServerProcess], schedule: list[tuple[int, int, bool]], readers_on: list[int]
) -> None:
    room = f"prop-{secrets.token_hex(6)}"  # hypothesis seeds `random`: names would repeat

    async def scenario() -> None:
        readers = [
            await RoomClient.open(cluster[i].ws(""), f"reader{n}") for n, i in enumerate(readers_on)
        ]
        for reader in readers:
            await reader.join(room)
        writers = [
            await RoomClient.open(cluster[i].ws(""), f"w{n}")
            for n, (i, _, _) in enumerate(schedule)
        ]
        for writer in writers:
            await writer.join(room)

        async def write(writer: RoomClient, count: int, wait_each: bool) -> None:
            for i in range(count):
                if wait_each:
                    await writer.say(room, str(i))
                else:
                    await writer.send(type="send", room=room, text=str(i))

        await asyncio.gather(
            *(write(w, n, each) for w, (_, n, each) in zip(writers, schedule, strict=True))
        )
        total = sum(n for _, n, _ in schedule)
        for client in readers + writers:
            await client.has_seqs(room, total)
            assert_exactly_once_in_order(client, room, total)
        for client in readers + writers:
            await client.close()

    asyncio.run(scenario())


@pytest.fixture
def cluster(start_server: Callable[..., ServerProcess]) -> Iterator[list[ServerProcess]]:
    """Two processes sharing the machine's Redis (broker) and a fresh PostgreSQL database."""
    redis = service_url("redis")
    with temporary_database_sync() as db_url:
        args = ("--broker-url", redis, "--store-url", db_url, *FAST)
        servers = [start_server(*args), start_server(*args)]
        yield servers
        for server in servers:  # before the database goes
            server.stop()


async def resume_under_faults(
    servers: list[ServerProcess], broker: PrivateService, cycles: int = 12, kills: int = 3
) -> None:
    """Writers on every server stream into one room while a reader keeps dropping its
    connection and resuming from the last seq it saw; the broker dies and comes back."""
    room = "storm"
    rng = random.Random(7)
    writers = [await RoomClient.open(s.ws(""), f"writer{i}") for i, s in enumerate(servers)]
    for writer in writers:
        await writer.join(room)
    stop = asyncio.Event()
    seen: list[int] = []

    async def write(i: int, writer: RoomClient) -> None:
        n = 0
        while not stop.is_set():
            await writer.say(room, f"{i}:{n}")
            n += 1

    held: list[str] = []  # the reader's guest token: each reconnection is the same guest

    async def open_reader(server: ServerProcess) -> RoomClient:
        query = f"guest={held[0]}" if held else "name=reader"
        reader = await RoomClient.open(server.ws(""), query=query)
        held[:] = [(await reader.next_of("welcome"))["guest_token"]]
        return reader

    async def read() -> None:
        for cycle in range(cycles):
            reader = await open_reader(servers[cycle % len(servers)])
            await reader.join(room, since=seen[-1] if seen else 0)
            stay = rng.randint(5, 80)  # messages to read before dropping the connection
            await reader.wait(functools.partial(has_read, reader, stay))
            await reader.close()
            seen.extend(reader.messages.get(room, []))
        stop.set()

    async def faults() -> None:
        watcher = writers[0]
        for _ in range(kills):
            progress = max(watcher.messages.get(room, [0])) + 100
            await watcher.has_seqs(room, progress)
            await asyncio.to_thread(broker.kill)
            await watcher.say(room, "during the outage")  # the store takes it anyway
            await asyncio.to_thread(broker.start)

    writing = [asyncio.create_task(write(i, w)) for i, w in enumerate(writers)]
    breaking = asyncio.create_task(faults())
    await read()
    await asyncio.gather(*writing)
    await breaking  # it ends with the broker running again
    total = max(max(w.messages.get(room, [0])) for w in writers)
    acked = max(f["seq"] for w in writers for f in w.frames if f["type"] == "ack")
    final = await open_reader(servers[-1])
    await final.join(room, since=seen[-1] if seen else 0)
    await final.has_seqs(room, acked)
    seen.extend(final.messages.get(room, []))
    await final.close()
    for writer in writers:
        await writer.close()
    assert total <= acked == seen[-1]
    for server in servers:  # the outages really happened, and were healed
        assert server.log.count("connection lost") >= kills
        assert server.log.count("reconnected") >= kills
    assert seen == list(range(1, acked + 1)), "a gap or a duplicate"


async def test_resume_under_broker_faults_redis_and_postgres(
    start_server: Callable[..., ServerProcess], private_redis: PrivateService
) -> None:
    async with temporary_database() as db_url:
        args = (
            "--broker-url",
            private_redis.url,
            "--store-url",
            db_url,
            "--broker-backoff-max",
            "0.2",
            *FAST,
        )
        servers = [start_server(*args), start_server(*args)]
        try:
            await resume_under_faults(servers, private_redis)
        finally:
            for server in servers:
                server.stop()


async def test_resume_with_sqlite_and_two_workers(
    start_server: Callable[..., ServerProcess], private_redis: PrivateService, tmp_path: Path
) -> None:
    server = start_server(
        "--workers",
        "2",
        "--broker-url",
        private_redis.url,
        "--store-url",
        f"sqlite:///{tmp_path}/shared.db",
        "--broker-backoff-max",
        "0.2",
        *FAST,
    )
    await resume_under_faults([server, server], private_redis)
