"""What ``--compression`` costs and saves: the same broadcast load with it off and on.

For each mode a fresh server (pinned to CPU 0, as in ``serverproc``) gets ``-n`` clients
on the tutorial chat (``/ws/{i}``, websockets' client, which offers permessage-deflate),
then one of them sends ``-m`` messages of about ``--size`` bytes of chat-like text; every
client must receive every broadcast. Printed per mode: server CPU µs per delivery, bytes
the server wrote per delivery (``/proc/PID/io`` wchar: what went to the sockets), and
the server's RSS per connection once they are all open and idle. Run on demand::

    .venv/bin/python bench/compression.py -n 200 -m 300 --size 600
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serverproc import cpu_seconds, rss_kib, start, stop, tree_pids

SENTENCE = (
    "the deploy went out at noon and the dashboard looks fine but latency on the eu "
    "cluster doubled can someone check the cache hit rate I think the new index helps"
)
WORDS = SENTENCE.split(" ")


def written_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                total += int(line.split()[1])
    return total


def chat_text(size: int, rng: random.Random) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(WORDS))
    return " ".join(words)


async def run(mode: str, args: argparse.Namespace) -> dict[str, float]:
    flags = ["--compression"] if mode == "on" else []
    server = start(args.port, *flags, "--store-url", "sqlite:////tmp/bench-compression.db")
    try:
        pids = tree_pids(server.pid)
        rss0 = rss_kib(pids)
        clients = [
            await connect(f"ws://127.0.0.1:{args.port}/ws/{i}", max_size=None)
            for i in range(args.n)
        ]
        await asyncio.sleep(1)
        rss1 = rss_kib(pids)
        rng = random.Random(7)
        texts = [chat_text(args.size, rng) for _ in range(args.m)]
        done = asyncio.Event()
        remaining = args.n * args.m

        async def reader(ws: object) -> None:
            nonlocal remaining
            async for message in ws:  # type: ignore[attr-defined]
                if isinstance(message, str) and message.startswith("Client #0 says:"):
                    remaining -= 1
                    if remaining == 0:
                        done.set()

        readers = [asyncio.create_task(reader(ws)) for ws in clients]
        cpu0, io0, t0 = cpu_seconds(pids), written_bytes(pids), time.monotonic()
        sender = clients[0]
        for i, text in enumerate(texts):
            await sender.send(text)
            if i % 10 == 9:
                await asyncio.sleep(0)
        await asyncio.wait_for(done.wait(), 300)
        cpu, io, wall = cpu_seconds(pids) - cpu0, written_bytes(pids) - io0, time.monotonic() - t0
        for task in readers:
            task.cancel()
        for ws in clients:
            await ws.close()
        deliveries = args.n * args.m
        return {
            "cpu_us_per_delivery": cpu / deliveries * 1e6,
            "bytes_per_delivery": io / deliveries,
            "idle_kib_per_conn": (rss1 - rss0) / args.n,
            "deliveries_per_s": deliveries / wall,
        }
    finally:
        stop(server)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=200, help="clients")
    p.add_argument("-m", type=int, default=300, help="messages broadcast")
    p.add_argument("--size", type=int, default=600, help="bytes of text per message")
    p.add_argument("--port", type=int, default=18124)
    args = p.parse_args()
    results = {mode: asyncio.run(run(mode, args)) for mode in ("off", "on")}
    print(f"{args.n} clients, {args.m} broadcasts of ~{args.size} bytes of chat text\n")
    print("| --compression | server CPU µs/delivery | bytes written/delivery | idle KiB/conn |")
    print("|---|---|---|---|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['cpu_us_per_delivery']:.2f} | {r['bytes_per_delivery']:.0f} | "
            f"{r['idle_kib_per_conn']:.1f} |"
        )
    off, on = results["off"], results["on"]
    print(
        f"\non/off: CPU {on['cpu_us_per_delivery'] / off['cpu_us_per_delivery']:.2f}x, "
        f"bytes {on['bytes_per_delivery'] / off['bytes_per_delivery']:.2f}x"
    )


if __name__ == "__main__":
    main()
