"""Who is in each room, across every process that shares the broker.

Each process owns the entries of its own connections and tells the others on one
broker channel: ``join``/``leave`` deltas, a ``snap`` (its member list of a room)
whenever another process ``ask``s (at its start, and after a broker outage), and a
``beat`` every ``interval`` seconds. Every process thus knows every room's members,
so any of them can answer who is where (the HTTP API asks any process). A process
not heard from for three intervals (killed, partitioned) has its entries dropped by
everyone, so its members leave within a bounded time without anyone saying goodbye.
A user counts once per room however many connections (tabs) it has, and leaves with
the last of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

logger = logging.getLogger("hubbub.presence")

PRESENCE_CHANNEL = "presence:~"  # "~" cannot appear in a room name

Announce = Callable[[str, list[tuple[str, str]], list[tuple[str, str]]], None]
"""``announce(room, joined, left)``: tell the room's local members; each a list of
``(user, name)``, by name."""


# Rooms whose name starts with this are bookkeeping (the hub's "~online"), not rooms:
# nobody is told who comes and goes, so nothing compares their member lists.
QUIET = "~"


class Event(msgspec.Struct, omit_defaults=True):
    """One presence message between processes."""

    kind: str  # join | leave | snap | ask | beat
    node: str
    room: str = ""
    user: str = ""
    name: str = ""
    members: dict[str, str] = {}


class Local:
    """A user of this process in one room, and how many connections it has there."""

    __slots__ = ("connections", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0


class Presence:
    """This process's view of every room's members (see the module doc)."""

    def __init__(
        self,
        node: str,
        publish: Callable[[str, bytes], None],
        announce: Announce,
        interval: float,
    ) -> None:
        self.node = node
        self.interval = interval
        self.ttl = 3 * interval
        self._publish = publish
        self._announce = announce
        self.local: dict[str, dict[str, Local]] = {}  # room -> user -> name, connections
        self.remote: dict[str, dict[str, dict[str, str]]] = {}  # room -> node -> user -> name
        self.seen: dict[str, float] = {}  # node -> when last heard
        self._encode = msgspec.json.Encoder().encode
        self._decoder = msgspec.json.Decoder(Event)

    # -- queries -----------------------------------------------------------------------

    def members(self, room: str) -> dict[str, str]:
        """Every user in ``room`` on any live process: user id → display name."""
        found = {user: entry.name for user, entry in self.local.get(room, {}).items()}
        deadline = time.monotonic() - self.ttl
        for node, users in self.remote.get(room, {}).items():
            if self.seen.get(node, 0.0) >= deadline:
                found.update(users)
        return found

    def has(self, room: str, user: str) -> bool:
        """Whether ``user`` is in ``room`` on any live process (a look per process, not
        per member)."""
        if user in self.local.get(room, {}):
            return True
        deadline = time.monotonic() - self.ttl
        return any(
            user in users and self.seen.get(node, 0.0) >= deadline
            for node, users in self.remote.get(room, {}).items()
        )

    # -- this process's members -------------------------------------------------------

    async def add(self, room: str, user: str, name: str) -> None:
        """One more connection of ``user`` in ``room``."""
        quiet = room.startswith(QUIET)
        new = not quiet and not self.has(room, user)
        entry = self.local.setdefault(room, {}).setdefault(user, Local(name))
        entry.connections += 1
        if entry.connections == 1:
            await self._send(Event("join", self.node, room, user, name))
        if new:
            self._announce(room, [(user, name)], [])

    async def remove(self, room: str, user: str) -> None:
        """One connection fewer of ``user`` in ``room``."""
        users = self.local.get(room, {})
        entry = users.get(user)
        if entry is None:
            return
        entry.connections -= 1
        if entry.connections > 0:
            return
        del users[user]
        if not users:
            del self.local[room]
        await self._send(Event("leave", self.node, room, user))
        if not room.startswith(QUIET) and not self.has(room, user):
            self._announce(room, [], [(user, entry.name)])

    async def rename(self, room: str, user: str, name: str) -> None:
        """``user``'s display name in ``room`` is ``name`` from now on (a ``refresh``)."""
        entry = self.local.get(room, {}).get(user)
        if entry is None or entry.name == name:
            return
        old, entry.name = entry.name, name
        await self._send(Event("join", self.node, room, user, name))  # others overwrite
        self._announce(room, [(user, name)], [(user, old)])

    async def resync(self) -> None:
        """At start and after a broker outage: tell our members again, and ask every
        other process for theirs."""
        for room in list(self.local):
            await self._send(self._snapshot(room))
        await self._send(Event("ask", self.node))

    # -- the others --------------------------------------------------------------------

    def on_message(
        self, payload: bytes, spawn: Callable[[Coroutine[Any, Any, None]], None]
    ) -> None:
        """A presence message from another process."""
        try:
            event = self._decoder.decode(payload)
        except msgspec.DecodeError:
            logger.warning("dropped an undecodable presence message")
            return
        self.seen[event.node] = time.monotonic()
        if event.kind == "beat":
            return
        room = event.room
        if event.kind == "ask":
            for asked in list(self.local) if not room else [room] if room in self.local else []:
                spawn(self._send(self._snapshot(asked)))
            return
        quiet = room.startswith(QUIET)  # nobody is told: no member lists to compare
        before = {} if quiet else self.members(room)
        nodes = self.remote.setdefault(room, {})
        if event.kind == "join":
            nodes.setdefault(event.node, {})[event.user] = event.name
        elif event.kind == "leave":
            nodes.get(event.node, {}).pop(event.user, None)
        elif event.kind == "snap":
            nodes[event.node] = dict(event.members)
        # Room names come and go: an entry left empty is forgotten, or memory grows
        # with every room ever used on another process.
        if not nodes.get(event.node, True):
            del nodes[event.node]
        if not nodes:
            del self.remote[room]
        if not quiet:
            self._tell(room, before)

    async def run(self) -> None:
        """Heartbeat and reaper; runs until cancelled."""
        while True:
            await self._send(Event("beat", self.node))
            self.reap()
            await asyncio.sleep(self.interval)

    def reap(self) -> None:
        """Drop the entries of processes not heard from for three intervals."""
        deadline = time.monotonic() - self.ttl
        dead = {node for node, when in self.seen.items() if when < deadline}
        if not dead:
            return
        for node in dead:
            del self.seen[node]
        for room, nodes in list(self.remote.items()):
            if dead & nodes.keys():
                quiet = room.startswith(QUIET)
                before = {} if quiet else self.members_including(room, dead)
                for node in dead:
                    nodes.pop(node, None)
                if not nodes:
                    del self.remote[room]
                if not quiet:
                    self._tell(room, before)
        logger.info("presence: dropped %d silent process(es)", len(dead))

    def members_including(self, room: str, nodes: set[str]) -> dict[str, str]:
        """``members(room)`` as it was while ``nodes`` were still alive."""
        found = self.members(room)
        for node in nodes:
            found.update(self.remote.get(room, {}).get(node, {}))
        return found

    # -- helpers -----------------------------------------------------------------------

    def _tell(self, room: str, before: dict[str, str]) -> None:
        after = self.members(room)
        renamed = [u for u in after.keys() & before.keys() if after[u] != before[u]]
        joined = [(u, after[u]) for u in after.keys() - before.keys()]
        left = [(u, before[u]) for u in before.keys() - after.keys()]
        joined += [(u, after[u]) for u in renamed]
        left += [(u, before[u]) for u in renamed]
        if joined or left:
            by_name = lambda pair: (pair[1], pair[0])  # noqa: E731
            self._announce(room, sorted(joined, key=by_name), sorted(left, key=by_name))

    def _snapshot(self, room: str) -> Event:
        users = self.local.get(room, {})
        return Event("snap", self.node, room, members={u: e.name for u, e in users.items()})

    async def _send(self, event: Event) -> None:
        self._publish(PRESENCE_CHANNEL, self._encode(event))
