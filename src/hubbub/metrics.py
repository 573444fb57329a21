"""Prometheus metrics: one :class:`Metrics` per application, served at ``/metrics``.

Each app builds its own :class:`Metrics` (with its own ``CollectorRegistry``) and hands
it to what counts. Hot paths count a broadcast once (``inc(n)``), never once per
recipient.

With several worker processes (``hubbub serve --workers N``) the values live in
prometheus-client's multiprocess files under ``PROMETHEUS_MULTIPROC_DIR``, which
``hubbub serve`` creates before it starts the workers; a scrape, answered by any one
worker, adds up the files of all of them. prometheus-client decides between the two
modes when it is first imported, from that variable; :class:`Metrics` follows the same
variable.

Process metrics (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_open_fds``, ``process_max_fds``, …) are prometheus-client's
``ProcessCollector``'s. Its gauges have no multiprocess files, so with several workers the
worker that answers a scrape reads every live worker's ``/proc/<pid>`` itself and labels
each series with that worker's ``pid`` (the label of prometheus-client's own ``liveall``
gauges); it finds the workers by one of those, ``hubbub_workers``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

# Seconds; ts in messages has millisecond resolution, so nothing finer than 1 ms.
DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# Frames; 0 is a client whose frames all went straight into its socket.
OUTBOX_BUCKETS = (0, 1, 4, 16, 64, 256, 1024, 4096, 16384)


class Metrics:
    """Every metric of one Hubbub application, in a registry of its own."""

    def __init__(self, multiprocess: bool | None = None) -> None:
        self.multiprocess = (
            bool(os.environ.get(MULTIPROC_DIR)) if multiprocess is None else multiprocess
        )
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if not self.multiprocess:  # with several workers, render() reads each one's
            ProcessCollector(registry=r)
        self.workers = Gauge(
            "hubbub_workers",
            "1 per live server process (with --workers N: one series per worker, by pid).",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.workers.set(1)
        self.connections_open = Gauge(
            "hubbub_connections_open",
            "WebSocket connections open now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_opened = Counter(
            "hubbub_connections_opened",
            "WebSocket connections accepted (including those then refused with 1013).",
            registry=r,
        )
        self.connections_closed = Counter(
            "hubbub_connections_closed",
            "WebSocket connections closed, by close code.",
            ["code"],
            registry=r,
        )
        self.frames_in = Counter(
            "hubbub_frames_in", "Data frames received from clients.", registry=r
        )
        self.frames_out = Counter(
            "hubbub_frames_out", "Text frames handed to client connections.", registry=r
        )
        self.bytes_out = Counter(
            "hubbub_bytes_out",
            "Wire bytes of the text frames handed to client connections.",
            registry=r,
        )
        self.messages_published = Counter(
            "hubbub_messages_published",
            "Messages published by this process (chat channels and rooms).",
            registry=r,
        )
        self.slow_consumers = Counter(
            "hubbub_slow_consumers",
            "Clients closed (1008) because their outbox overflowed.",
            registry=r,
        )
        self.outbox_peak = Histogram(
            "hubbub_outbox_peak_frames",
            "Most frames a connection ever had waiting in its outbox, observed when it closes.",
            buckets=OUTBOX_BUCKETS,
            registry=r,
        )
        self.broker_connected = Gauge(
            "hubbub_broker_connected",
            "1 while the broker is connected (with several workers: all of them), else 0.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.broker_reconnects = Counter(
            "hubbub_broker_reconnects", "Reconnections to the broker after a loss.", registry=r
        )
        self.broker_dropped = Counter(
            "hubbub_broker_dropped",
            "Publishes dropped because the broker's outbound buffer was full.",
            registry=r,
        )
        self.broker_foreign = Counter(
            "hubbub_broker_foreign",
            "Broker messages of another deployment (another epoch) on the same broker, dropped.",
            registry=r,
        )
        self.webhook_delivered = Counter(
            "hubbub_webhook_delivered",
            "Webhook events a receiver answered with a 2xx, by URL.",
            ["url"],
            registry=r,
        )
        self.webhook_failed = Counter(
            "hubbub_webhook_failed",
            "Webhook tries that failed (another status, no connection, no answer in time).",
            ["url"],
            registry=r,
        )
        self.webhook_queued = Gauge(
            "hubbub_webhook_queued",
            "Webhook events waiting in the outbox, as the delivering process last counted.",
            ["url"],
            registry=r,
            multiprocess_mode="max",
        )
        self.webhook_oldest = Gauge(
            "hubbub_webhook_oldest_seconds",
            "Age of the oldest webhook event waiting, as the delivering process last saw it.",
            ["url"],
            registry=r,
            multiprocess_mode="max",
        )
        self.task_failures = Counter(
            "hubbub_task_failures",
            "Background tasks of the hub that raised, by task; a long-running one (the "
            "presence heartbeat) is restarted.",
            ["task"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "hubbub_store_operation_seconds",
            "Time taken by store operations, by operation.",
            ["op"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "hubbub_delivery_latency_seconds",
            "Room messages: from the message's ts to its hand-out to this process's members.",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self._closed_by_code: dict[int | None, Counter] = {}

    # -- counting ------------------------------------------------------------------

    def sent(self, frames: int, size: int) -> None:
        """``frames`` frames of ``size`` wire bytes in all were handed to connections."""
        self.frames_out.inc(frames)
        self.bytes_out.inc(size)

    def opened(self) -> None:
        """A WebSocket handshake was accepted."""
        self.connections_opened.inc()
        self.connections_open.inc()

    def closed(self, code: int | None, outbox_peak: int) -> None:
        """A connection is gone, with close ``code`` (None: unknown)."""
        child = self._closed_by_code.get(code)
        if child is None:
            label = "unknown" if code is None else str(code)
            child = self._closed_by_code[code] = self.connections_closed.labels(code=label)
        child.inc()
        self.connections_open.dec()
        self.outbox_peak.observe(outbox_peak)

    def delivered(self, ts: str) -> None:
        """A room message stamped ``ts`` (ISO 8601 UTC) was handed to the members."""
        try:
            stamped = datetime.fromisoformat(ts).timestamp()
        except ValueError:
            return
        # Clocks of different machines may disagree; a negative latency is counted as 0.
        self.delivery_seconds.observe(max(0.0, time.time() - stamped))

    # -- exposition ----------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text, or OpenMetrics if ``accept`` asks for it) and its
        content type; with several workers, the sum over all of them."""
        encoder, content_type = choose_encoder(accept)
        if not self.multiprocess:
            return encoder(self.registry), content_type
        families = self._collect_workers()
        families.extend(WorkerProcesses(worker_pids(families)).collect())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collected(families))
        return encoder(registry), content_type

    def _collect_workers(self) -> list[Metric]:
        collector = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        families: list[Metric] = list(collector.collect())  # type: ignore[no-untyped-call]
        # A worker that died without its shutdown (SIGKILL, a crash; uvicorn starts
        # another) leaves its live gauges' files: forget them, or its connections
        # would count as open for ever.
        dead = [pid for pid in worker_pids(families) if not _alive(pid)]
        if not dead:
            return families
        for pid in dead:
            # OSError: another worker's scrape removed them first.
            with contextlib.suppress(OSError):
                mark_process_dead(pid)  # type: ignore[no-untyped-call]
        return list(collector.collect())  # type: ignore[no-untyped-call]

    def process_exited(self) -> None:
        """Forget this process's live gauges (multiprocess mode); call it on shutdown."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def worker_pids(families: Iterable[Metric]) -> list[int]:
    """The pids of the workers in a multiprocess collection (``hubbub_workers{pid}``)."""
    return sorted(
        int(sample.labels["pid"])
        for family in families
        if family.name == "hubbub_workers"
        for sample in family.samples
        if sample.labels.get("pid", "").isdigit()
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a process of another user
        return True
    return True


def _returning(pid: int) -> Callable[[], int]:
    return lambda: pid


class WorkerProcesses(Collector):
    """``ProcessCollector``'s metrics of each of ``pids`` (read from ``/proc/<pid>``),
    every series labelled with its ``pid``."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)

    def collect(self) -> list[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.pids:
            collector = ProcessCollector(pid=_returning(pid), registry=None)
            for family in collector.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(merged.values())


class Collected(Collector):
    """Families collected already, to be encoded."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families
