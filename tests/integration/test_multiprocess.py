"""Several server processes sharing one real broker behave as one chat."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.chat import ChatClient
from tests.servers import ServerProcess
from tests.services import service_url


async def test_two_servers_are_one_chat(
    broker_name: str, start_server: Callable[..., ServerProcess]
) -> None:
    url = service_url(broker_name)
    a = start_server("--broker-url", url)
    b = start_server("--broker-url", url)
    one = await ChatClient.join(a.ws(""), 1)
    two = await ChatClient.join(b.ws(""), 2)
    three = await ChatClient.join(a.ws(""), 3)
    await one.say("hello from a")
    await one.wait_for("You wrote: hello from a", "Client #1 says: hello from a")
    for client in (two, three):
        await client.wait_for("Client #1 says: hello from a")
    await two.say("hello from b")
    for client in (one, two, three):
        await client.wait_for("Client #2 says: hello from b")
    for i in range(100):
        await two.say(f"burst {i}")
    await one.wait_for("Client #2 says: burst 99")
    assert one.said_by(2) == ["hello from b"] + [f"burst {i}" for i in range(100)]
    await two.close()
    for client in (one, three):
        await client.wait_for("Client #2 left the chat")
    await one.close()
    await three.wait_for("Client #1 left the chat")
    await three.close()
    for server in (a, b):
        assert server.readyz()["status"] == "ready"


async def test_workers_share_the_broker(
    broker_name: str, start_server: Callable[..., ServerProcess]
) -> None:
    url = service_url(broker_name)
    server = start_server("--broker-url", url, "--workers", "2")
    clients = [await ChatClient.join(server.ws(""), i) for i in range(12)]
    # Both workers answer (the kernel spreads connections over the processes' accepts).
    pids = {server.readyz()["pid"] for _ in range(40)}
    for client in clients:
        await client.say(f"hi from {client.client_id}")
    expected = [f"Client #{i} says: hi from {i}" for i in range(12)]
    for client in clients:
        await client.wait_for(*expected)
    for client in clients:
        await client.close()
    assert len(pids) == 2, pids
