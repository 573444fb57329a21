"""A store that measures another: every operation's duration goes to the metrics."""

from __future__ import annotations

import time

from hubbub.metrics import Metrics
from hubbub.protocol import Message
from hubbub.stores.base import Store


class TimedStore(Store):
    """Wraps ``inner``; observes ``hubbub_store_operation_seconds{op=...}`` per call."""

    def __init__(self, inner: Store, metrics: Metrics) -> None:
        super().__init__(inner.url, inner.retention)
        self.inner = inner
        seconds = metrics.store_seconds
        self._append = seconds.labels(op="append")
        self._read = seconds.labels(op="read")
        self._last_seq = seconds.labels(op="last_seq")
        self._rooms = seconds.labels(op="rooms")

    async def start(self) -> None:
        await self.inner.start()
        self._deployment = self.inner.deployment

    async def stop(self) -> None:
        await self.inner.stop()

    async def append(self, room: str, sender: str, text: str, ts: str) -> Message:
        start = time.perf_counter()
        try:
            return await self.inner.append(room, sender, text, ts)
        finally:
            self._append.observe(time.perf_counter() - start)

    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[Message]:
        start = time.perf_counter()
        try:
            return await self.inner.read(room, after=after, before=before, limit=limit)
        finally:
            self._read.observe(time.perf_counter() - start)

    async def last_seq(self, room: str) -> int:
        start = time.perf_counter()
        try:
            return await self.inner.last_seq(room)
        finally:
            self._last_seq.observe(time.perf_counter() - start)

    async def rooms(self) -> list[tuple[str, int]]:
        start = time.perf_counter()
        try:
            return await self.inner.rooms()
        finally:
            self._rooms.observe(time.perf_counter() - start)
