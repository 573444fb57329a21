"""Rooms used and left on another process leave nothing behind (issue 12, hole 6).

Two hubs in this process stand for two servers of one deployment (one store); they
share the machine's real Redis.
Other test servers may share that Redis too, so every check looks at this test's own
room and channel names only, and every wait is for an event, never for time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hubbub.auth import Identity
from hubbub.brokers import broker_from_url
from hubbub.brokers.remote import RemoteBroker
from hubbub.config import Settings
from hubbub.hub import Hub
from hubbub.outgoing import OutFrame
from hubbub.stores import store_from_url
from tests.services import service_url

TIMEOUT = 30
ROOMS = 200


class Watcher:
    """A connection stand-in that keeps every frame it is sent and can wait for one."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.payloads: list[bytes] = []
        self._changed = asyncio.Event()

    def send(self, frame: OutFrame) -> None:
        self.payloads.append(frame.payload)
        if frame.payload.startswith(b"{"):
            self.frames.append(json.loads(frame.payload))
        self._changed.set()

    async def finish(self) -> None:
        pass

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_presence(self, room: str, joined: str = "", left: str = "") -> None:
        def seen() -> bool:
            return any(
                f["type"] == "presence"
                and f["room"] == room
                and (not joined or joined in f["joined"])
                and (not left or left in f["left"])
                for f in self.frames
            )

        await self.wait(seen)


def guest(name: str) -> Identity:
    return Identity(user=f"guest:{name}", name=name, read=("*",), write=("*",), guest=True)


def no_announce(last: int, members: list[str]) -> None:
    pass


@pytest.fixture
async def make_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start a hub on the real Redis; every one started is stopped afterwards."""
    url = service_url("redis")
    started: list[Hub] = []

    async def make(**settings: Any) -> Hub:
        # One store file: one deployment, whose processes hear each other on the broker.
        hub = Hub(
            Settings(broker_url=url, **settings),
            broker_from_url(url),
            store_from_url(f"sqlite:///{tmp_path}/shared.db"),
        )
        await hub.start()
        started.append(hub)
        return hub

    yield make
    for hub in started:
        await hub.stop()


async def test_rooms_left_on_another_process_are_forgotten(make_hub: Callable[..., Any]) -> None:
    a: Hub = await make_hub()
    b: Hub = await make_hub()
    tag = secrets.token_hex(4)
    rooms = [f"churn-{tag}-{i}" for i in range(ROOMS)]
    marker = f"churn-{tag}-marker"
    watcher = Watcher()
    await a.join_room(watcher, marker, guest("watcher"), None, no_announce)  # type: ignore[arg-type]

    # Guests come and go on b, each in a room of its own, as a busy site's would.
    for i, room in enumerate(rooms):
        connection = Watcher()
        await b.join_room(connection, room, guest(f"g{i}"), None, no_announce)  # type: ignore[arg-type]
        assert await b.leave_room(connection, room)  # type: ignore[arg-type]
    # b's presence messages reach a in order: once a has seen this one, it has seen
    # every join and leave before it.
    last = Watcher()
    await b.join_room(last, marker, guest("last"), None, no_announce)  # type: ignore[arg-type]
    await watcher.wait_for_presence(marker, joined="last")

    assert all(a.presence.members(room) == {} for room in rooms)
    kept = [room for room in rooms if room in a.presence.remote]
    assert kept == [], f"{len(kept)} of {ROOMS} empty rooms still tracked, e.g. {kept[:3]}"
    assert a.presence.remote[marker] == {b.presence.node: {"guest:last": "last"}}

    # The last user of a room leaving makes the room go; its remaining users keep it.
    await b.leave_room(last, marker)  # type: ignore[arg-type]
    await watcher.wait_for_presence(marker, left="last")
    assert marker not in a.presence.remote
    assert a.presence.members(marker) == {"guest:watcher": "watcher"}


async def test_rooms_of_a_silent_process_are_forgotten(make_hub: Callable[..., Any]) -> None:
    a: Hub = await make_hub(presence_interval=0.2)
    b: Hub = await make_hub(presence_interval=0.2)
    room = f"churn-{secrets.token_hex(4)}-reaped"
    watcher = Watcher()
    await a.join_room(watcher, room, guest("watcher"), None, no_announce)  # type: ignore[arg-type]
    await b.join_room(Watcher(), room, guest("gone"), None, no_announce)  # type: ignore[arg-type]
    await watcher.wait_for_presence(room, joined="gone")
    # b stops without a word (as if killed): a drops its members after three intervals.
    await b.stop()
    await watcher.wait_for_presence(room, left="gone")
    assert room not in a.presence.remote


async def test_channels_left_forget_their_senders(make_hub: Callable[..., Any]) -> None:
    a: Hub = await make_hub()
    b: Hub = await make_hub()
    assert isinstance(a.broker, RemoteBroker)
    tag = secrets.token_hex(4)
    channels = {f"churn-{tag}-{i}" for i in range(ROOMS)}
    on_a, on_b = Watcher(), Watcher()
    for channel in channels:
        await a.join(channel, on_a)  # type: ignore[arg-type]
        await b.join(channel, on_b)  # type: ignore[arg-type]
        b.publish(channel, f"hello {channel}")
    await on_a.wait(lambda: len(on_a.payloads) == len(channels))

    def tracked() -> list[str]:
        assert isinstance(a.broker, RemoteBroker)
        return [c for c in a.broker._last_counter if c in channels]

    assert len(tracked()) == len(channels)  # one sender on each, while subscribed
    for channel in channels:
        await a.leave(channel, on_a)  # type: ignore[arg-type]
        await b.leave(channel, on_b)  # type: ignore[arg-type]
    kept = tracked()
    assert kept == [], f"{len(kept)} of {ROOMS} left channels still tracked"
