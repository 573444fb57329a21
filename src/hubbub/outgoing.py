"""Outgoing WebSocket frames, encoded once and shared by every recipient."""

from __future__ import annotations

import struct
from typing import Any

_FIN_TEXT = 0x81


def encode_text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, final text frame (RFC 6455 §5.2) carrying ``payload``.

    Server-to-client frames are never masked, so the same bytes are valid on every
    connection: one encoding serves a whole broadcast.
    """
    n = len(payload)
    if n < 126:
        header = bytes((_FIN_TEXT, n))
    elif n < 65536:
        header = struct.pack("!BBH", _FIN_TEXT, 126, n)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, n)
    return header + payload


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
