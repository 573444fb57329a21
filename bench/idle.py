"""Memory per idle connection: start ``hubbub serve``, open K connections, read its RSS.

    .venv/bin/python bench/idle.py                         # 10 000 on /v1/ws (guests)
    .venv/bin/python bench/idle.py --path '/ws/{i}'        # the tutorial's chat
    .venv/bin/python bench/idle.py --url ws://127.0.0.1:8000 --pid 1234

The server is pinned to CPU 0 when there are two CPUs or more (the clients run on the
others). RSS (``VmRSS``, summed over the server's processes) is read once the server
is ready and again 2 s after the last connection opened; KiB per connection is the
difference over K. The file-descriptor limit is raised to the hard limit (each
connection costs one descriptor on each side).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import sys
import tempfile
import time

import serverproc


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", type=int, default=10_000, help="connections")
    p.add_argument("--path", default="/v1/ws?name=u{i}", help="{i} is the connection's number")
    p.add_argument("--url", help="a running server (ws://host:port); then --pid is needed")
    p.add_argument("--pid", type=int, help="the running server's process id")
    p.add_argument("--port", type=int, default=18123)
    return p.parse_args()


async def open_idle(host: str, port: int, path: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    writer.write(request.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return writer  # never read again: the connection stays idle


async def measure(args: argparse.Namespace, host: str, port: int, pid: int) -> None:
    pids = serverproc.tree_pids(pid)
    before = serverproc.rss_kib(pids)
    limit = asyncio.Semaphore(100)
    writers: list[asyncio.StreamWriter] = []

    async def one(i: int) -> None:
        async with limit:
            writers.append(await open_idle(host, port, args.path.format(i=i)))

    await asyncio.gather(*(one(i) for i in range(args.k)))
    await asyncio.sleep(2)
    after = serverproc.rss_kib(pids)
    print(
        f"| {args.path} | {len(writers)} | {before / 1024:.1f} → {after / 1024:.1f} | "
        f"{(after - before) / args.k:.2f} |"
    )
    for writer in writers:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


def main() -> None:
    args = parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("| path | connections | server RSS MiB | KiB per connection |")
    print("|---|---|---|---|")
    if args.url:
        if args.pid is None:
            sys.exit("--url needs --pid (the server's process id, to read its memory)")
        host, _, port = args.url.removeprefix("ws://").partition(":")
        asyncio.run(measure(args, host, int(port), args.pid))
        return
    with tempfile.TemporaryDirectory(prefix="hubbub-idle-") as tmp:
        server = serverproc.start(args.port, "--store-url", f"sqlite:///{tmp}/idle.db")
        try:
            time.sleep(0.5)
            asyncio.run(measure(args, "127.0.0.1", args.port, server.pid))
        finally:
            serverproc.stop(server)


if __name__ == "__main__":
    main()
