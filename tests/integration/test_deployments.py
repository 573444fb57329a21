"""Two deployments on one broker server (issue 12, hole 11): neither hears the other, and
a client's ``since`` from another deployment's history is a reset, not a silent gap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.private import PrivateService, private
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import temporary_database

TIMEOUT = 30.0


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    service: PrivateService = private("redis", tmp_path)
    service.start()
    yield service.url
    service.stop()


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for something a server reports only when asked (its /readyz counters)."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)  # polling: /readyz has no event to wait on


def foreign(server: ServerProcess) -> int:
    return int(server.readyz()["broker"]["foreign"])


async def test_deployments_sharing_a_redis_do_not_cross_talk(
    start_server: Callable[..., ServerProcess], redis_url: str
) -> None:
    async with temporary_database() as postgres:
        # Redis pub/sub ignores the database number: /0 and /5 are one bus.
        lone = start_server("--broker-url", redis_url)  # SQLite in its own folder
        pair_url = redis_url.rsplit("/", 1)[0] + "/5"
        pair = [start_server("--broker-url", pair_url, "--store-url", postgres) for _ in "ab"]
        ann = await RoomClient.open(lone.ws(""), "Ann")
        await ann.join("lobby")
        bob = await RoomClient.open(pair[0].ws(""), "Bob")
        cy = await RoomClient.open(pair[1].ws(""), "Cy")
        assert (await bob.join("lobby"))["members"] == ["Bob"]  # Ann is elsewhere
        assert sorted((await cy.join("lobby"))["members"]) == ["Bob", "Cy"]
        assert (await ann.say("lobby", "from the SQLite side"))["seq"] == 1
        await until(lambda: foreign(pair[1]) >= 1)  # heard, and set aside
        assert (await bob.say("lobby", "from the PostgreSQL side"))["seq"] == 1
        await cy.has_seqs("lobby", 1)
        await bob.has_seqs("lobby", 1)
        await ann.has_seqs("lobby", 1)
        assert cy.texts["lobby"] == ["from the PostgreSQL side"]
        assert bob.texts["lobby"] == ["from the PostgreSQL side"]
        assert ann.texts["lobby"] == ["from the SQLite side"]
        welcomes = [await c.next_of("welcome") for c in (ann, bob, cy)]
        assert welcomes[0]["epoch"] != welcomes[1]["epoch"] == welcomes[2]["epoch"]
        for client in (ann, bob, cy):
            await client.close()
        assert foreign(lone) >= 1
        for server in (lone, *pair):
            server.stop()


async def test_a_namespace_keeps_deployments_apart_on_the_broker(
    start_server: Callable[..., ServerProcess], redis_url: str
) -> None:
    one = start_server("--broker-url", redis_url, "--namespace", "one")
    two = start_server("--broker-url", redis_url, "--namespace", "two")
    ann = await RoomClient.open(one.ws(""), "Ann")
    bob = await RoomClient.open(two.ws(""), "Bob")
    await ann.join("lobby")
    assert (await bob.join("lobby"))["members"] == ["Bob"]
    await ann.say("lobby", "one")
    await bob.say("lobby", "two")
    await ann.has_seqs("lobby", 1)
    await bob.has_seqs("lobby", 1)
    assert (ann.texts["lobby"], bob.texts["lobby"]) == (["one"], ["two"])
    for client in (ann, bob):
        await client.close()
    assert foreign(one) == foreign(two) == 0  # not even seen: other channels


async def test_a_since_of_another_epoch_is_a_reset(server: ServerProcess) -> None:
    ann = await RoomClient.open(server.ws(""), "Ann")
    joined = await ann.join("lobby")
    epoch = joined["epoch"]
    for i in range(3):
        await ann.say("lobby", f"m{i}")
    bob = await RoomClient.open(server.ws(""), "Bob")
    mark = len(bob.frames)
    await bob.send(type="join", room="lobby", since=1, epoch="f" * 16)
    stranger = await bob.next_of("joined", mark)
    assert (stranger["reset"], stranger["seq"], stranger["epoch"]) == (True, 3, epoch)
    await ann.say("lobby", "live")
    await bob.has_seqs("lobby", 4)
    assert bob.messages["lobby"] == [4]  # nothing of a history it never had
    # The same epoch resumes as before; so does a since without one (older clients).
    for given in ({"epoch": epoch}, {}):
        cy = await RoomClient.open(server.ws(""), f"Cy{len(given)}")
        mark = len(cy.frames)
        await cy.send(type="join", room="lobby", since=1, **given)
        resumed = await cy.next_of("joined", mark)
        assert "reset" not in resumed
        await cy.has_seqs("lobby", 4)
        assert cy.messages["lobby"] == [2, 3, 4]
        await cy.close()
    await bob.close()
    await ann.close()
