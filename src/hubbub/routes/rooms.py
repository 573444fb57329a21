"""``/v1/ws``: Hubbub's room protocol (``docs/protocol.md``).

This module parses, validates and enforces the per-connection limits; what a frame
does to rooms is the hub's business.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket

from hubbub import protocol
from hubbub.connection import Connection
from hubbub.errors import CloseCode
from hubbub.frames import OutFrame
from hubbub.hub import Hub
from hubbub.protocol import ErrorCode, ProtocolError

logger = logging.getLogger("hubbub.rooms")

NAME = re.compile(r"^[\w][\w .'-]{0,31}$")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False if there is none."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class RoomSession:
    """One ``/v1/ws`` connection: its name, its rooms, its limits."""

    def __init__(self, hub: Hub, connection: Connection, name: str) -> None:
        settings = hub.settings
        self.hub = hub
        self.connection = connection
        self.name = name
        self.rooms: set[str] = set()
        self.max_text = settings.max_text_chars
        self.max_rooms = settings.max_rooms_per_connection
        self.rate = TokenBucket(settings.rate_per_second, settings.rate_burst)
        self.errors = TokenBucket(1.0, settings.max_errors)

    def reply(self, frame: protocol.ServerFrame) -> None:
        self.connection.send(OutFrame(protocol.encode(frame)))

    async def handle(self, raw: str) -> None:
        """Act on one incoming text frame; refusals become ``error`` frames."""
        try:
            if not self.rate.take():
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many frames; slow down")
            await self.dispatch(protocol.decode(raw))
        except ProtocolError as exc:
            self.connection.send(OutFrame(protocol.error(exc)))
            if not self.errors.take():
                self.connection.close(CloseCode.POLICY_VIOLATION, "too many refused frames")

    async def dispatch(self, frame: protocol.ClientFrame) -> None:
        match frame:
            case protocol.Send(room=room, text=text, ref=ref):
                self.require_member(room, ref)
                if len(text) > self.max_text:
                    raise ProtocolError(
                        ErrorCode.TEXT_TOO_LONG, f"text is over {self.max_text} characters", ref
                    )
                if "\x00" in text:
                    raise ProtocolError(ErrorCode.BAD_FRAME, "text contains NUL", ref)
                try:
                    message = await self.hub.send_to_room(room, self.name, text)
                except Exception as exc:
                    logger.warning("room %s: store append failed: %s", room, exc)
                    raise ProtocolError(
                        ErrorCode.UNAVAILABLE, "history store unavailable; not sent", ref
                    ) from None
                self.reply(protocol.Ack(room=room, seq=message.seq, ref=ref))
            case protocol.Join(room=room, since=since):
                if room not in self.rooms and len(self.rooms) >= self.max_rooms:
                    raise ProtocolError(
                        ErrorCode.TOO_MANY_ROOMS, f"at most {self.max_rooms} rooms at once"
                    )
                if room in self.rooms:  # joining again: resume from since, if given
                    await self.hub.leave_room(self.connection, room)
                self.rooms.add(room)
                try:
                    await self.hub.join_room(
                        self.connection,
                        room,
                        self.name,
                        since,
                        lambda last, members: self.reply(
                            protocol.Joined(room=room, seq=last, members=members)
                        ),
                    )
                except Exception as exc:
                    self.rooms.discard(room)
                    await self.hub.leave_room(self.connection, room)
                    logger.warning("room %s: join failed: %s", room, exc)
                    raise ProtocolError(ErrorCode.UNAVAILABLE, "room unavailable; retry") from None
            case protocol.Leave(room=room):
                self.require_member(room, None)
                self.rooms.discard(room)
                await self.hub.leave_room(self.connection, room)
                self.reply(protocol.Left(room=room))
            case protocol.History(room=room, before=before, limit=limit):
                self.require_member(room, None)
                messages = await self.hub.history(room, before, limit or 50)
                self.reply(protocol.HistoryPage(room=room, messages=messages))
            case protocol.Ping(ref=ref):
                self.reply(protocol.Pong(ref=ref))

    def require_member(self, room: str, ref: str | int | None) -> None:
        if room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"not in room {room!r}; join first", ref)

    async def close(self) -> None:
        for room in list(self.rooms):
            await self.hub.leave_room(self.connection, room)
        self.rooms.clear()


def rooms_router(hub: Hub) -> APIRouter:
    """The ``/v1/ws`` endpoint."""
    router = APIRouter()

    @router.websocket("/v1/ws")
    async def rooms(
        websocket: WebSocket, name: Annotated[str | None, Query(max_length=32)] = None
    ) -> None:
        connection = await hub.connect(websocket)
        if connection is None:
            return
        if name is not None and not NAME.match(name):
            connection.close(CloseCode.POLICY_VIOLATION, "invalid name")
        session = RoomSession(hub, connection, name or f"guest-{secrets.token_hex(3)}")
        try:
            async for text in connection.texts():
                await session.handle(text)
        finally:
            await session.close()
            await hub.disconnect(connection)

    return router
