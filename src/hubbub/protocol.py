"""The ``/v1/ws`` protocol: every frame, decoded, validated and encoded in one place.

Pure functions and typed frame classes (msgspec Structs), no I/O; ``docs/protocol.md``
is the specification these follow.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import emoji
import msgspec
from msgspec import Meta, Struct, field

# decode and check_text raise ProtocolError (so both are importable from here too).
from hubbub.errors import ErrorCode, HubbubError, ProtocolError

ROOM_NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
# msgspec matches with Python's re, whose $ also matches before a final newline: \Z.
ROOM_PATTERN = rf"^{ROOM_NAME}\Z"
Room = Annotated[str, Meta(pattern=ROOM_PATTERN)]
MAX_SEQ = 2**53
"""The largest ``seq`` (and ``since``/``before``) on the wire: what JavaScript holds exactly."""
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]
Epoch = Annotated[str, Meta(max_length=64)]
Ref = Annotated[str, Meta(max_length=64)] | Annotated[int, Meta(ge=-(2**53), le=2**53)]
Limit = Annotated[int, Meta(ge=1, le=1000)]
UserId = Annotated[str, Meta(min_length=1, max_length=256)]
Emoji = Annotated[str, Meta(min_length=1, max_length=64)]
SendId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Reason = Annotated[str, Meta(max_length=200)]
MAX_REACTIONS = 20
"""Different emoji on one message."""
MAX_DM_OTHERS = 7
MAX_DATA_DEPTH = 8
UNREAD_CAP = 1000
"""Unread counts stop here: 1000 means "1000 or more"."""
TYPING_EXPIRES = 5
"""Seconds a typing indicator shows unless renewed."""
TYPING_EVERY = 2.0
"""Seconds between the typing notices passed on for one user and room."""


# -- client -> server -------------------------------------------------------------


class Frame(Struct, tag_field="type", forbid_unknown_fields=False):
    """Base of every frame; ``type`` is the tag."""


class Join(Frame, tag="join"):
    """Join ``room`` (created on first use); ``since``: resume after this ``seq``."""

    room: Room
    since: Seq | None = None
    epoch: Epoch | None = None  # the deployment ``since`` came from


class Leave(Frame, tag="leave"):
    """Leave ``room``; ``forget``: end the stored membership too."""

    room: Room
    forget: bool = False


class Send(Frame, tag="send"):
    """Post ``text`` to ``room``; ``ref`` comes back in the ``ack``."""

    room: Room
    text: str
    ref: Ref | None = None
    reply_to: Seq | None = None
    data: dict[str, Any] | None = None
    id: SendId | None = None  # stored once per user and room (docs/protocol.md)


class EditMessage(Frame, tag="edit"):
    """Replace the text (and ``data``, if given) of one's own message ``seq``."""

    room: Room
    seq: Seq
    text: str
    data: dict[str, Any] | None = None
    ref: Ref | None = None


class DeleteMessage(Frame, tag="delete"):
    """Delete message ``seq`` (one's own, or any as a moderator)."""

    room: Room
    seq: Seq
    ref: Ref | None = None


class React(Frame, tag="react"):
    """Add (or ``remove``) one's ``emoji`` reaction on message ``seq``."""

    room: Room
    seq: Seq
    emoji: Emoji
    remove: bool = False
    ref: Ref | None = None


class Read(Frame, tag="read"):
    """The user has read ``room`` up to ``seq``."""

    room: Room
    seq: Seq


class ListRooms(Frame, tag="rooms"):
    """Which rooms the user is a member of."""

    ref: Ref | None = None


class Typing(Frame, tag="typing"):
    """The user is typing in ``room`` (or has ``stop``-ped)."""

    room: Room
    stop: bool = False


class OpenDm(Frame, tag="dm"):
    """The direct-message room of the sender and ``users``."""

    users: Annotated[list[UserId], Meta(min_length=1, max_length=MAX_DM_OTHERS)]
    ref: Ref | None = None


ModerationAction = Literal["kick", "ban", "unban", "mute", "unmute"]
Role = Literal["owner", "moderator", "member"]


class Moderate(Frame, tag="moderate"):
    """A moderator's ``action`` on member ``user`` of ``room``."""

    room: Room
    user: UserId
    action: ModerationAction
    reason: Reason | None = None
    ref: Ref | None = None


class SetRole(Frame, tag="role"):
    """An owner makes member ``user`` a moderator (or a member again)."""

    room: Room
    user: UserId
    role: Literal["moderator", "member"]
    ref: Ref | None = None


class History(Frame, tag="history"):
    """Page backwards through ``room``: up to ``limit`` messages with ``seq < before``."""

    room: Room
    before: Seq | None = None
    limit: Limit | None = None


class Hello(Frame, tag="hello"):
    """First frame of a connection that did not authenticate in the URL: a token, or
    (where guests are allowed) a display name."""

    token: str | None = None
    name: str | None = None
    guest: str | None = None  # a guest token: the same guest again


class Refresh(Frame, tag="refresh"):
    """A fresh token for the same user, before the current one expires."""

    token: str


class Ping(Frame, tag="ping"):
    """Application-level heartbeat; answered with ``pong``."""

    ref: Ref | None = None


ClientFrame = (
    Join
    | Leave
    | Send
    | History
    | Ping
    | Hello
    | Refresh
    | EditMessage
    | DeleteMessage
    | React
    | Read
    | ListRooms
    | Typing
    | OpenDm
    | Moderate
    | SetRole
)
CLIENT_TYPES = frozenset(
    {
        "join",
        "leave",
        "send",
        "history",
        "ping",
        "hello",
        "refresh",
        "edit",
        "delete",
        "react",
        "read",
        "rooms",
        "typing",
        "dm",
        "moderate",
        "role",
    }
)

# -- server -> client -------------------------------------------------------------


class Welcome(Frame, tag="welcome", omit_defaults=True):
    """Who the server takes the connection to be; sent once authenticated (and again
    after a ``refresh``). ``expires``: Unix time the token runs out, if it does;
    ``guest_token``: what a guest comes back with; ``epoch``: the deployment's."""

    user: str
    name: str
    guest: bool
    expires: float | None = None
    guest_token: str | None = None
    epoch: str | None = None


class Message(Frame, tag="message", omit_defaults=True):
    """One message of a room, as stored (in its current state) and as delivered.

    ``user``: the author's id (absent on messages stored before it was kept);
    ``edited``: the time of the last edit; ``deleted``: a tombstone (no text, no data);
    ``reactions``: emoji -> the ids of the users who reacted, in order.
    """

    room: str
    seq: int
    sender: str = field(name="from")
    text: str
    ts: str
    user: str | None = None
    reply_to: int | None = None
    data: dict[str, Any] | None = None
    edited: str | None = None
    deleted: bool = False
    reactions: dict[str, list[str]] | None = None
    id: str | None = None  # the send's id, if it had one ("Sent once")


class Edit(Frame, tag="edit", omit_defaults=True):
    """An event: message ``target`` now reads ``text`` (``deleted``: its text is erased,
    as the message was deleted after)."""

    room: str
    seq: int
    target: int
    text: str
    user: str
    sender: str = field(name="from")
    ts: str
    data: dict[str, Any] | None = None
    deleted: bool = False


class Delete(Frame, tag="delete"):
    """An event: message ``target`` is deleted."""

    room: str
    seq: int
    target: int
    user: str
    sender: str = field(name="from")
    ts: str


class Reaction(Frame, tag="reaction"):
    """An event: ``user``'s ``emoji`` on message ``target`` is ``added`` (or removed)."""

    room: str
    seq: int
    target: int
    emoji: str
    added: bool
    user: str
    sender: str = field(name="from")
    ts: str


class Moderation(Frame, tag="moderation", omit_defaults=True):
    """An event: a moderator's ``action`` on ``member`` (``role``: for ``"role"``)."""

    room: str
    seq: int
    action: str
    member: str
    user: str
    sender: str = field(name="from")
    ts: str
    reason: str | None = None
    role: str | None = None


RoomEvent = Message | Edit | Delete | Reaction | Moderation
"""What a room's ``seq`` stream holds."""


class Person(Struct, omit_defaults=True):
    """A user, and the name it goes by; in a room's member list also its ``role`` (if
    not ``member``) and whether it is ``muted`` (only if it is)."""

    user: str
    name: str
    role: str | None = None
    muted: bool | None = None


class Joined(Frame, tag="joined", omit_defaults=True):
    """Answer to ``join``: the room's last ``seq`` and who is in it; ``reset``: the
    join's ``since`` was of another epoch and was ignored."""

    room: str
    seq: int
    members: list[str]
    epoch: str | None = None
    reset: bool = False
    people: list[Person] | None = None


class Left(Frame, tag="left", omit_defaults=True):
    """Answer to ``leave``; also sent, with ``reason``, when a moderator kicks."""

    room: str
    reason: str | None = None


class Ack(Frame, tag="ack", omit_defaults=True):
    """Answer to ``send``: the ``seq`` the message got."""

    room: str
    seq: int | None = None  # none: the change was there already (a reaction)
    ref: str | int | None = None
    repeat: bool | None = None  # a send whose id was stored already: its first seq


class HistoryPage(Frame, tag="history"):
    """Answer to ``history``: messages in ascending ``seq``."""

    room: str
    messages: list[Message]


class Pong(Frame, tag="pong", omit_defaults=True):
    """Answer to ``ping``."""

    ref: str | int | None = None


class Presence(Frame, tag="presence", omit_defaults=True):
    """Who joined or left a room."""

    room: str
    joined: list[str]
    left: list[str]
    joined_people: list[Person] | None = None
    left_people: list[Person] | None = None


class ReadState(Frame, tag="read"):
    """The user has read ``room`` up to ``seq``; ``unread`` messages follow it."""

    room: str
    seq: int
    unread: int


class Receipt(Frame, tag="receipt"):
    """Member ``user`` has read ``room`` up to ``seq``."""

    room: str
    user: str
    name: str
    seq: int


class TypingNotice(Frame, tag="typing", omit_defaults=True):
    """``user`` is typing in ``room`` (for ``expires_in`` seconds), or has stopped."""

    room: str
    user: str
    name: str
    expires_in: int | None = None
    stop: bool = False


class RoomSummary(Struct, omit_defaults=True):
    """One room of a user's list."""

    room: str
    seq: int
    read: int
    unread: int
    role: str
    dm: list[Person] | None = None


class RoomList(Frame, tag="rooms", omit_defaults=True):
    """Answer to ``rooms``."""

    rooms: list[RoomSummary]
    ref: str | int | None = None


class DmOpened(Frame, tag="dm", omit_defaults=True):
    """Answer to ``dm``: the room, and every user of it."""

    room: str
    users: list[str]
    ref: str | int | None = None


class MembershipNotice(Frame, tag="membership", omit_defaults=True):
    """Pushed to every connection of a user when the room enters its list (``member``)
    or leaves it (with ``reason``: ``forgot``, ``kicked``, ``banned``)."""

    room: str
    member: bool
    reason: str | None = None


class Error(Frame, tag="error", omit_defaults=True):
    """A refused frame; the connection stays open unless a close follows."""

    code: str
    message: str
    ref: str | int | None = None
    room: str | None = None


ServerFrame = (
    Welcome
    | Message
    | Edit
    | Delete
    | Reaction
    | Moderation
    | Joined
    | Left
    | Ack
    | HistoryPage
    | Pong
    | Presence
    | Error
    | ReadState
    | Receipt
    | TypingNotice
    | RoomList
    | DmOpened
    | MembershipNotice
)

_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)
_encoder = msgspec.json.Encoder()


def decode(raw: str | bytes) -> ClientFrame:
    """Parse one client frame, or raise :class:`ProtocolError` saying what is wrong."""
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:  # (a subclass of DecodeError: catch it first)
        # Validation can fail before the parser has seen the whole text: parse it all
        # untyped to tell bad JSON from a bad frame, and to find a ref to answer with.
        try:
            obj: Any = msgspec.json.decode(raw)
        except msgspec.DecodeError as bad_json:
            raise ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {bad_json}") from None
        except RecursionError:
            raise _too_deep() from None
        except UnicodeError as not_utf8:
            raise _not_utf8(not_utf8) from None
        if not isinstance(obj, dict):
            raise ProtocolError(ErrorCode.BAD_FRAME, "a frame is a JSON object") from None
        ref = _valid_ref(obj.get("ref"))
        kind = obj.get("type")
        if not isinstance(kind, str) or kind not in CLIENT_TYPES:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind!r}", ref
            ) from None
        raise ProtocolError(ErrorCode.BAD_FRAME, f"{kind}: {exc}", ref) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from None
    except RecursionError:
        # msgspec recurses once per level of nesting, even through unknown fields.
        raise _too_deep() from None
    except UnicodeError as exc:
        # msgspec's own error for a string that is not UTF-8 (bytes) or cannot be
        # encoded as UTF-8 (a str with a lone surrogate); the server passes neither.
        raise _not_utf8(exc) from None


def _not_utf8(exc: UnicodeError) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_JSON, f"not UTF-8 text: {exc}")


def _too_deep() -> ProtocolError:
    # The depth msgspec allows is the interpreter's recursion limit less the caller's
    # stack (some 950 levels); every field of a client frame is a scalar.
    return ProtocolError(ErrorCode.BAD_FRAME, "JSON nested too deeply")


def check_text(text: str, max_chars: int, ref: str | int | None = None) -> None:
    """The one rule for a message's text, on ``/v1/ws`` and in the HTTP API: 1 to
    ``max_chars`` characters, no NUL; else :class:`ProtocolError`."""
    if not text:
        raise ProtocolError(ErrorCode.BAD_FRAME, "text is empty", ref)
    if len(text) > max_chars:
        raise ProtocolError(ErrorCode.TEXT_TOO_LONG, f"text is over {max_chars} characters", ref)
    if "\x00" in text:
        raise ProtocolError(ErrorCode.BAD_FRAME, "text contains NUL", ref)


def check_data(data: dict[str, Any] | None, max_bytes: int, ref: str | int | None = None) -> None:
    """The rule for a message's ``data``: a JSON object of at most ``max_bytes`` once
    encoded and :data:`MAX_DATA_DEPTH` levels deep; else :class:`ProtocolError`."""
    if data is None:
        return
    if len(_encoder.encode(data)) > max_bytes:
        raise ProtocolError(ErrorCode.DATA_TOO_LARGE, f"data is over {max_bytes} bytes", ref)
    if _depth(data) > MAX_DATA_DEPTH:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"data is over {MAX_DATA_DEPTH} levels deep", ref)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_FULLY_QUALIFIED = emoji.STATUS["fully_qualified"]


def normalize_emoji(text: str, ref: str | int | None = None) -> str:
    """``text`` as one fully-qualified emoji (an unqualified ``❤`` is ``❤️``); else
    ``ProtocolError(bad_emoji)``."""
    for candidate in (text, text + "\ufe0f"):
        entry = emoji.EMOJI_DATA.get(candidate)
        if entry is not None and entry.get("status") == _FULLY_QUALIFIED:
            return candidate
    raise ProtocolError(ErrorCode.BAD_EMOJI, f"{text!r} is not one emoji", ref)


def _valid_ref(ref: object) -> str | int | None:
    try:
        valid: str | int = msgspec.convert(ref, Ref)
    except msgspec.ValidationError:
        return None
    return valid


def encode(frame: ServerFrame) -> bytes:
    """The JSON text of one server frame."""
    return _encoder.encode(frame)


def error(exc: HubbubError) -> bytes:
    """The ``error`` frame for ``exc`` (one whose type has a ``code``)."""
    return encode(Error(code=str(exc.code), message=exc.message, ref=exc.ref, room=exc.room))


def timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds, as messages carry it."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


RoomFrame = RoomEvent | TypingNotice | Receipt
_room_frame_decoder: msgspec.json.Decoder[RoomFrame] = msgspec.json.Decoder(RoomFrame)


def decode_room_frame(raw: bytes) -> RoomFrame:
    """What a room's broker channel carries: its events, and typing notices and read
    receipts (never stored)."""
    return _room_frame_decoder.decode(raw)
