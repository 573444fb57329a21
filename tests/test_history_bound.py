"""A ``history`` answer respects the outbox bound every broadcast respects (issue 12).

Each text below is 4000 x ``\\x01``: 4000 characters on the way in, 24 000 bytes once
JSON escapes them, so a modest room makes an unbounded answer megabytes long.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.rawws import RawWebSocket
from tests.roomclient import RoomClient
from tests.servers import ServerProcess

TIMEOUT = 30
HUGE = "\x01" * 4000  # the longest text (--max-text-chars), 24 000 bytes escaped
MEDIUM = "\x01" * 1000
ESCAPED_HUGE = 6 * len(HUGE) + 200  # its message frame: the text plus seq, from, ts…
ENVELOPE = 200  # {"type":"history","room":…,"messages":[…]} around the messages


async def fill(server: ServerProcess, room: str, texts: list[str]) -> None:
    """Post ``texts`` to ``room``, a few at a time, and wait for every ack. (Pipelined,
    the filler's own copies of hundreds of big messages can overflow its outbox on a
    busy machine, and it is closed as a slow consumer.)"""
    filler = await RoomClient.open(server.ws(""), "filler")
    await filler.join(room)
    window = 8
    for i, text in enumerate(texts):
        if i >= window:
            answered = i - window
            await filler.wait(
                lambda: sum(f["type"] in ("ack", "error") for f in filler.frames) > answered  # noqa: B023
            )
        await filler.send(type="send", room=room, text=text, ref=i)
    await filler.wait(
        lambda: sum(f["type"] in ("ack", "error") for f in filler.frames) >= len(texts)
    )
    assert not [f for f in filler.frames if f["type"] == "error"]
    await filler.close()


async def answer(ws: ClientConnection, frame: dict[str, Any], kind: str) -> str:
    """Send ``frame``; the raw text of the next server frame of type ``kind``."""
    await ws.send(json.dumps(frame))
    while True:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(raw, str)
        got = json.loads(raw)
        assert got["type"] != "error", got
        if got["type"] == kind:
            return raw


async def test_history_pages_stay_under_the_outbox_bound_and_page_through_everything(
    start_server: Callable[..., ServerProcess],
) -> None:
    outbox = 64 * 1024
    server = start_server(
        "--outbox-max-bytes", str(outbox), "--rate-per-second", "1000", "--rate-burst", "1000"
    )
    # Messages bigger than a page's budget, some of which a few fit in, and small ones.
    texts = [(HUGE, MEDIUM, f"small {i}")[i % 3] for i in range(60)]
    await fill(server, "big", texts)

    ws = await connect(server.ws("/v1/ws?name=reader"), max_size=None)
    await answer(ws, {"type": "join", "room": "big"}, "joined")
    seen: list[int] = []
    before: int | None = None
    pages = 0
    while True:
        request: dict[str, Any] = {"type": "history", "room": "big", "limit": 1000}
        if before is not None:
            request["before"] = before
        raw = await answer(ws, request, "history")
        size = len(raw.encode())
        messages = json.loads(raw)["messages"]
        if not messages:
            break
        pages += 1
        # A page holds what fits in a quarter of the outbox; a bigger message, alone.
        assert size <= outbox, (size, len(messages))
        if len(messages) > 1:
            assert size <= outbox // 4 + ENVELOPE, (size, len(messages))
        seqs = [m["seq"] for m in messages]
        assert seqs == sorted(seqs)
        assert before is None or seqs[-1] == before - 1  # nothing skipped between pages
        seen = seqs + seen
        before = seqs[0]
    assert seen == list(range(1, len(texts) + 1))  # every message, exactly once
    assert pages > 20  # 20 of them are pages of one
    await ws.close()


def peak_rss_kib(server: ServerProcess) -> int:
    """The server's highest resident memory since :func:`reset_peak_rss`."""
    status = Path(f"/proc/{server.pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match
    return int(match.group(1))


def reset_peak_rss(server: ServerProcess) -> None:
    """Start the peak (VmHWM) over at the current RSS (``clear_refs``, Linux ≥ 4.0)."""
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")


@pytest.mark.timeout(600)  # 400 big appends and 1000 answers: long on a busy machine
async def test_history_for_a_client_that_never_reads_is_bounded_and_starves_nobody(
    start_server: Callable[..., ServerProcess],
) -> None:
    outbox = 256 * 1024
    messages, stalled_count, asks = 400, 10, 100
    server = start_server(
        *("--outbox-max-bytes", str(outbox), "--rate-per-second", "1000", "--rate-burst", "1000"),
        *("--ping-interval", "2", "--ping-timeout", "5", "--close-timeout", "1"),
    )
    await fill(server, "big", [HUGE] * messages)
    pinger = await RoomClient.open(server.ws(""), "pinger")
    await pinger.join("big")
    reset_peak_rss(server)
    rss_before = server.rss_kib()

    # Each asks for the whole room (~9.6 MB as one answer) again and again, reads nothing.
    stalled: list[RawWebSocket] = []
    try:
        for i in range(stalled_count):
            stalled.append(RawWebSocket(server.port, f"/v1/ws?name=stalled{i}", rcvbuf=4096))
        for client in stalled:
            client.send_text(json.dumps({"type": "join", "room": "big"}))
            for _ in range(asks):
                client.send_text(json.dumps({"type": "history", "room": "big", "limit": 1000}))

        # Meanwhile the others are still served.
        mark = len(pinger.frames)
        await pinger.send(type="ping", ref="still there?")
        assert await pinger.next_of("pong", mark, ref="still there?")

        # Those that never read answer no ping either: each is closed for that (or
        # earlier as a slow consumer), by which time what it asked for has been dealt with.
        await asyncio.to_thread(
            server.wait_for_log, r"closing (slow consumer|conn .*: no pong)", 60, stalled_count
        )
        peak = peak_rss_kib(server)
        for client in stalled:
            _, code = await asyncio.to_thread(client.recv_until_close)
            assert code in (1008, 1011, None)
    finally:
        for client in stalled:
            client.close()
    print(f"server RSS {rss_before} KiB, peak {peak} KiB")

    # Per stalled client: its outbox (a page's frame holds its payload and its wire
    # bytes), the transport's 64 KiB high-water mark plus the page that crossed it, and
    # one store read in flight (50 rows); plus room for the allocator and SQLite.
    per_client = 2 * outbox + 2 * (outbox // 4) + 64 * 1024 + 50 * ESCAPED_HUGE
    bound = stalled_count * per_client + 24 * 1024 * 1024
    unbounded = stalled_count * messages * 6 * len(HUGE)  # one answer each, held
    assert bound < unbounded / 2
    assert (peak - rss_before) * 1024 < bound, (rss_before, peak, bound)

    mark = len(pinger.frames)
    await pinger.send(type="ping", ref="after")
    assert await pinger.next_of("pong", mark, ref="after")
    await pinger.close()


async def test_a_resume_backlog_waits_for_outbox_room_instead_of_overflowing_it(
    start_server: Callable[..., ServerProcess],
) -> None:
    # A backlog page of 200 rows was written in one go: 150 messages of 24 KB are 3.6 MB,
    # many times this outbox, so a resuming client that reads at its own pace (a small
    # receive window) was closed as a slow consumer before it could read them.
    server = start_server(
        "--outbox-max-bytes", str(128 * 1024), "--rate-per-second", "1000", "--rate-burst", "1000"
    )
    await fill(server, "big", [HUGE] * 150)
    reader = RawWebSocket(server.port, "/v1/ws?name=reader", rcvbuf=4096, timeout=TIMEOUT)
    reader.send_text(json.dumps({"type": "join", "room": "big", "since": 0}))
    seqs: list[int] = []
    while len(seqs) < 150:
        opcode, payload = reader.recv_frame()
        assert opcode == 1, (opcode, payload[:2], seqs[-1:])  # a close would be 8
        frame = json.loads(payload)
        if frame["type"] == "message":
            seqs.append(frame["seq"])
    assert seqs == list(range(1, 151))
    reader.close()
