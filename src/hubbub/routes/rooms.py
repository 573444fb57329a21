"""``/v1/ws``: Hubbub's room protocol (``docs/protocol.md``).

This module parses, validates and enforces the per-connection limits; what a frame
does to rooms is the hub's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketException

from hubbub import protocol
from hubbub.auth import Authenticator, AuthError, Identity, patterns, trusted_origin
from hubbub.connection import Connection
from hubbub.errors import (
    ErrorCode,
    NameTaken,
    OriginNotAllowed,
    ProtocolError,
    TooManyRefusals,
    Unauthenticated,
)
from hubbub.hub import Hub, answer
from hubbub.outgoing import OutFrame

logger = logging.getLogger("hubbub.rooms")

MAX_TIMER = 2.0**31  # seconds (68 years): the longest token-expiry timer set


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

    def __init__(self, hub: Hub, auth: Authenticator, connection: Connection) -> None:
        settings = hub.settings
        self.hub = hub
        self.auth = auth
        self.connection = connection
        self.identity: Identity | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.rooms: set[str] = set()
        self.max_text = settings.max_text_chars
        self.max_rooms = settings.max_rooms_per_connection
        self.rate = TokenBucket(settings.rate_per_second, settings.rate_burst)
        self.errors = TokenBucket(1.0, settings.max_errors)

    # -- who is this? ------------------------------------------------------------

    async def authenticate(
        self, texts: AsyncIterator[str], token: str | None, name: str | None, guest: str | None
    ) -> bool:
        """Settle the identity from the URL or a first ``hello`` frame; on failure the
        client gets an ``error`` and the connection is closed (1008)."""
        try:
            if token is None and name is None and guest is None:
                token, name, guest = await self._hello(texts)
            if token is not None:
                if name is not None or guest is not None:
                    raise AuthError("unauthorized", "a token, or a guest's name: not both")
                identity = self.auth.verify(token)
            else:
                identity = self.auth.guest(name, guest)
        except (AuthError, ProtocolError) as exc:
            answer(
                self.connection, Unauthenticated(exc.code or ErrorCode.UNAUTHORIZED, exc.message)
            )
            return False
        self.adopt(identity)
        self.hub.register_user(self.connection, identity.user)
        return True

    async def _hello(self, texts: AsyncIterator[str]) -> tuple[str | None, str | None, str | None]:
        timeout = self.hub.settings.hello_timeout
        try:
            first = await asyncio.wait_for(anext(texts), timeout)
        except TimeoutError:
            raise AuthError("unauthorized", f"no hello within {timeout:g}s") from None
        except StopAsyncIteration:
            raise AuthError("unauthorized", "closed before hello") from None
        frame = protocol.decode(first)
        if not isinstance(frame, protocol.Hello) or (frame.token is None) == (
            frame.name is None and frame.guest is None
        ):
            raise AuthError(
                "unauthorized", 'say {"type":"hello","token":…} (or "name", or "guest") first'
            )
        return frame.token, frame.name, frame.guest

    def adopt(self, identity: Identity) -> None:
        """Act as ``identity`` from now on; close the connection when its token expires."""
        self.identity = identity
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if identity.expires_at is not None:
            # Bounded: an event loop's timer cannot be set centuries ahead.
            delay = min(max(0.0, identity.expires_at - time.time()), MAX_TIMER)
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)
        self.reply(
            protocol.Welcome(
                user=identity.user,
                name=identity.name,
                guest=identity.guest,
                expires=identity.expires_at,
                guest_token=self.auth.guest_token(identity),
                epoch=self.hub.epoch,
            )
        )

    def _expired(self) -> None:
        self._expiry = None
        answer(
            self.connection,
            Unauthenticated(
                ErrorCode.TOKEN_EXPIRED, "the token has expired; connect again with a new one"
            ),
        )

    def reply(self, frame: protocol.ServerFrame) -> None:
        self.connection.send_one(OutFrame(protocol.encode(frame)))

    async def handle(self, raw: str) -> None:
        """Act on one incoming text frame; refusals become ``error`` frames."""
        try:
            if not self.rate.take():
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many frames; slow down")
            await self.dispatch(protocol.decode(raw))
        except ProtocolError as exc:
            answer(self.connection, exc)
            if not self.errors.take():
                answer(self.connection, TooManyRefusals())

    async def dispatch(self, frame: protocol.ClientFrame) -> None:
        identity = self.identity
        assert identity is not None
        match frame:
            case protocol.Send(room=room, text=text, ref=ref):
                self.require_member(room, ref)
                if not identity.can_write(room):
                    raise ProtocolError(ErrorCode.FORBIDDEN, f"you may not post in {room!r}", ref)
                protocol.check_text(text, self.max_text, ref)
                try:
                    message = await self.hub.send_to_room(room, identity.name, text)
                except Exception as exc:
                    logger.warning(
                        "room %s: store append failed: %s", room, exc, extra=self.log_context(room)
                    )
                    raise ProtocolError(
                        ErrorCode.UNAVAILABLE, "history store unavailable; not sent", ref
                    ) from None
                self.reply(protocol.Ack(room=room, seq=message.seq, ref=ref))
            case protocol.Join(room=room, since=since, epoch=epoch):
                if not identity.can_read(room):
                    raise ProtocolError(ErrorCode.FORBIDDEN, f"you may not join {room!r}")
                if room not in self.rooms and len(self.rooms) >= self.max_rooms:
                    raise ProtocolError(
                        ErrorCode.TOO_MANY_ROOMS, f"at most {self.max_rooms} rooms at once"
                    )
                if room in self.rooms:  # joining again: resume from since, if given
                    await self.hub.leave_room(self.connection, room)
                # A since of another deployment's history means nothing here: start over.
                reset = since is not None and epoch is not None and epoch != self.hub.epoch
                if reset:
                    since = None
                self.rooms.add(room)
                try:
                    await self.hub.join_room(
                        self.connection,
                        room,
                        identity,
                        since,
                        lambda last, members: self.reply(
                            protocol.Joined(
                                room=room,
                                seq=last,
                                members=members,
                                epoch=self.hub.epoch,
                                reset=reset,
                            )
                        ),
                    )
                except NameTaken:
                    self.rooms.discard(room)
                    raise
                except Exception as exc:
                    self.rooms.discard(room)
                    await self.hub.leave_room(self.connection, room)
                    logger.warning(
                        "room %s: join failed: %s", room, exc, extra=self.log_context(room)
                    )
                    raise ProtocolError(ErrorCode.UNAVAILABLE, "room unavailable; retry") from None
            case protocol.Leave(room=room):
                self.require_member(room, None)
                self.rooms.discard(room)
                await self.hub.leave_room(self.connection, room)
                self.reply(protocol.Left(room=room))
            case protocol.History(room=room, before=before, limit=limit):
                self.require_member(room, None)
                # Bounded like a backlog page: answer once the outbox is at most half full,
                # with a page of at most a quarter of it. A client that does not read gets
                # nothing more queued; it is closed by the keepalive, not held in memory.
                await self.connection.wait_for_room()
                if self.connection.closing:
                    return
                budget = self.hub.settings.outbox_max_bytes // 4
                messages = await self.hub.history(room, before, limit or 50, budget)
                self.reply(protocol.HistoryPage(room=room, messages=messages))
            case protocol.Ping(ref=ref):
                self.reply(protocol.Pong(ref=ref))
            case protocol.Refresh(token=token):
                try:
                    fresh = self.auth.verify(token)
                except AuthError as exc:
                    code = ErrorCode(exc.code or ErrorCode.UNAUTHORIZED)
                    raise ProtocolError(code, exc.message) from None
                if fresh.user != identity.user:
                    raise ProtocolError(ErrorCode.UNAUTHORIZED, "a refresh is for the same user")
                if fresh.name != identity.name:
                    await self.hub.rename(self.connection, self.rooms, fresh)
                self.adopt(fresh)
            case protocol.Hello():
                raise ProtocolError(ErrorCode.BAD_FRAME, "hello comes first, and only once")

    def log_context(self, room: str) -> dict[str, str]:
        """``extra=`` for log lines about this connection in ``room``."""
        context = {"conn": self.connection.id, "room": room}
        if self.identity is not None:
            context["user"] = self.identity.user
        return context

    def require_member(self, room: str, ref: str | int | None) -> None:
        if room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"not in room {room!r}; join first", ref)

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for room in list(self.rooms):
            await self.hub.leave_room(self.connection, room)
        self.rooms.clear()


async def ignore(text: str) -> None:
    """A handler for a connection that is closing: what it still sends is dropped."""


def rooms_router(hub: Hub, auth: Authenticator) -> APIRouter:
    """The ``/v1/ws`` endpoint."""
    router = APIRouter()
    settings = hub.settings
    allowed_origins = set(patterns(settings.allowed_origins))

    @router.websocket("/v1/ws")
    async def rooms(
        websocket: WebSocket,
        token: Annotated[str | None, Query(max_length=8192)] = None,
        name: Annotated[str | None, Query(max_length=64)] = None,
        guest: Annotated[str | None, Query(max_length=8192)] = None,
    ) -> None:
        cookie = websocket.cookies.get(settings.session_cookie)
        if token is None and name is None and guest is None and cookie is not None:
            # A browser sends cookies to any page's WebSocket: only trusted pages may use
            # them (cross-site WebSocket hijacking). Refused before the upgrade: HTTP 403.
            if not trusted_origin(websocket.headers, websocket.url.scheme, allowed_origins):
                refusal = OriginNotAllowed()
                raise WebSocketException(refusal.close_code, refusal.close_reason)
            token = cookie
        connection = await hub.connect(websocket)
        if connection is None:
            return
        session = RoomSession(hub, auth, connection)
        texts = connection.texts()
        try:
            authenticated = await session.authenticate(texts, token, name, guest)
        except BaseException:
            await session.close()
            await hub.disconnect(connection)
            raise
        finally:
            await texts.aclose()

        async def on_end() -> None:
            await session.close()
            await hub.disconnect(connection)

        if authenticated:
            # From here on, no task or coroutine is kept for an idle connection.
            await connection.serve_serially(session.handle, on_end)
        else:
            await connection.serve_serially(ignore, on_end)  # until the close completes

    return router
