"""The ``/v1/ws`` protocol: every frame, decoded, validated and encoded in one place.

Pure functions and typed frame classes (msgspec Structs), no I/O; ``docs/protocol.md``
is the specification these follow.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

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


# -- client -> server -------------------------------------------------------------


class Frame(Struct, tag_field="type", forbid_unknown_fields=False):
    """Base of every frame; ``type`` is the tag."""


class Join(Frame, tag="join"):
    """Join ``room`` (created on first use); ``since``: resume after this ``seq``."""

    room: Room
    since: Seq | None = None
    epoch: Epoch | None = None  # the deployment ``since`` came from


class Leave(Frame, tag="leave"):
    """Leave ``room``."""

    room: Room


class Send(Frame, tag="send"):
    """Post ``text`` to ``room``; ``ref`` comes back in the ``ack``."""

    room: Room
    text: str
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


ClientFrame = Join | Leave | Send | History | Ping | Hello | Refresh
CLIENT_TYPES = frozenset({"join", "leave", "send", "history", "ping", "hello", "refresh"})

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


class Message(Frame, tag="message"):
    """One message of a room, as stored and as delivered."""

    room: str
    seq: int
    sender: str = field(name="from")
    text: str
    ts: str


class Joined(Frame, tag="joined", omit_defaults=True):
    """Answer to ``join``: the room's last ``seq`` and who is in it; ``reset``: the
    join's ``since`` was of another epoch and was ignored."""

    room: str
    seq: int
    members: list[str]
    epoch: str | None = None
    reset: bool = False


class Left(Frame, tag="left"):
    """Answer to ``leave``."""

    room: str


class Ack(Frame, tag="ack", omit_defaults=True):
    """Answer to ``send``: the ``seq`` the message got."""

    room: str
    seq: int
    ref: str | int | None = None


class HistoryPage(Frame, tag="history"):
    """Answer to ``history``: messages in ascending ``seq``."""

    room: str
    messages: list[Message]


class Pong(Frame, tag="pong", omit_defaults=True):
    """Answer to ``ping``."""

    ref: str | int | None = None


class Presence(Frame, tag="presence"):
    """Who joined or left a room."""

    room: str
    joined: list[str]
    left: list[str]


class Error(Frame, tag="error", omit_defaults=True):
    """A refused frame; the connection stays open unless a close follows."""

    code: str
    message: str
    ref: str | int | None = None


ServerFrame = Welcome | Message | Joined | Left | Ack | HistoryPage | Pong | Presence | Error

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
    return encode(Error(code=str(exc.code), message=exc.message, ref=exc.ref))


def timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds, as messages carry it."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decode_message(raw: bytes) -> Message:
    """A ``message`` frame as the broker carries it between processes."""
    return msgspec.json.decode(raw, type=Message)
