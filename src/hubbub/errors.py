"""Hubbub's error types and the WebSocket close codes (RFC 6455 §7.4) they map to."""

from __future__ import annotations

from enum import IntEnum


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


class HubbubError(Exception):
    """Base of every error Hubbub raises on purpose."""


class ConfigurationError(HubbubError):
    """The settings ask for something that cannot work (e.g. memory broker with workers > 1)."""


class BrokerUnavailable(HubbubError):
    """The broker cannot be reached right now."""
