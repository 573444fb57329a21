"""Kill the broker while messages flow, bring it back: the chat heals by itself.

Runs against a private broker instance per test (never the machine's shared one).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.chat import ChatClient
from tests.integration.private import PrivateService, private
from tests.servers import ServerProcess


@pytest.fixture
def broker(broker_name: str, tmp_path: Path) -> Iterator[PrivateService]:
    service = private(broker_name, tmp_path)
    service.start()
    yield service
    service.stop()


def readyz(server: ServerProcess) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(server.http("/readyz"), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def log_line(server: ServerProcess, pattern: str, count: int = 1) -> None:
    await asyncio.to_thread(server.wait_for_log, pattern, 30.0, count)


def in_order(values: list[str], prefix: str) -> list[int]:
    numbers = [int(v[len(prefix) :]) for v in values if v.startswith(prefix)]
    assert numbers == sorted(set(numbers)), "out of order or duplicated"
    return numbers


async def test_broker_killed_and_restarted(
    broker: PrivateService, start_server: Callable[..., ServerProcess]
) -> None:
    args = ("--broker-url", broker.url, "--broker-backoff-max", "0.25")
    a = start_server(*args)
    b = start_server(*args)
    one = await ChatClient.join(a.ws(""), 1)
    two = await ChatClient.join(b.ws(""), 2)
    three = await ChatClient.join(a.ws(""), 3)
    await one.say("before")
    await two.wait_for("Client #1 says: before")

    # Kill the broker while #2 (on b) is streaming.
    async def stream() -> None:
        for i in range(200):
            await two.say(f"flow {i}")

    streaming = asyncio.create_task(stream())
    await one.wait_for("Client #2 says: flow 20")
    broker.kill()
    await streaming
    await log_line(a, "connection lost")
    await log_line(b, "connection lost")
    status, body = readyz(a)
    assert status == 503 and body["status"] == "not ready"

    # During the outage: local delivery keeps working, cross-process messages are kept.
    for i in range(30):
        await one.say(f"during {i}")
    await three.wait_for("Client #1 says: during 29")
    await two.wait_for("Client #2 says: flow 199")  # b's own clients got its whole stream

    broker.start()
    await log_line(a, "reconnected")
    await log_line(b, "reconnected")
    # What a published during the outage reaches b's client after reconnection, in order.
    await two.wait_for("Client #1 says: during 29")
    assert [m for m in two.said_by(1) if m.startswith("during")] == [
        f"during {i}" for i in range(30)
    ]
    # b's stream: everything sent after b knew the broker was gone arrives; all in order.
    await one.wait_for("Client #2 says: flow 199")
    await three.wait_for("Client #2 says: flow 199")  # its own socket: read on its own time
    assert in_order(one.said_by(2), "flow ")[-1] == 199
    assert in_order(three.said_by(2), "flow ")[-1] == 199

    # Channels were re-subscribed: new messages flow both ways.
    await two.say("after")
    await one.wait_for("Client #2 says: after")
    await three.wait_for("Client #2 says: after")
    await one.say("after too")
    await two.wait_for("Client #1 says: after too")
    for server in (a, b):
        status, body = readyz(server)
        assert status == 200
        broker_stats = body["broker"]
        assert isinstance(broker_stats, dict)
        assert broker_stats["reconnects"] == 1 and broker_stats["listener_errors"] == 1
    for client in (one, two, three):
        await client.close()


async def test_server_starts_while_the_broker_is_down(
    broker: PrivateService, start_server: Callable[..., ServerProcess]
) -> None:
    broker.kill()
    a = start_server("--broker-url", broker.url, "--broker-backoff-max", "0.25")
    await log_line(a, "unreachable")
    assert readyz(a)[0] == 503
    one = await ChatClient.join(a.ws(""), 1)  # local chat works without the broker
    await one.say("alone")
    await one.wait_for("Client #1 says: alone")
    broker.start()
    await log_line(a, "reconnected|connected")
    b = start_server("--broker-url", broker.url)
    two = await ChatClient.join(b.ws(""), 2)
    await two.say("hi")
    await one.wait_for("Client #2 says: hi")
    assert readyz(a)[0] == 200
    await one.close()
    await two.close()
