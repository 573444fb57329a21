"""One client that never reads must not cost anyone else a message, nor the server its memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect

from tests.rawws import OP_TEXT, RawWebSocket
from tests.servers import ServerProcess

HEALTHY = 10
MESSAGES = 2000
PAD = "p" * 16_000  # 2000 x 16 kB = 32 MB for each client
WINDOW = 10
TIMEOUT = 60


async def collect(
    ws: ClientConnection, count: int, got: list[str], progress: asyncio.Event | None = None
) -> None:
    while len(got) < count:
        message = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(message, str)
        if message.startswith("Client #0 says: "):
            got.append(message)
            if progress is not None:
                progress.set()


async def test_stalled_reader_is_closed_and_everyone_else_gets_everything(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--outbox-max-bytes", "262144")
    # Connected first, so it is first in every fan-out; a small receive buffer, never read.
    stalled = RawWebSocket(server.port, "/ws/999", rcvbuf=4096)
    rss_before = server.rss_kib()
    clients = [await connect(server.ws(f"/ws/{i}"), max_size=None) for i in range(1, HEALTHY)]
    sender = await connect(server.ws("/ws/0"), max_size=None)
    everyone = [sender, *clients]
    received: list[list[str]] = [[] for _ in everyone]
    readers = [
        asyncio.create_task(collect(ws, MESSAGES, got))
        for ws, got in zip(clients, received[1:], strict=True)
    ]
    own = received[0]
    progress = asyncio.Event()
    sender_reader = asyncio.create_task(collect(sender, MESSAGES, own, progress))
    for i in range(MESSAGES):
        while i - len(own) >= WINDOW:  # at most WINDOW of our broadcasts in flight
            progress.clear()
            await asyncio.wait_for(progress.wait(), TIMEOUT)
        await sender.send(f"{i}|{PAD}")
    await asyncio.wait_for(asyncio.gather(sender_reader, *readers), TIMEOUT)
    rss_after = server.rss_kib()
    print(f"server RSS {rss_before} -> {rss_after} KiB")

    expected = [f"Client #0 says: {i}|{PAD}" for i in range(MESSAGES)]
    for got in received:
        assert got == expected  # every message, in order, for every healthy client

    # The stalled client was told (1008) or, if not even that fitted, cut off (no close frame).
    server.wait_for_log("closing slow consumer")
    frames, code = stalled.recv_until_close()
    stalled.close()
    assert code in (1008, None)
    assert all(opcode == OP_TEXT for opcode, _ in frames)
    assert len(frames) < MESSAGES
    assert server.log.count("closing slow consumer") == 1
    # 32 MB went to a client that never read; the server kept at most its outbox and socket.
    assert rss_after - rss_before < 16 * 1024, (rss_before, rss_after)

    # Fan-out still works afterwards.
    await sender.send("after")
    for ws in everyone:
        while (message := await asyncio.wait_for(ws.recv(), TIMEOUT)) == "You wrote: after":
            pass
        assert message == "Client #0 says: after"
    for ws in everyone:
        await ws.close()
