"""Rooms on one node: every member gets every message exactly once, in ``seq`` order.

A :class:`RoomFeed` is this process's view of one room. Messages reach it from two
sides, local appends and the broker, in any order and possibly twice; it hands them
to its members strictly in ``seq`` order, dropping what it already delivered and
filling any gap from the store before going on (the store makes seq N readable
before anyone can see N+1, so a gap can always be filled at once).

A member that joins with ``since`` first gets the backlog from the store, while the
feed's live messages for it are held back; then the held ones above the backlog's
last ``seq``. Subscribing before reading the backlog is what leaves neither a gap nor
a duplicate at the boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from hubbub import protocol
from hubbub.connection import Connection
from hubbub.metrics import Metrics
from hubbub.outgoing import OutFrame
from hubbub.protocol import Moderation, RoomEvent
from hubbub.stores import Store
from hubbub.stores.base import RoomSettings
from hubbub.stores.chat import Membership

logger = logging.getLogger("hubbub.rooms")

BACKLOG_PAGE = 200


class Member:
    """One connection in one room, and the last ``seq`` it was sent."""

    __slots__ = ("connection", "delivered", "held", "name", "user")

    def __init__(self, connection: Connection, user: str, name: str, delivered: int) -> None:
        self.connection = connection
        self.user = user
        self.name = name
        self.delivered = delivered
        # Live messages that arrive while the backlog is being sent; None once live.
        self.held: list[tuple[int, OutFrame]] | None = None

    def offer(self, seq: int, frame: OutFrame) -> None:
        """Send ``frame`` unless this member has it already (or hold it while catching up)."""
        if self.held is not None:
            self.held.append((seq, frame))
        elif seq > self.delivered:
            self.delivered = seq
            self.connection.send(frame)  # counted by the feed, once per message


class RoomFeed:
    """This node's members of one room, fed in ``seq`` order (see the module doc)."""

    def __init__(
        self,
        name: str,
        store: Store,
        delivered: int,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.metrics = metrics
        self.store = store
        self.delivered = delivered  # the last seq handed to the members
        self.members: dict[Connection, Member] = {}
        self._ahead: dict[int, tuple[RoomEvent, OutFrame | None]] = {}
        self._filling = False
        self._spawn = spawn
        # Who is not a plain member (roles, bans, mutes), kept by the stream's
        # moderation events; how the room behaves.
        self.standings: dict[str, Membership] = {}
        self.settings = RoomSettings()
        self.on_moderation: Callable[[str, Moderation], None] | None = None

    # -- incoming messages ------------------------------------------------------------

    def on_message(self, message: RoomEvent, frame: OutFrame | None = None) -> None:
        """An event of this room from anywhere; ``frame`` is its encoding, if known."""
        seq = message.seq
        if seq <= self.delivered or seq in self._ahead:
            return  # delivered already, or already waiting
        if seq == self.delivered + 1 and not self._filling:
            self._hand_out(message, frame or OutFrame(protocol.encode(message)))
            self._release_ahead()
            return
        self._ahead[seq] = (message, frame)
        if not self._filling:
            self._filling = True
            self._spawn(self._fill_gaps())

    def resync(self) -> None:
        """Re-read the store after the last delivered ``seq`` (after a broker outage)."""
        if not self._filling:
            self._filling = True
            self._spawn(self._fill_gaps(to_the_end=True))

    def _hand_out(self, message: RoomEvent, frame: OutFrame) -> None:
        seq = self.delivered = message.seq
        members = self.members
        for member in members.values():
            member.offer(seq, frame)
        if self.metrics is not None:  # once per message, never per member
            self.metrics.sent(len(members), len(members) * frame.size)
            self.metrics.delivered(message.ts)
        if isinstance(message, Moderation):
            self._apply(message)

    def _apply(self, event: Moderation) -> None:
        standing = self.standings.get(event.member, Membership())
        match event.action:
            case "ban" | "unban":
                standing = replace(standing, banned=event.action == "ban")
            case "mute" | "unmute":
                standing = replace(standing, muted=event.action == "mute")
            case "role":
                standing = replace(standing, role=event.role or "member")
        if standing == replace(Membership(), read=standing.read):
            self.standings.pop(event.member, None)
        else:
            self.standings[event.member] = standing
        if self.on_moderation is not None:
            self.on_moderation(self.name, event)

    def signal(self, frame: OutFrame, sender: str) -> int:
        """An ephemeral frame (typing, a receipt) for every member but ``sender``'s
        connections; never stored, never ordered. How many it went to."""
        sent = 0
        for member in self.members.values():
            if member.user != sender:
                member.connection.send(frame)
                sent += 1
        return sent

    def _skip_to(self, seq: int) -> None:
        # Only retention removes stored messages; what it removed cannot be delivered.
        logger.warning(
            "room %s: seq %d..%d no longer stored; skipped",
            self.name,
            self.delivered + 1,
            seq,
            extra={"room": self.name},
        )
        self.delivered = seq

    def _release_ahead(self) -> None:
        # Hand out what waited and is next; forget what the store delivered meanwhile.
        ahead = self._ahead
        while ahead:
            lowest = min(ahead)
            if lowest > self.delivered + 1:
                return
            message, frame = ahead.pop(lowest)
            if lowest == self.delivered + 1:
                self._hand_out(message, frame or OutFrame(protocol.encode(message)))

    async def _fill_gaps(self, to_the_end: bool = False) -> None:
        try:
            while True:
                self._release_ahead()
                if not self._ahead and not to_the_end:
                    return
                target = min(self._ahead) if self._ahead else None
                rows = await self.store.read(
                    self.name, after=self.delivered, before=target, limit=BACKLOG_PAGE
                )
                for message in rows:
                    if message.seq > self.delivered + 1:
                        self._skip_to(message.seq - 1)
                    self._hand_out(message, OutFrame(protocol.encode(message)))
                if target is None:
                    to_the_end = len(rows) == BACKLOG_PAGE
                elif not rows:
                    self._skip_to(target - 1)
        except Exception:
            logger.exception(
                "room %s: filling a gap from the store failed", self.name, extra={"room": self.name}
            )
        finally:
            self._filling = False
            if self._ahead:  # what arrived after a failure waits for the next fill
                self._filling = True
                self._spawn(self._fill_gaps())

    # -- members ----------------------------------------------------------------------

    def add(
        self, connection: Connection, user: str, name: str, after: int, catching_up: bool
    ) -> Member:
        """Add a member that has every message up to ``after``. If ``catching_up``, live
        messages are held for it until :meth:`catch_up` has sent the backlog."""
        member = Member(connection, user, name, after)
        if catching_up:
            member.held = []
        self.members[connection] = member
        return member

    async def catch_up(self, member: Member) -> None:
        """Send ``member`` every stored message after its ``delivered``, then the held
        live ones it still lacks; from then on it is live."""
        connection = member.connection
        try:
            while True:
                rows = await self.store.read(self.name, after=member.delivered, limit=BACKLOG_PAGE)
                size = 0
                for message in rows:
                    if connection.crowded:  # a page may be many times the outbox bound
                        await connection.wait_for_room()
                        if connection.closing:
                            break
                    frame = OutFrame(protocol.encode(message))
                    connection.send(frame)
                    size += frame.size
                    member.delivered = message.seq
                if self.metrics is not None:  # once per page
                    self.metrics.sent(len(rows), size)
                if len(rows) < BACKLOG_PAGE or connection.closing:
                    break
                await connection.wait_for_room()
        finally:
            held, member.held = member.held or [], None
            for seq, frame in held:
                member.offer(seq, frame)

    def remove(self, connection: Connection) -> Member | None:
        """Forget a member; returns it if it was one."""
        return self.members.pop(connection, None)
