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

    ping_due: bool
    """True from a ping until any pong."""

    def send_ping(self) -> None:
        """Write a ping frame."""

    def ping_timed_out(self) -> None:
        """No pong came in time: close."""


class Keepalive:
    """The sweep over a process's connections; it runs while any are registered."""

    __slots__ = ("_check", "_connections", "_loop", "_sweep", "interval", "timeout")

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._connections: set[Pingable] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._check: asyncio.TimerHandle | None = None

    def add(self, connection: Pingable) -> None:
        """Look after ``connection`` from the next sweep on."""
        self._connections.add(connection)
        if self._sweep is None:
            self._loop = asyncio.get_running_loop()
            self._sweep = self._loop.call_later(self.interval, self._ping_all)

    def discard(self, connection: Pingable) -> None:
        """Stop looking after ``connection``."""
        self._connections.discard(connection)
        if not self._connections:
            for handle in (self._sweep, self._check):
                if handle is not None:
                    handle.cancel()
            self._sweep = self._check = None

    def _ping_all(self) -> None:
        assert self._loop is not None
        self._sweep = self._loop.call_later(self.interval, self._ping_all)
        for connection in list(self._connections):
            if not connection.ping_due:
                connection.ping_due = True
                connection.send_ping()
        if self._check is None:
            self._check = self._loop.call_later(self.timeout, self._check_all)

    def _check_all(self) -> None:
        self._check = None
        for connection in [c for c in self._connections if c.ping_due]:
            connection.ping_timed_out()
