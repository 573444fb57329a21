"""``/v1/ws``: Hubbub's room protocol (``docs/protocol.md``).

This module parses, validates and enforces the per-connection limits; what a frame
does to rooms is the hub's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import msgspec
from fastapi import APIRouter, Query, WebSocket, WebSocketException

from hubbub import protocol
from hubbub.auth import Authenticator, AuthError, Identity, patterns, trusted_origin
from hubbub.connection import Connection
from hubbub.errors import (
    BackendUnavailable,
    ErrorCode,
    OriginNotAllowed,
    ProtocolError,
    TooManyRefusals,
    Unauthenticated,
)
from hubbub.hub import Hub, answer
from hubbub.outgoing import OutFrame
from hubbub.protocol import Person
from hubbub.stores.base import AlreadySent
from hubbub.stores.chat import (
    ROLES,
    DeleteChange,
    EditChange,
    MessageChange,
    ModerationChange,
    ReactChange,
)

logger = logging.getLogger("hubbub.rooms")

DM_PREFIX = "dm:"
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
        self.typing: dict[str, float] = {}  # room -> when the last notice was passed on
        self.max_text = settings.max_text_chars
        self.max_data = settings.max_data_bytes
        self.max_rooms = settings.max_rooms_per_connection
        self.rate = TokenBucket(settings.rate_per_second, settings.rate_burst)
        self.errors = TokenBucket(1.0, settings.max_errors)

    # -- who is this? ------------------------------------------------------------

    async def authenticate(
        self,
        texts: AsyncIterator[str],
        token: str | None,
        name: str | None,
        guest: str | None,
        ask_backend: Callable[[], Awaitable[Identity | None]] | None = None,
    ) -> bool:
        """Settle the identity from the URL, the backend (``ask_backend``: the connect
        hook) or a first ``hello`` frame; on failure the client gets an ``error`` and
        the connection is closed (1008; 1013 if the backend could not be asked)."""
        try:
            if ask_backend is not None:
                given = await ask_backend()
                if given is not None:
                    await self._settled(given)
                    return True
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
        except (Unauthenticated, BackendUnavailable) as exc:  # the connect hook's answer
            answer(self.connection, exc)
            return False
        await self._settled(identity)
        return True

    async def _settled(self, identity: Identity) -> None:
        self.adopt(identity)
        self.hub.register_user(self.connection, identity.user)
        self.hub.on_kicked(self.connection, self._kicked)
        await self.hub.user_arrived(self.connection, identity.user, identity.name)

    def _kicked(self, room: str) -> None:
        self.rooms.discard(room)
        self.typing.pop(room, None)

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
        frame: protocol.ClientFrame | None = None
        try:
            frame = protocol.decode(raw)
            if not self.rate.take():
                ref = getattr(frame, "ref", None)
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many frames; slow down", ref)
            await self.dispatch(frame)
        except ProtocolError as exc:
            if exc.room is None:
                exc.room = getattr(frame, "room", None)
            answer(self.connection, exc)
            if not self.errors.take():
                answer(self.connection, TooManyRefusals())

    async def dispatch(self, frame: protocol.ClientFrame) -> None:
        identity = self.identity
        assert identity is not None
        match frame:
            case protocol.Send(
                room=room, text=text, ref=ref, reply_to=reply_to, data=data, id=send_id
            ):
                self.require_writer(room, ref)
                protocol.check_text(text, self.max_text, ref)
                protocol.check_data(data, self.max_data, ref)
                if send_id is not None and self.hub.hooks.publish_url:
                    # A repeat is answered, whatever the hook would say of it now.
                    async with self.storing(room, ref, "not sent"):
                        kept = await self.hub.store.sent_before(room, identity.user, send_id)
                    if kept is not None:
                        self.reply(protocol.Ack(room=room, seq=kept.seq, ref=ref, repeat=True))
                        return
                text, data = await self.hub.hooks.publish(
                    self.hook_payload("send", room, reply_to=reply_to), text, data, ref
                )
                try:
                    async with self.storing(room, ref, "not sent"):
                        message = await self.hub.send_to_room(
                            room,
                            identity.name,
                            text,
                            user=identity.user,
                            reply_to=reply_to,
                            data=data,
                            send_id=send_id,
                        )
                except AlreadySent as kept:
                    self.reply(protocol.Ack(room=room, seq=kept.seq, ref=ref, repeat=True))
                    return
                self.stop_typing(room)
                self.reply(protocol.Ack(room=room, seq=message.seq, ref=ref))
            case protocol.EditMessage(room=room, seq=seq, text=text, data=data, ref=ref):
                self.require_writer(room, ref)
                protocol.check_text(text, self.max_text, ref)
                protocol.check_data(data, self.max_data, ref)
                text, data = await self.hub.hooks.publish(
                    self.hook_payload("edit", room, seq=seq), text, data, ref
                )
                await self.change(
                    room, EditChange(seq, identity.user, identity.name, text, data), ref
                )
            case protocol.DeleteMessage(room=room, seq=seq, ref=ref):
                self.require_writer(room, ref)
                moderator = self.role(room) != "member"
                await self.change(
                    room, DeleteChange(seq, identity.user, identity.name, moderator), ref
                )
            case protocol.React(room=room, seq=seq, emoji=emoji, remove=remove, ref=ref):
                self.require_writer(room, ref)
                emoji = protocol.normalize_emoji(emoji, ref)
                await self.change(
                    room, ReactChange(seq, identity.user, identity.name, emoji, remove), ref
                )
            case protocol.Read(room=room, seq=seq):
                self.require_member(room, None)
                async with self.storing(room, None, "not marked"):
                    read, unread = await self.hub.store.mark_read(room, identity.user, seq)
                self.hub.push_to_user(
                    identity.user, protocol.ReadState(room=room, seq=read, unread=unread)
                )
                if (await self.hub.store.room_settings(room)).receipts:  # the API may change it
                    self.hub.signal_room(
                        room,
                        protocol.Receipt(
                            room=room, user=identity.user, name=identity.name, seq=read
                        ),
                    )
            case protocol.ListRooms(ref=ref):
                async with self.storing(None, ref, "try again"):
                    rooms = await self.hub.store.user_rooms(identity.user)
                rooms = [  # a token's moderate claim counts, as it does for acting
                    msgspec.structs.replace(r, role=self.role_of(r.room, r.role)) for r in rooms
                ]
                self.reply(protocol.RoomList(rooms=rooms, ref=ref))
            case protocol.Typing(room=room, stop=stop):
                self.require_member(room, None)
                if stop:
                    self.stop_typing(room)
                else:
                    now = time.monotonic()
                    if now - self.typing.get(room, -protocol.TYPING_EVERY) >= protocol.TYPING_EVERY:
                        self.typing[room] = now
                        self.hub.signal_room(
                            room,
                            protocol.TypingNotice(
                                room=room,
                                user=identity.user,
                                name=identity.name,
                                expires_in=protocol.TYPING_EXPIRES,
                            ),
                        )
            case protocol.OpenDm(users=users, ref=ref):
                others = sorted(set(users) - {identity.user})
                if not others:
                    raise ProtocolError(
                        ErrorCode.FORBIDDEN, "a direct message needs someone else", ref
                    )
                people = [Person(identity.user, identity.name)]
                people += [Person(user, self.known_name(user)) for user in others]
                async with self.storing(None, ref, "not opened"):
                    room = await self.hub.store.open_dm(people)
                ids = sorted(p.user for p in people)
                self.reply(protocol.DmOpened(room=room, users=ids, ref=ref))
                for user in others:  # found at once on the others' devices too
                    self.hub.push_to_user(user, protocol.DmOpened(room=room, users=ids))
            case protocol.Moderate(room=room, user=member, action=action, reason=reason, ref=ref):
                self.require_member(room, ref)
                change = ModerationChange(
                    action, member, identity.user, identity.name, self.role(room), reason
                )
                await self.moderate(room, change, ref)
            case protocol.SetRole(room=room, user=member, role=role, ref=ref):
                self.require_member(room, ref)
                change = ModerationChange(
                    "role", member, identity.user, identity.name, self.role(room), role=role
                )
                await self.moderate(room, change, ref)
            case protocol.Join(room=room, since=since, epoch=epoch):
                if not await self.may_read(room):
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
                                members=sorted(members.values()),
                                epoch=self.hub.epoch,
                                reset=reset,
                                people=[
                                    self.person(room, user, name)
                                    for user, name in sorted(
                                        members.items(), key=lambda item: (item[1], item[0])
                                    )
                                ],
                            )
                        ),
                    )
                except ProtocolError:  # name_taken, banned
                    self.rooms.discard(room)
                    raise
                except Exception as exc:
                    self.rooms.discard(room)
                    await self.hub.leave_room(self.connection, room)
                    logger.warning(
                        "room %s: join failed: %s", room, exc, extra=self.log_context(room)
                    )
                    raise ProtocolError(ErrorCode.UNAVAILABLE, "room unavailable; retry") from None
            case protocol.Leave(room=room, forget=forget):
                self.require_member(room, None)
                self.stop_typing(room)
                self.rooms.discard(room)
                await self.hub.leave_room(self.connection, room)
                if forget:
                    async with self.storing(room, None, "membership kept"):
                        await self.hub.forget_member(room, identity.user)
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

    def require_writer(self, room: str, ref: str | int | None) -> None:
        """A member that may write ``room`` and is not muted in it."""
        self.require_member(room, ref)
        identity = self.identity
        assert identity is not None
        dm = self.hub.room_settings(room).dm
        allowed = identity.can_write(room) if dm is None else True  # joined: one of them
        if not allowed:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"you may not post in {room!r}", ref)
        standing = self.hub.standing(room, identity.user)
        if standing is not None and standing.muted:
            raise ProtocolError(ErrorCode.MUTED, f"you are muted in {room!r}", ref)

    async def may_read(self, room: str) -> bool:
        """Whether the identity may join ``room``: its patterns, or for a direct-message
        room, being one of its users."""
        identity = self.identity
        assert identity is not None
        if not room.startswith(DM_PREFIX):
            return identity.can_read(room)
        dm = (await self.hub.store.room_settings(room)).dm
        return dm is not None and any(person.user == identity.user for person in dm)

    def role(self, room: str) -> str:
        """The identity's role in ``room``: stored, or given by its token."""
        identity = self.identity
        assert identity is not None
        standing = self.hub.standing(room, identity.user)
        return self.role_of(room, standing.role if standing is not None else "member")

    def hook_payload(self, action: str, room: str, **more: int | None) -> dict[str, object]:
        """What the publish hook is told of a send or edit, besides its text and data."""
        identity = self.identity
        assert identity is not None
        return {
            "action": action,
            "room": room,
            "user": identity.user,
            "name": identity.name,
            **more,
        }

    def role_of(self, room: str, stored: str) -> str:
        """The stored role, raised to moderator by the token's ``moderate`` claim."""
        identity = self.identity
        assert identity is not None
        if identity.moderates(room) and ROLES.index(stored) < ROLES.index("moderator"):
            return "moderator"
        return stored

    def person(self, room: str, user: str, name: str) -> Person:
        """A member list's entry; this connection's own with the role its token gives."""
        entry = self.hub.person(room, user, name)
        if self.identity is not None and user == self.identity.user:
            role = self.role_of(room, entry.role or "member")
            entry = msgspec.structs.replace(entry, role=None if role == "member" else role)
        return entry

    def known_name(self, user: str) -> str:
        """The name ``user`` goes by in one of this connection's rooms, else its id."""
        for room in self.rooms:
            name = self.hub.presence.members(room).get(user)
            if name is not None:
                return name
        return user

    def stop_typing(self, room: str) -> None:
        """Tell the room this user stopped typing, if it was."""
        identity = self.identity
        if identity is not None and self.typing.pop(room, None) is not None:
            self.hub.signal_room(
                room,
                protocol.TypingNotice(room=room, user=identity.user, name=identity.name, stop=True),
            )

    @contextlib.asynccontextmanager
    async def storing(
        self, room: str | None, ref: str | int | None, what: str
    ) -> AsyncIterator[None]:
        """A store call: its refusals go to the client with ``ref``; a failure of the
        store is ``unavailable``."""
        try:
            yield
        except ProtocolError as exc:
            exc.ref = ref
            raise
        except AlreadySent:
            raise  # an answer, not a failure
        except Exception as exc:
            logger.warning(
                "room %s: store failed: %s", room, exc, extra=self.log_context(room or "-")
            )
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, f"history store unavailable; {what}", ref
            ) from None

    async def change(self, room: str, change: MessageChange, ref: str | int | None) -> None:
        async with self.storing(room, ref, "not changed"):
            event = await self.hub.change_message(room, change)
        self.reply(protocol.Ack(room=room, seq=event.seq if event else None, ref=ref))

    async def moderate(self, room: str, change: ModerationChange, ref: str | int | None) -> None:
        async with self.storing(room, ref, "not done"):
            event = await self.hub.moderate(room, change)
        self.reply(protocol.Ack(room=room, seq=event.seq, ref=ref))

    async def close(self) -> None:
        for room in list(self.typing):
            self.stop_typing(room)
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
        ask_backend = None
        if hub.hooks.connect_url and token is None and name is None and guest is None:
            # The backend sees the request's cookies: a browser's page (the one kind of
            # client that sends Origin, and others' cookies) must be a trusted one.
            if "origin" in websocket.headers and not trusted_origin(
                websocket.headers, websocket.url.scheme, allowed_origins
            ):
                refusal = OriginNotAllowed()
                raise WebSocketException(refusal.close_code, refusal.close_reason)
            client = websocket.client.host if websocket.client else None
            headers = websocket.headers
            ask_backend = functools.partial(hub.hooks.connect, headers, client)
        connection = await hub.connect(websocket)
        if connection is None:
            return
        session = RoomSession(hub, auth, connection)
        texts = connection.texts()
        try:
            authenticated = await session.authenticate(texts, token, name, guest, ask_backend)
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
