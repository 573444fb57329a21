"""Process metrics on ``/metrics`` (CPU seconds, resident memory, open file descriptors
and their limit), for one process and, labelled by ``pid``, for each of ``--workers N``;
and the live workers' gauges after one of them was killed. Real server processes."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from tests.servers import ServerProcess
from tests.services import service_url

TIMEOUT = 30
PROCESS_SERIES = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
)

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(server: ServerProcess) -> Samples:
    """name → {sorted labels → value} of every sample of ``/metrics``."""
    with urllib.request.urlopen(server.http("/metrics"), timeout=TIMEOUT) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def by_pid(samples: Samples, name: str) -> dict[int, float]:
    return {int(dict(labels)["pid"]): value for labels, value in samples[name].items()}


async def echo(server: ServerProcess) -> ClientConnection:
    ws = await connect(server.ws("/ws"))
    await ws.send("hi")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "Message text was: hi"
    return ws


async def spread(server: ServerProcess, clients: list[ClientConnection]) -> dict[int, int]:
    """Open echo connections until each of the two workers holds some; connections per
    worker pid, as each worker tells (the kernel spreads the accepts)."""
    held: dict[int, int] = {}
    while len(clients) < 64:
        clients.extend([await echo(server) for _ in range(4)])
        held = {}
        for _ in range(100):  # whichever worker answers tells its own count
            body = server.readyz()
            held[int(body["pid"])] = int(body["connections"])
            if len(held) == 2:
                break
        if len(held) == 2 and all(held.values()):
            break
    assert len(held) == 2 and all(held.values()), held
    return held


async def test_one_process_exposes_its_cpu_memory_and_descriptors(server: ServerProcess) -> None:
    before = scrape(server)
    for name in PROCESS_SERIES:
        ((labels, _),) = before[name].items()
        assert labels == (), name  # one process: the usual unlabelled series
    assert before["hubbub_workers"] == {(): 1.0}
    clients = [await echo(server) for _ in range(20)]
    after = scrape(server)
    # Each WebSocket is one more descriptor of the server's.
    assert after["process_open_fds"][()] - before["process_open_fds"][()] >= len(clients)
    # The limit is the one it inherited from us (what LimitNOFILE sets under systemd).
    assert after["process_max_fds"][()] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert after["process_cpu_seconds_total"][()] > 0
    rss = after["process_resident_memory_bytes"][()]
    assert 0.5 < rss / (server.rss_kib() * 1024) < 2
    for ws in clients:
        await ws.close()


async def test_each_worker_has_its_own_process_series(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--workers", "2", "--broker-url", service_url("redis"))
    clients: list[ClientConnection] = []
    held = await spread(server, clients)
    samples = scrape(server)  # answered by one worker, about both
    assert set(by_pid(samples, "hubbub_workers")) == set(held)
    for name in PROCESS_SERIES:
        assert set(by_pid(samples, name)) == set(held), name
    open_fds = by_pid(samples, "process_open_fds")
    for pid, connections in held.items():
        assert open_fds[pid] >= connections  # each worker's own sockets
        assert by_pid(samples, "process_cpu_seconds_total")[pid] > 0
    # The sums over workers stay unlabelled.
    assert samples["hubbub_connections_open"] == {(): float(len(clients))}
    for ws in clients:
        await ws.close()


async def test_a_killed_worker_leaves_no_live_series_behind(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--workers", "2", "--broker-url", service_url("redis"))
    clients: list[ClientConnection] = []
    held = await spread(server, clients)
    killed, kept = sorted(held)
    os.kill(killed, signal.SIGKILL)  # no shutdown: its files stay in the metrics folder
    # uvicorn starts another worker in its place.
    server.wait_for_log(r"Application startup complete", TIMEOUT, count=3)
    samples = scrape(server)
    pids = set(by_pid(samples, "hubbub_workers"))
    assert kept in pids and killed not in pids and len(pids) == 2, pids  # the new one
    assert set(by_pid(samples, "process_open_fds")) == pids
    # The dead worker's connections went with it: only the kept worker's count.
    assert samples["hubbub_connections_open"] == {(): float(held[kept])}
    for ws in clients:
        await ws.close()
