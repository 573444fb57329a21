"""The nats-py names that ``hubbub.upstream`` reads without nats-py documenting them,
checked against the installed nats-py on a real server: each test fails with the name in
its message if an upgrade removes or changes it (see upstream.py's nats-py section)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib.metadata import version

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.transport import TcpTransport

from hubbub import upstream
from tests.services import service_url

TIMEOUT = 10
SUBJECT = "hubbub.upstream-test"


def changed(name: str, how: str) -> str:
    return (
        f"nats-py {version('nats-py')}: {name} {how}; hubbub.upstream relies on it "
        "(see its nats-py section)"
    )


@dataclass
class Connected:
    """A client connected the way the NATS broker connects, and its close callback."""

    nc: Client = field(default_factory=Client)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def connected() -> AsyncIterator[Connected]:
    client = Connected()

    async def on_closed() -> None:
        client.closed.set()

    await client.nc.connect(
        service_url("nats"),
        closed_cb=on_closed,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0,
        ping_interval=3600,
    )
    yield client
    if not client.nc.is_closed:
        await asyncio.wait_for(client.nc.close(), TIMEOUT)


async def test_client_flush_pending(connected: Connected) -> None:
    name = "Client._flush_pending"
    method = getattr(Client, name.split(".")[1], None)
    assert inspect.iscoroutinefunction(method), changed(name, "is gone or no coroutine")
    parameters = inspect.signature(method).parameters
    assert "force_flush" in parameters, changed(name, "takes no force_flush")
    nc = connected.nc
    for _ in range(100):
        await nc.publish(SUBJECT, bytes(1000))
    assert nc.pending_data_size > 0  # queued for nats-py's flusher, not written yet
    await asyncio.wait_for(upstream.nats_write_pending(nc), TIMEOUT)
    assert nc.pending_data_size == 0, changed(name, "returned before the flusher wrote")


@pytest.mark.parametrize("attribute", upstream.NATS_CLIENT_TASKS)
async def test_client_tasks(connected: Connected, attribute: str) -> None:
    name = f"Client.{attribute}"
    nc = connected.nc
    task = getattr(nc, attribute, None)
    assert isinstance(task, asyncio.Task), changed(name, "is gone or no asyncio.Task")
    assert not task.done(), changed(name, "is no task that runs while connected")
    assert task in upstream.nats_tasks(nc)
    await asyncio.wait_for(nc.close(), TIMEOUT)
    await asyncio.wait({task}, timeout=TIMEOUT)
    assert task.done(), changed(name, "is no task that ends with the connection")


async def test_subscription_wait_for_msgs_task(connected: Connected) -> None:
    name = "Subscription._wait_for_msgs_task"
    nc = connected.nc
    ran_in: list[asyncio.Task[object] | None] = []
    received = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        ran_in.append(asyncio.current_task())
        received.set()

    sub = await nc.subscribe(SUBJECT, cb=on_message)
    task = upstream.nats_subscription_task(sub)
    assert task is not None, changed(name, "is gone or no asyncio.Task")
    await nc.publish(SUBJECT, b"to myself")  # this client does not pass no_echo
    await asyncio.wait_for(received.wait(), TIMEOUT)
    assert ran_in == [task], changed(name, "is not the task that runs the callback")
    await sub.unsubscribe()
    await asyncio.wait({task}, timeout=TIMEOUT)
    assert task.done(), changed(name, "is no task that ends with its subscription")


async def test_client_transport(connected: Connected) -> None:
    transport = getattr(connected.nc, "_transport", None)
    assert isinstance(transport, TcpTransport), changed(
        "Client._transport", "is gone or no TcpTransport on a nats:// connection"
    )


async def test_tcp_transport_io_writer(connected: Connected) -> None:
    name = "TcpTransport._io_writer"
    nc = connected.nc
    writer = getattr(nc._transport, "_io_writer", None)
    assert isinstance(writer, asyncio.StreamWriter), changed(name, "is gone or no StreamWriter")
    upstream.nats_abort(nc)
    assert writer.transport.is_closing(), changed(name, "does not own the client's socket")
    # The client finds its socket gone and closes, as after any lost connection.
    await asyncio.wait_for(connected.closed.wait(), TIMEOUT)
