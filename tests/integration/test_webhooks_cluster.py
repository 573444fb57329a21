"""Webhooks from two processes sharing a PostgreSQL store (Redis broker): one delivers at
a time, every event once by id and in order per room; when the delivering process is
killed, the other takes over and nothing is lost."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest

from tests.integration.test_rooms_cluster import FAST
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import service_url, temporary_database_sync
from tests.test_webhooks import SECRET, check_signed
from tests.webhook_receiver import Receiver

TAKEOVER = 180.0  # the lease (30 s) runs out, then the backoff of the new deliverer


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def cluster(
    start_server: Callable[..., ServerProcess], receiver: Receiver
) -> Iterator[list[ServerProcess]]:
    with temporary_database_sync() as db_url:
        args = (
            *("--broker-url", service_url("redis"), "--store-url", db_url, *FAST),
            *("--webhook-urls", receiver.url, "--webhook-secret", SECRET),
        )
        servers = [start_server(*args), start_server(*args)]
        yield servers
        for server in servers:
            server.stop()


def messages(receiver: Receiver) -> list[str]:
    return [e["event"]["text"] for e in receiver.delivered() if e["type"] == "message.created"]


async def test_two_processes_deliver_each_event_once_in_order_and_survive_a_kill(
    cluster: list[ServerProcess], receiver: Receiver
) -> None:
    a, b = cluster
    ann = await RoomClient.open(a.ws(""), "ann")
    bob = await RoomClient.open(b.ws(""), "bob")
    for client in (ann, bob):
        await client.join("r")
    sent = []
    for n in range(6):  # written by both processes, into one room
        sender = ann if n % 2 else bob
        await sender.say("r", f"m{n}")
        sent.append(f"m{n}")
    receiver.wait(lambda: len(messages(receiver)) >= 6)
    assert messages(receiver) == sent
    seqs = [e["event"]["seq"] for e in receiver.delivered() if e["type"] == "message.created"]
    assert seqs == sorted(seqs)

    # The receiver fails; both processes write more; one of them is killed (whichever
    # was delivering: if it was that one, the other takes over once its lease runs out).
    receiver.status = 503
    for n in range(6, 10):
        await (ann if n % 2 else bob).say("r", f"m{n}")
        sent.append(f"m{n}")
    receiver.wait(lambda: any(status == 503 for _, _, status in receiver.requests))
    a.signal(signal.SIGKILL)
    a.wait()
    receiver.status = 200
    receiver.wait(lambda: len(messages(receiver)) >= 10, timeout=TAKEOVER)
    assert messages(receiver) == sent  # each once by id, in order
    check_signed(receiver)
    await bob.close()
