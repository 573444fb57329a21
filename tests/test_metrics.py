"""``/metrics`` on real servers: each counter moves by exactly what the clients did."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.rawws import RawWebSocket
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import service_url

TIMEOUT = 30

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerProcess) -> Samples:
    """Every sample of ``/metrics``, keyed by name and sorted labels."""
    with urllib.request.urlopen(server.http("/metrics"), timeout=TIMEOUT) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Scrapes:
    """Two scrapes of one server, and the difference of any sample between them."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before = before
        self.after = after

    def delta(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)


def wire_size(text: str) -> int:
    """Bytes of the unmasked server frame carrying ``text``."""
    n = len(text.encode())
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


async def receive_until(ws: ClientConnection, last: str, got: list[str]) -> None:
    """Append every message to ``got`` until ``last`` has arrived."""
    while True:
        message = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(message, str)
        got.append(message)
        if message == last:
            return


async def test_chat_counts_connections_frames_bytes_and_close_codes(
    server: ServerProcess,
) -> None:
    before = scrape(server)
    received: list[str] = []  # by every client, in any order
    # The observer stays connected: each "left the chat" it hears is sent after the hub
    # has counted that close, so nothing is still in flight when we scrape.
    observer = await connect(server.ws("/ws/0"))
    await observer.send("ready")
    await receive_until(observer, "Client #0 says: ready", received)
    one = await connect(server.ws("/ws/1"))
    await one.send("hello")
    await receive_until(one, "Client #1 says: hello", received)
    await receive_until(observer, "Client #1 says: hello", received)
    binary = await connect(server.ws("/ws/2"))
    await binary.send(b"\x00\x01")
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(binary.recv(), TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    await receive_until(one, "Client #2 left the chat", received)
    await receive_until(observer, "Client #2 left the chat", received)
    await one.close()
    await receive_until(observer, "Client #1 left the chat", received)
    m = Scrapes(before, scrape(server))

    assert m.delta("hubbub_connections_opened_total") == 3
    assert m.delta("hubbub_connections_open") == 1
    assert m.delta("hubbub_connections_closed_total", code="1000") == 1
    assert m.delta("hubbub_connections_closed_total", code="1003") == 1
    assert m.delta("hubbub_frames_in_total") == 3  # "ready", "hello", the binary frame
    assert len(received) == 8
    assert m.delta("hubbub_frames_out_total") == len(received)
    assert m.delta("hubbub_bytes_out_total") == sum(wire_size(t) for t in received)
    assert m.delta("hubbub_messages_published_total") == 4  # 2 said, 2 left
    assert m.delta("hubbub_slow_consumers_total") == 0
    assert m.delta("hubbub_outbox_peak_frames_count") == 2
    assert m.delta("hubbub_outbox_peak_frames_bucket", le="0.0") == 2  # never queued
    assert m.after[("hubbub_broker_connected", ())] == 1
    await observer.close()


async def test_rooms_count_frames_store_operations_and_delivery_latency(
    server: ServerProcess,
) -> None:
    before = scrape(server)
    url = server.ws("")
    pat = await RoomClient.open(url, "pat")
    await pat.join("r")
    quinn = await RoomClient.open(url, "quinn")
    await quinn.join("r")
    await pat.next_of("presence", joined=["quinn"])
    for client in (pat, quinn):  # each one's first join puts the room in its list
        await client.next_of("membership", room="r", member=True)
    await pat.say("r", "one")
    await pat.say("r", "two")
    await quinn.has_seqs("r", 2)
    await pat.send(type="history", room="r")
    page = await pat.next_of("history", room="r")
    assert [m["text"] for m in page["messages"]] == ["one", "two"]
    await quinn.send(type="typing", room="r")
    await pat.next_of("typing", room="r")
    m = Scrapes(before, scrape(server))

    assert m.delta("hubbub_connections_opened_total") == 2
    assert m.delta("hubbub_connections_open") == 2
    assert m.delta("hubbub_frames_in_total") == 6  # 2 joins, 2 sends, 1 history, 1 typing
    # welcome, joined, membership, presence, 2 x (message, ack), history, typing;
    # welcome, joined, membership, 2 messages: pushes and signals count as well
    assert len(pat.frames) + len(quinn.frames) == 15
    assert m.delta("hubbub_frames_out_total") == 15
    assert m.delta("hubbub_messages_published_total") == 2
    assert m.delta("hubbub_store_operation_seconds_count", op="append") == 2
    assert m.delta("hubbub_store_operation_seconds_count", op="read") == 1
    assert m.delta("hubbub_delivery_latency_seconds_count") == 2
    assert m.delta("hubbub_delivery_latency_seconds_sum") >= 0
    await pat.close()
    await quinn.close()


async def test_a_slow_consumer_is_counted_with_its_outbox_peak(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--outbox-max-messages", "3")
    before = scrape(server)
    stalled = RawWebSocket(server.port, "/ws/999", rcvbuf=4096)  # never reads
    sender = await connect(server.ws("/ws/0"), max_size=None)
    pad = "p" * 4000
    got: list[str] = []
    for i in range(5000):  # far more than the stalled client's buffers can take
        await sender.send(f"{i}|{pad}")
        await receive_until(sender, f"Client #0 says: {i}|{pad}", got)
        if "Client #999 left the chat" in got:
            break
    else:
        raise AssertionError("the stalled client was never closed")
    stalled.close()
    m = Scrapes(before, scrape(server))

    assert m.delta("hubbub_slow_consumers_total") == 1
    assert m.delta("hubbub_connections_closed_total", code="1008") == 1
    # 3 frames waited, the 4th did not fit: the peak is the limit plus one.
    assert m.delta("hubbub_outbox_peak_frames_count") == 1
    assert m.delta("hubbub_outbox_peak_frames_sum") == 4
    assert m.delta("hubbub_outbox_peak_frames_bucket", le="1.0") == 0
    assert m.delta("hubbub_outbox_peak_frames_bucket", le="4.0") == 1
    server.wait_for_log("closing slow consumer")
    await sender.close()


async def test_with_workers_a_scrape_adds_up_every_process(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--workers", "2", "--broker-url", service_url("redis"))
    clients: list[ClientConnection] = []
    per_pid: dict[object, object] = {}
    # Open echo connections until both workers hold some (the kernel spreads accepts).
    while len(clients) < 64:
        for _ in range(4):
            ws = await connect(server.ws("/ws"))
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "Message text was: hi"
            clients.append(ws)
        per_pid = {}
        for _ in range(100):  # whichever worker answers tells its own count
            body = server.readyz()
            per_pid[body["pid"]] = body["connections"]
            if len(per_pid) == 2:
                break
        if len(per_pid) == 2 and all(count for count in per_pid.values()):
            break
    counts = [int(str(count)) for count in per_pid.values()]
    print(f"connections per worker: {per_pid}")
    assert len(counts) == 2 and min(counts) > 0, per_pid
    assert sum(counts) == len(clients)

    samples = scrape(server)  # answered by one worker, about both
    assert samples[("hubbub_connections_opened_total", ())] == len(clients)
    assert samples[("hubbub_connections_open", ())] == len(clients)
    assert samples[("hubbub_frames_in_total", ())] == len(clients)
    assert samples[("hubbub_frames_out_total", ())] == len(clients)
    assert samples[("hubbub_broker_connected", ())] == 1
    for ws in clients:
        await ws.close()
