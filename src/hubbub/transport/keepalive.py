"""Keepalive pings for every WebSocket of a process, from one timer.

uvicorn keeps a ping task or timer per connection; here one sweep every
``ping_interval`` pings every open connection, and a check ``ping_timeout`` later
closes those that sent no pong since. An idle connection costs a flag, not a timer.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Pingable(Protocol):
    """A connection the sweep looks after."""

    ping_due: int
    """The number of the sweep whose ping is unanswered; 0 after any pong."""

    def send_ping(self) -> None:
        """Write a ping frame."""

    def ping_timed_out(self) -> None:
        """No pong came in time: close."""


class Keepalive:
    """The sweep over a process's connections; it runs while any are registered.

    Each sweep pings the connections with no ping outstanding and, ``timeout`` later,
    checks exactly those: a ping sent by a later sweep is never judged by an earlier
    sweep's check, however ``interval`` and ``timeout`` line up.
    """

    __slots__ = (
        "_checks",
        "_connections",
        "_fixed_loop",
        "_loop",
        "_round",
        "_sweep",
        "interval",
        "timeout",
    )

    def __init__(
        self, interval: float, timeout: float, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self._connections: set[Pingable] = set()
        self._fixed_loop = loop  # for tests; else the running loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._checks: set[asyncio.TimerHandle] = set()
        self._round = 0

    def add(self, connection: Pingable) -> None:
        """Look after ``connection`` from the next sweep on."""
        self._connections.add(connection)
        if self._sweep is None:
            self._loop = self._fixed_loop or asyncio.get_running_loop()
            self._sweep = self._loop.call_later(self.interval, self._ping_all)

    def discard(self, connection: Pingable) -> None:
        """Stop looking after ``connection``."""
        self._connections.discard(connection)
        if not self._connections:
            if self._sweep is not None:
                self._sweep.cancel()
            for handle in self._checks:
                handle.cancel()
            self._sweep = None
            self._checks = set()

    def _ping_all(self) -> None:
        assert self._loop is not None
        self._sweep = self._loop.call_later(self.interval, self._ping_all)
        self._round += 1
        number = self._round
        pinged = [c for c in self._connections if not c.ping_due]
        for connection in pinged:
            connection.ping_due = number
            connection.send_ping()
        if pinged:
            handle: list[asyncio.TimerHandle] = []
            check = self._loop.call_later(self.timeout, self._check, number, pinged, handle)
            handle.append(check)
            self._checks.add(check)

    def _check(
        self, number: int, pinged: list[Pingable], handle: list[asyncio.TimerHandle]
    ) -> None:
        self._checks.discard(handle[0])
        for connection in pinged:
            # Still this sweep's ping unanswered (a pong resets it, a later ping renumbers).
            if connection.ping_due == number and connection in self._connections:
                connection.ping_timed_out()
