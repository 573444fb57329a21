"""Outgoing WebSocket frames, encoded once and shared by every recipient."""

from __future__ import annotations

import struct
from typing import Any

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


def encode_frame(payload: bytes, first: int = _FIN_TEXT) -> bytes:
    """A complete, unmasked frame (RFC 6455 §5.2) carrying ``payload``; ``first`` is its
    first byte (FIN, RSV1-3 and the opcode; default: a final text frame).

    Server-to-client frames are never masked, so the same bytes are valid on every
    connection: one encoding serves a whole broadcast.
    """
    n = len(payload)
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def encode_text_frame(payload: bytes) -> bytes:
    """A final text frame carrying ``payload`` (UTF-8)."""
    return encode_frame(payload, _FIN_TEXT)


def encode_binary_frame(payload: bytes) -> bytes:
    """A final binary frame carrying ``payload``."""
    return encode_frame(payload, _FIN_BINARY)


class OutFrame:
    """One text message on its way to one or many clients.

    ``wire`` is the full frame for connections Hubbub's server writes to directly;
    ``asgi_event`` is the ASGI message for connections served by another ASGI server.
    Both are built at most once, however many clients receive the frame.
    """

    __slots__ = ("_asgi_event", "payload", "wire")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.wire = encode_text_frame(payload)
        self._asgi_event: dict[str, Any] | None = None

    @classmethod
    def from_text(cls, text: str) -> OutFrame:
        """The frame for a Python string."""
        return cls(text.encode())

    @property
    def size(self) -> int:
        """Bytes this frame occupies on the wire (what outbox budgets count)."""
        return len(self.wire)

    @property
    def asgi_event(self) -> dict[str, Any]:
        """The ``websocket.send`` ASGI message for this frame."""
        if self._asgi_event is None:
            self._asgi_event = {"type": "websocket.send", "text": self.payload.decode()}
        return self._asgi_event
