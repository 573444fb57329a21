"""errors.py: each error type says how a client is answered, and hub.answer does it."""

from __future__ import annotations

import json

import pytest

from hubbub.auth import AuthError
from hubbub.errors import (
    CloseCode,
    ConfigurationError,
    DisconnectedByServer,
    ErrorCode,
    HubbubError,
    NameTaken,
    OriginNotAllowed,
    ProtocolError,
    ServerBusy,
    TooManyRefusals,
    Unauthenticated,
)
from hubbub.hub import answer
from hubbub.outgoing import OutFrame


class AnsweredConnection:
    """Keeps what the client is told: error frames, and the close."""

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.closed: list[tuple[int, str]] = []

    def send_one(self, frame: OutFrame) -> None:
        self.frames.append(json.loads(frame.payload))

    def close(self, code: int, reason: str = "") -> None:
        self.closed.append((code, reason))


@pytest.mark.parametrize(
    ("error", "frames", "closed"),
    [
        (
            ProtocolError(ErrorCode.NOT_JOINED, "join first", "r1"),
            [{"type": "error", "code": "not_joined", "message": "join first", "ref": "r1"}],
            [],
        ),
        (
            NameTaken("'Ann' is already in lobby"),
            [{"type": "error", "code": "name_taken", "message": "'Ann' is already in lobby"}],
            [],
        ),
        (
            Unauthenticated("token_expired", "the token has expired"),
            [{"type": "error", "code": "token_expired", "message": "the token has expired"}],
            [(1008, "token_expired")],
        ),
        (TooManyRefusals(), [], [(1008, "too many refused frames")]),
        (ServerBusy(), [], [(1013, "server busy, try again later")]),
        (DisconnectedByServer(), [], [(1008, "disconnected by the server")]),
    ],
)
def test_each_error_is_answered_as_its_type_says(
    error: HubbubError, frames: list[dict[str, object]], closed: list[tuple[int, str]]
) -> None:
    connection = AnsweredConnection()
    answer(connection, error)  # type: ignore[arg-type]
    assert (connection.frames, connection.closed) == (frames, closed)


def test_every_error_hubbub_answers_is_a_hubbub_error() -> None:
    for error in (ProtocolError, NameTaken, Unauthenticated, AuthError, ConfigurationError):
        assert issubclass(error, HubbubError)
    # Refused before the upgrade: FastAPI turns the close code into HTTP 403.
    assert (OriginNotAllowed.close_code, OriginNotAllowed.close_reason) == (
        CloseCode.POLICY_VIOLATION,
        "origin not allowed",
    )
    # What the client sent wrong leaves the connection open.
    assert ProtocolError.close_code is None and NameTaken.close_code is None
