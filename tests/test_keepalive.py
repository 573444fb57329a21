"""The keepalive sweep on a loop whose clock the test moves: a peer that answers every
ping stays, however the interval and the timeout line up; a silent one is closed."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from hubbub.transport.keepalive import Keepalive


class FakeLoop:
    """call_later on a clock that only the test moves; same-time callbacks run in the
    order they were scheduled, as asyncio's do."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., Any], tuple[Any, ...], list[bool]]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any:
        cancelled = [False]
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), callback, args, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled[0] = True

        return Handle()

    def run_until(self, when: float) -> None:
        while self._queue and self._queue[0][0] <= when:
            at, _, callback, args, cancelled = heapq.heappop(self._queue)
            self.now = at
            if not cancelled[0]:
                callback(*args)
        self.now = when


class Peer:
    def __init__(self, loop: FakeLoop, answers_after: float | None) -> None:
        self.loop = loop
        self.answers_after = answers_after
        self.ping_due = 0
        self.timed_out = False

    def send_ping(self) -> None:
        if self.answers_after is not None:
            self.loop.call_later(self.answers_after, self._pong)

    def _pong(self) -> None:
        self.ping_due = 0

    def ping_timed_out(self) -> None:
        self.timed_out = True


def test_a_peer_that_answers_every_ping_stays_when_interval_equals_timeout() -> None:
    # The defaults (20 s, 20 s): the check for one sweep's pings must not judge the pings
    # the next sweep sent a moment before it.
    loop = FakeLoop()
    keepalive = Keepalive(20.0, 20.0, loop=loop)  # type: ignore[arg-type]
    peer = Peer(loop, answers_after=1.0)
    keepalive.add(peer)
    loop.run_until(300.0)
    assert not peer.timed_out


def test_a_silent_peer_is_closed_once_its_ping_is_older_than_the_timeout() -> None:
    loop = FakeLoop()
    keepalive = Keepalive(20.0, 5.0, loop=loop)  # type: ignore[arg-type]
    silent, chatty = Peer(loop, answers_after=None), Peer(loop, answers_after=4.0)
    keepalive.add(silent)
    keepalive.add(chatty)
    loop.run_until(24.0)
    assert not silent.timed_out  # pinged at 20, not 5 s old yet
    loop.run_until(25.5)
    assert silent.timed_out and not chatty.timed_out
