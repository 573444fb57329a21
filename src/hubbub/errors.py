"""Hubbub's error types and the WebSocket close codes (RFC 6455 §7.4) they map to."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """The close codes Hubbub sends, and why."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    PROTOCOL_ERROR = 1002  # a frame the RFC does not allow
    UNSUPPORTED_DATA = 1003  # binary frame on a text endpoint
    INVALID_DATA = 1007  # text frame that is not UTF-8
    POLICY_VIOLATION = 1008  # refused credentials, slow consumer
    NO_STATUS = 1005  # received only: the peer's close frame had no code
    ABNORMAL = 1006  # never sent: the connection ended without a close frame
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # also: keepalive ping timeout
    TRY_AGAIN_LATER = 1013  # connection limit reached


class ErrorCode(StrEnum):
    """Why the server refused something (``error.code`` on the wire)."""

    BAD_JSON = "bad_json"  # not JSON at all
    BAD_FRAME = "bad_frame"  # JSON, but not a valid frame: missing/wrong field
    UNKNOWN_TYPE = "unknown_type"
    NOT_JOINED = "not_joined"  # send/history/leave for a room this connection is not in
    TOO_MANY_ROOMS = "too_many_rooms"
    TEXT_TOO_LONG = "text_too_long"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # the store cannot be reached right now
    UNAUTHORIZED = "unauthorized"  # no identity, or a token that is forged or malformed
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    INVALID_NAME = "invalid_name"
    NAME_TAKEN = "name_taken"  # another user in the room has that display name
    FORBIDDEN = "forbidden"  # the identity may not read (join) or write (send) the room
    NO_SUCH_MESSAGE = "no_such_message"  # a seq that is not a message of the room
    MESSAGE_DELETED = "message_deleted"  # edit or react of a deleted message
    NOT_YOURS = "not_yours"  # edit (or delete, as a member) of someone else's message
    BAD_EMOJI = "bad_emoji"
    TOO_MANY_REACTIONS = "too_many_reactions"
    DATA_TOO_LARGE = "data_too_large"
    MUTED = "muted"  # send/edit/react by a user muted in the room
    BANNED = "banned"  # join of a room the user is banned from
    NO_SUCH_MEMBER = "no_such_member"  # moderate/role naming a user who is not a member
    REFUSED = "refused"  # a send or edit the publish hook refused (docs/hooks.md)


class HubbubError(Exception):
    """Base of every error Hubbub raises on purpose.

    Each type says how a client is answered, here and nowhere else (``hub.answer`` is
    the one place that answers): ``code``, if set, goes into an ``error`` frame with
    ``message`` and ``ref``; ``close_code``, if set, then closes the connection, with
    ``close_reason`` (else ``code``) as the reason.

    - :class:`ProtocolError`: an ``error`` frame with its :class:`ErrorCode`; stays open
      (:class:`NameTaken`: ``name_taken``).
    - :class:`Unauthenticated`: an ``error`` frame with the refusal's code, then 1008
      with the code as reason.
    - :class:`TooManyRefusals`, :class:`DisconnectedByServer`: 1008.
    - :class:`ServerBusy`: 1013.
    - :class:`OriginNotAllowed`: 1008 before the upgrade (an HTTP 403).
    - :class:`SlowConsumer` (1008), :class:`BinaryRefused` (1003),
      :class:`EndpointFailed` and :class:`KeepaliveTimeout` (1011), :class:`ShuttingDown`
      (1001): closes the connection or the transport chooses (``Connection.close_for``);
      frame-level errors (1002, 1007, 1009) are decided where frames are read
      (``transport/incoming.py`` and websockets' core).
    - ``auth.AuthError``: answered as :class:`Unauthenticated` while the identity is
      settled, as a :class:`ProtocolError` when a ``refresh`` is refused.
    """

    code: str | None = None
    close_code: CloseCode | None = None
    close_reason: str = ""

    def __init__(self, message: str = "", ref: str | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref
        self.room: str | None = None  # the room the refused frame named, if it did


class ConfigurationError(HubbubError):
    """The settings ask for something that cannot work (e.g. memory broker with workers > 1)."""


class ProtocolError(HubbubError):
    """Something the client sent that the server refuses; the connection stays open."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str, ref: str | int | None = None) -> None:
        super().__init__(message, ref)
        self.code = code


class NameTaken(ProtocolError):
    """Another user in the room already goes by this display name."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.NAME_TAKEN, message)


class Closing(HubbubError):
    """An error after which the connection is closed."""

    close_code: CloseCode = CloseCode.POLICY_VIOLATION


class Unauthenticated(Closing):
    """The connection has no valid identity (refused at ``hello``, or its token ran out)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BackendUnavailable(Closing):
    """The connect hook could not be asked who the connection is (docs/hooks.md)."""

    code = ErrorCode.UNAVAILABLE
    close_code = CloseCode.TRY_AGAIN_LATER
    close_reason = "backend unavailable, try again later"


class TooManyRefusals(Closing):
    """The client went on sending what was refused (past ``--max-errors``)."""

    close_reason = "too many refused frames"


class ServerBusy(Closing):
    """Past ``--max-connections``, or shutting down."""

    close_code = CloseCode.TRY_AGAIN_LATER
    close_reason = "server busy, try again later"


class DisconnectedByServer(Closing):
    """The application asked for every connection of a user to be closed (HTTP API)."""

    close_reason = "disconnected by the server"


class OriginNotAllowed(Closing):
    """A session cookie from a page that is not trusted (cross-site WebSocket hijacking)."""

    close_reason = "origin not allowed"


class SlowConsumer(Closing):
    """The client's outbox overflowed: it does not read fast enough."""

    close_reason = "slow consumer"


class BinaryRefused(Closing):
    """A binary message on an endpoint that takes text only."""

    close_code = CloseCode.UNSUPPORTED_DATA
    close_reason = "text frames only"


class EndpointFailed(Closing):
    """The endpoint raised while handling a message (a bug, logged with its traceback)."""

    close_code = CloseCode.INTERNAL_ERROR
    close_reason = "internal error"


class KeepaliveTimeout(Closing):
    """No pong within ``--ping-timeout``."""

    close_code = CloseCode.INTERNAL_ERROR
    close_reason = "keepalive ping timeout"


class ShuttingDown(Closing):
    """The server is stopping (SIGTERM/SIGINT): reconnect elsewhere or later."""

    close_code = CloseCode.GOING_AWAY
    close_reason = "server shutting down"
