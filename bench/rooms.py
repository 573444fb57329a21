"""Load test for Hubbub's rooms (``/v1/ws``): many rooms, many members, a steady rate.

Starts the servers itself (pinned to CPU 0 with ``taskset`` when there are two CPUs or
more; the load runs on the others), or talks to ``--url``. Every member of every room
checks what it receives: each message exactly once, in ``seq`` order.

    .venv/bin/python bench/rooms.py                                   # SQLite, 1 process
    .venv/bin/python bench/rooms.py --store-url postgresql://postgres@127.0.0.1/bench
    .venv/bin/python bench/rooms.py --workers 2 --broker-url redis://127.0.0.1:6379/0
    .venv/bin/python bench/rooms.py --profile results/rooms.svg       # py-spy flame graph

Prints one Markdown row: messages/s posted and acknowledged (= store appends/s),
deliveries/s, end-to-end latency (post → delivery to each member, one clock),
lost and duplicated deliveries, the server's CPU and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import serverproc
from websockets.asyncio.client import ClientConnection, connect

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (ws://host:port); default: start one")
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--members", type=int, default=20, help="members per room")
    p.add_argument("--rate", type=float, default=500.0, help="messages per second, all rooms")
    p.add_argument("--seconds", type=float, default=10.0, help="measured posting time")
    p.add_argument("--text-bytes", type=int, default=100)
    p.add_argument("--store-url", default=None, help="default: a fresh SQLite file")
    p.add_argument("--broker-url", default="memory://")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--profile", help="py-spy profile of the server: a flame graph (.svg) or stacks (.txt)"
    )
    return p.parse_args()


class Member:
    """One connection in one room; checks order and counts latency."""

    def __init__(self, ws: ClientConnection, room: str, last: int, latencies: list[float]) -> None:
        self.ws = ws
        self.room = room
        self.last = last  # the room's last seq when this member joined
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.latencies = latencies
        self.acks: dict[str, float] = {}
        self.acked = 0

    async def run(self) -> None:
        async for raw in self.ws:
            now = time.perf_counter()
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "message":
                seq = frame["seq"]
                if seq <= self.last:
                    self.duplicates += 1
                    continue
                if seq != self.last + 1:
                    self.gaps += seq - self.last - 1
                self.last = seq
                self.received += 1
                sent_at = float(frame["text"].split("|", 1)[0])
                self.latencies.append(now - sent_at)
            elif kind == "ack":
                self.acked += 1
            elif kind == "error":
                print(f"error frame: {frame}", file=sys.stderr)


def start_server(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    port = 18000 + os.getpid() % 1000
    store = args.store_url or f"sqlite:///{workdir}/bench.db"
    server = serverproc.start(
        port,
        "--workers", str(args.workers), "--broker-url", args.broker_url, "--store-url", store,
        "--rate-per-second", "100000", "--rate-burst", "100000",
        "--max-rooms-per-connection", "1000",
    )  # fmt: skip
    return server, f"ws://127.0.0.1:{port}"


async def load(args: argparse.Namespace, url: str, pids: list[int]) -> dict[str, object]:
    latencies: list[float] = []
    members: list[Member] = []
    sem = asyncio.Semaphore(100)

    async def join(room: str, index: int) -> Member:
        async with sem:
            ws = await connect(f"{url}/v1/ws?name=m{index}", max_size=None, ping_interval=None)
            await ws.send(json.dumps({"type": "join", "room": room}))
            while (answer := json.loads(await ws.recv()))["type"] != "joined":
                pass
            # A store that is not fresh (PostgreSQL) already has messages in the room.
            return Member(ws, room, answer["seq"], latencies)

    rooms = [f"bench-{i}" for i in range(args.rooms)]
    members = await asyncio.gather(*(join(room, i) for room in rooms for i in range(args.members)))
    readers = [asyncio.create_task(m.run()) for m in members]
    senders = [members[i * args.members] for i in range(args.rooms)]  # the first of each room
    pad = "x" * max(0, args.text_bytes - 20)
    interval = 1.0 / args.rate
    cpu_before, t0 = serverproc.cpu_seconds(pids), time.perf_counter()
    sent = 0
    deadline = t0 + args.seconds
    while (now := time.perf_counter()) < deadline:
        due = int((now - t0) / interval) + 1
        while sent < due:
            sender = senders[sent % len(senders)]
            text = f"{time.perf_counter():.6f}|{pad}"
            await sender.ws.send(json.dumps({"type": "send", "room": sender.room, "text": text}))
            sent += 1
        await asyncio.sleep(interval)
    expected = sent * args.members
    drain_deadline = time.perf_counter() + 30
    # A bench may poll its own counters; the deadline bounds it.
    while sum(m.received for m in members) < expected:
        if time.perf_counter() > drain_deadline:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    cpu = serverproc.cpu_seconds(pids) - cpu_before
    received = sum(m.received for m in members)
    for m in members:
        await m.ws.close()
    await asyncio.gather(*readers, return_exceptions=True)
    lat = sorted(latencies)
    return {
        "posted/s": sent / args.seconds,
        "acked": sum(m.acked for m in senders),
        "deliveries/s": received / elapsed,
        "p50 ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99 ms": 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan"),
        "lost": expected - received,
        "dup": sum(m.duplicates for m in members),
        "gaps": sum(m.gaps for m in members),
        "server cpu %": 100 * cpu / elapsed,
        "server RSS MiB": serverproc.rss_kib(pids) / 1024,
        "sent": sent,
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="hubbub-bench-") as tmp:
        server = None
        profiler = None
        if args.url:
            url, pids = args.url, []
        else:
            server, url = start_server(args, Path(tmp))
            pids = serverproc.tree_pids(server.pid)
        try:
            if args.profile and server is not None:
                py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                profiler = subprocess.Popen(
                    [py_spy, "record", "--subprocesses", "-o", args.profile,
                     "--format", "raw" if args.profile.endswith(".txt") else "flamegraph",
                     "--pid", str(server.pid), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            result = asyncio.run(load(args, url, pids))
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(30)
            if server is not None:
                serverproc.stop(server)
    store = args.store_url or "sqlite"
    label = (
        f"{args.rooms}x{args.members}, {args.rate:g}/s, {store.split(':')[0]}, "
        f"{args.broker_url.split(':')[0]}, {args.workers}w"
    )
    print("| run | " + " | ".join(result) + " |")
    print("|---" * (len(result) + 1) + "|")
    cells = [f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" for v in result.values()]
    print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
