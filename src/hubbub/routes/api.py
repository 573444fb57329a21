"""The HTTP API under ``/api/v1``, for the application's own backend.

Every call needs ``Authorization: Bearer <--api-key>``; without a configured key the
API refuses everything. :class:`ApiKeyGate` checks the key before anything reads the
request's body, so a caller without it cannot make the server read (or hold) a byte of
one. A body over ``--max-body-bytes`` is answered 413: by its ``Content-Length``
before it is read (the gate again), or, sent chunked, as soon as the bytes counted so
far pass the limit (FastAPI's ``max_body_size`` on the router). Request bodies and
parameters are validated by FastAPI: a bad one is answered 422 with a body that says
what is wrong.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hubbub.errors import ErrorCode, ProtocolError
from hubbub.hub import Hub
from hubbub.protocol import MAX_DM_OTHERS, MAX_SEQ, ROOM_NAME, Person, check_data, check_text
from hubbub.stores.base import AlreadySent
from hubbub.stores.chat import DeleteChange, ModerationChange

PREFIX = "/api/v1"
TOO_LARGE = "Content Too Large"  # the detail of FastAPI's own 413 (a body counted as it came)

# pydantic's regex engine (Rust) ends a match at $ only at the very end, unlike Python's
# re (protocol.ROOM_PATTERN): the same rule in each engine's spelling.
RoomName = Annotated[str, Path(pattern=rf"^{ROOM_NAME}$", description="A room name.")]


class PostMessage(BaseModel):
    """A message posted by the server side."""

    text: str = Field(
        min_length=1,
        description="The message text: at most `--max-text-chars` characters (4000 by "
        "default), no NUL; the same rule as `send` on /v1/ws.",
    )
    sender: str = Field(
        "server", alias="from", min_length=1, max_length=64, description="Shown as `from`."
    )
    user: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="The author's user id, for a message posted on a user's behalf (that "
        "user may then edit and delete it).",
    )
    reply_to: int | None = Field(None, ge=1, le=MAX_SEQ, description="The seq it answers.")
    data: dict[str, Any] | None = Field(
        None, description="A JSON object for applications (`--max-data-bytes`)."
    )
    id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Stored once: a post with an `id` kept for the same `user` (or the "
        "server) and room, for 24 hours, stores nothing and answers 200 with the first "
        "one's `seq` and `repeat`.",
    )


class Posted(BaseModel):
    """Where the message went."""

    room: str
    seq: int
    ts: str
    repeat: bool = Field(False, description="An `id` stored already: nothing was posted.")


class MessageOut(BaseModel):
    """One stored message, in its current state."""

    room: str
    seq: int
    sender: str = Field(serialization_alias="from")
    text: str
    ts: str
    user: str | None = None
    reply_to: int | None = None
    data: dict[str, Any] | None = None
    edited: str | None = None
    deleted: bool = False
    reactions: dict[str, list[str]] | None = None


class ModerationIn(BaseModel):
    """A moderation action, taken as the room's owner."""

    user: str = Field(min_length=1, max_length=256, description="The member acted on.")
    action: Literal["kick", "ban", "unban", "mute", "unmute"]
    reason: str | None = Field(None, max_length=200)


class RoleIn(BaseModel):
    """A member's role in a room."""

    role: Literal["owner", "moderator", "member"]


class RoomPatch(BaseModel):
    """How a room behaves."""

    receipts: bool = Field(description="Pass read receipts on to the other members.")


class PersonIn(BaseModel):
    """A user of a direct message."""

    user: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=64)


class DmIn(BaseModel):
    """The users of a direct-message room."""

    users: list[PersonIn] = Field(min_length=2, max_length=MAX_DM_OTHERS + 1)


class DmOut(BaseModel):
    """A direct-message room."""

    room: str
    users: list[str]


class EventOut(BaseModel):
    """The event an action made."""

    room: str
    seq: int


class UserRoom(BaseModel):
    """One room of a user's list."""

    room: str
    seq: int
    read: int
    unread: int
    role: str
    dm: list[PersonIn] | None = None


class MessagesPage(BaseModel):
    """Messages in ascending ``seq``."""

    room: str
    messages: list[MessageOut]


class RoomOut(BaseModel):
    """A room that has messages."""

    room: str
    last_seq: int


class Member(BaseModel):
    """Someone in a room."""

    user: str
    name: str


class Disconnected(BaseModel):
    """The result of a disconnect request."""

    user: str
    closed_here: int = Field(description="Connections closed on the process that answered.")


class ApiKeyGate:
    """Pure ASGI middleware: a request under ``/api/v1`` without the right bearer key is
    answered 401, and one whose ``Content-Length`` is over ``max_body_bytes`` 413, from
    its headers alone. It has to sit in front of the routes because FastAPI reads (and
    parses) a route's body before it runs the route's dependencies."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None  # empty: the API is off
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _is_api_path(scope):
            refusal = self.refusal(Headers(scope=scope))
            if refusal is not None:
                # Never calls receive: the body stays unread (uvicorn drops it).
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: Headers) -> JSONResponse | None:
        """The 401 or 413 these request headers get, or None."""
        unauthorized = self.unauthorized(headers.get("authorization"))
        if unauthorized is not None:
            return unauthorized
        # A chunked body has no length: FastAPI's max_body_size counts it as it comes.
        # (uvicorn's parser has already refused a Content-Length that is not a number.)
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.max_body_bytes:
            return JSONResponse({"detail": TOO_LARGE}, status.HTTP_413_CONTENT_TOO_LARGE)
        return None

    def unauthorized(self, authorization: str | None) -> JSONResponse | None:
        """The 401 for this ``Authorization`` header, or None if it carries the key."""
        if self.api_key is None:
            return JSONResponse(
                {"detail": "the API is off: set HUBBUB_API_KEY"}, status.HTTP_401_UNAUTHORIZED
            )
        scheme, _, credentials = (authorization or "").partition(" ")
        if (
            scheme.lower() != "bearer"
            or not credentials.strip()
            or not hmac.compare_digest(credentials.strip().encode(), self.api_key)
        ):
            return JSONResponse(
                {"detail": "missing or wrong API key"},
                status.HTTP_401_UNAUTHORIZED,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None


def _is_api_path(scope: Scope) -> bool:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):  # mounted under a prefix: route on what follows it
        path = path[len(root) :]
    return path == PREFIX or path.startswith(PREFIX + "/")


def api_router(hub: Hub) -> APIRouter:
    """Routes of the HTTP API; served behind :class:`ApiKeyGate`, which checks the key."""
    settings = hub.settings
    max_text = settings.max_text_chars

    router = APIRouter(
        prefix=PREFIX,
        tags=["api"],
        # Declares the bearer scheme in the OpenAPI document (/docs' "Authorize").
        dependencies=[Depends(HTTPBearer(auto_error=False))],
        max_body_size=settings.max_body_bytes,
    )

    @router.post(
        "/rooms/{room}/messages",
        status_code=201,
        response_model=Posted,
        responses={200: {"model": Posted, "description": "A repeat of a post with this `id`"}},
    )
    async def post_message(room: RoomName, body: PostMessage, response: Response) -> Posted:
        """Post to a room as the server; every member on every process receives it."""
        try:
            check_text(body.text, max_text)  # the rule of send on /v1/ws
        except ProtocolError as exc:
            raise HTTPException(422, exc.message) from None
        try:
            check_data(body.data, settings.max_data_bytes)
            message = await hub.send_to_room(
                room,
                body.sender,
                body.text,
                user=body.user,
                reply_to=body.reply_to,
                data=body.data,
                send_id=body.id,
            )
        except ProtocolError as exc:
            raise _http_error(exc) from None
        except AlreadySent as kept:
            response.status_code = 200
            return Posted(room=room, seq=kept.seq, ts=kept.ts, repeat=True)
        return Posted(room=room, seq=message.seq, ts=message.ts)

    @router.delete("/rooms/{room}/messages/{seq}", response_model=EventOut)
    async def delete_message(
        room: RoomName, seq: Annotated[int, Path(ge=1, le=MAX_SEQ)]
    ) -> EventOut:
        """Delete a message, as a moderator: it becomes a tombstone everywhere."""
        try:
            event = await hub.change_message(room, DeleteChange(seq, "server", "server", True))
        except ProtocolError as exc:
            raise _http_error(exc) from None
        assert event is not None
        return EventOut(room=room, seq=event.seq)

    @router.post("/rooms/{room}/moderation", response_model=EventOut, status_code=201)
    async def moderate(room: RoomName, body: ModerationIn) -> EventOut:
        """Kick, ban, unban, mute or unmute a member, as the room's owner; every process
        applies it, and every member sees it as a `moderation` event."""
        change = ModerationChange(body.action, body.user, "server", "server", "owner", body.reason)
        try:
            event = await hub.moderate(room, change)
        except ProtocolError as exc:
            raise _http_error(exc) from None
        return EventOut(room=room, seq=event.seq)

    @router.put("/rooms/{room}/roles/{user}", response_model=EventOut)
    async def set_role(
        room: RoomName, user: Annotated[str, Path(min_length=1, max_length=256)], body: RoleIn
    ) -> EventOut:
        """Give a user a role in a room (making it a member first if it is not one)."""
        if await hub.store.membership(room, user) is None:
            await hub.add_member(room, user, user)
        change = ModerationChange("role", user, "server", "server", "owner", role=body.role)
        try:
            event = await hub.moderate(room, change)
        except ProtocolError as exc:
            raise _http_error(exc) from None
        return EventOut(room=room, seq=event.seq)

    @router.patch("/rooms/{room}", status_code=204)
    async def patch_room(room: RoomName, body: RoomPatch) -> None:
        """Change how a room behaves (read receipts)."""
        await hub.store.set_receipts(room, body.receipts)

    @router.post("/dms", response_model=DmOut, status_code=201)
    async def open_dm(body: DmIn) -> DmOut:
        """The direct-message room of these users (each a member of it from now on)."""
        people = {p.user: Person(p.user, p.name) for p in body.users}
        if len(people) < 2:
            raise HTTPException(422, "a direct message is between at least two users")
        room = await hub.store.open_dm(list(people.values()))
        return DmOut(room=room, users=sorted(people))

    @router.get("/users/{user}/rooms", response_model=list[UserRoom])
    async def user_rooms(
        user: Annotated[str, Path(min_length=1, max_length=256)],
    ) -> list[UserRoom]:
        """The rooms a user is a member of, with read state and unread counts."""
        return [
            UserRoom(
                room=r.room,
                seq=r.seq,
                read=r.read,
                unread=r.unread,
                role=r.role,
                dm=[PersonIn(user=p.user, name=p.name) for p in r.dm] if r.dm else None,
            )
            for r in await hub.store.user_rooms(user)
        ]

    @router.get("/rooms/{room}/messages", response_model=MessagesPage, response_model_by_alias=True)
    async def read_messages(
        room: RoomName,
        before: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> MessagesPage:
        """The last ``limit`` messages before ``before`` (or the newest), ascending."""
        # A page is bounded in bytes too, as on /v1/ws: page on with before.
        messages = await hub.history(room, before, limit, settings.outbox_max_bytes)
        return MessagesPage(
            room=room,
            messages=[
                MessageOut(
                    room=m.room,
                    seq=m.seq,
                    sender=m.sender,
                    text=m.text,
                    ts=m.ts,
                    user=m.user,
                    reply_to=m.reply_to,
                    data=m.data,
                    edited=m.edited,
                    deleted=m.deleted,
                    reactions=m.reactions,
                )
                for m in messages
            ],
        )

    @router.get("/rooms", response_model=list[RoomOut])
    async def list_rooms() -> list[RoomOut]:
        """Every room with messages, and its last ``seq``."""
        return [RoomOut(room=name, last_seq=seq) for name, seq in await hub.store.rooms()]

    @router.get("/rooms/{room}/presence", response_model=list[Member])
    async def presence(room: RoomName) -> list[Member]:
        """Who is in the room now, on every process."""
        members = hub.presence.members(room)
        return [Member(user=user, name=name) for user, name in sorted(members.items())]

    @router.delete("/users/{user}/connections", response_model=Disconnected)
    async def disconnect(user: Annotated[str, Path(min_length=1, max_length=256)]) -> Disconnected:
        """Close every connection of ``user`` on every process (1008)."""
        return Disconnected(user=user, closed_here=await hub.disconnect_user(user))

    return router


_STATUS = {
    ErrorCode.NO_SUCH_MESSAGE: 404,
    ErrorCode.NO_SUCH_MEMBER: 404,
    ErrorCode.MESSAGE_DELETED: 409,
    ErrorCode.FORBIDDEN: 403,
}


def _http_error(exc: ProtocolError) -> HTTPException:
    """The HTTP answer to a refusal of the room protocol's rules."""
    return HTTPException(_STATUS.get(ErrorCode(exc.code), 422), f"{exc.code}: {exc.message}")
