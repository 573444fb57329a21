"""The HTTP API under ``/api/v1``, for the application's own backend.

Every call needs ``Authorization: Bearer <--api-key>``; without a configured key the
API refuses everything. Request bodies and parameters are validated by FastAPI: a bad
one is answered 422 with a body that says what is wrong.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from hubbub.hub import Hub
from hubbub.protocol import ROOM_PATTERN

RoomName = Annotated[str, Path(pattern=ROOM_PATTERN, description="A room name.")]
# Module level: FastAPI resolves these annotations by name, and a closure's are out of reach.
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class PostMessage(BaseModel):
    """A message posted by the server side."""

    text: str = Field(min_length=0, max_length=65536, description="The message text.")
    sender: str = Field(
        "server", alias="from", min_length=1, max_length=64, description="Shown as `from`."
    )


class Posted(BaseModel):
    """Where the message went."""

    room: str
    seq: int
    ts: str


class MessageOut(BaseModel):
    """One stored message."""

    room: str
    seq: int
    sender: str = Field(serialization_alias="from")
    text: str
    ts: str


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


def api_router(hub: Hub) -> APIRouter:
    """Routes of the HTTP API."""
    api_key = hub.settings.api_key

    def authorized(credentials: Credentials) -> None:
        if api_key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the API is off: set HUBBUB_API_KEY")
        if credentials is None or not hmac.compare_digest(
            credentials.credentials.encode(), api_key.encode()
        ):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong API key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix="/api/v1", tags=["api"], dependencies=[Depends(authorized)])

    @router.post("/rooms/{room}/messages", status_code=201, response_model=Posted)
    async def post_message(room: RoomName, body: PostMessage) -> Posted:
        """Post to a room as the server; every member on every process receives it."""
        if "\x00" in body.text:
            raise HTTPException(422, "text contains NUL")
        message = await hub.send_to_room(room, body.sender, body.text)
        return Posted(room=room, seq=message.seq, ts=message.ts)

    @router.get("/rooms/{room}/messages", response_model=MessagesPage, response_model_by_alias=True)
    async def read_messages(
        room: RoomName,
        before: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> MessagesPage:
        """The last ``limit`` messages before ``before`` (or the newest), ascending."""
        messages = await hub.history(room, before, limit)
        return MessagesPage(
            room=room,
            messages=[
                MessageOut(room=m.room, seq=m.seq, sender=m.sender, text=m.text, ts=m.ts)
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
