"""Outgoing WebSocket frames, encoded once and shared by every recipient."""

from __future__ import annotations

import struct
import zlib
from typing import Any

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82
_RSV1 = 0x40  # permessage-deflate: this message is compressed (RFC 7692 §6)
_TAIL = b"\x00\x00\xff\xff"


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


def deflate(payload: bytes, window_bits: int) -> bytes:
    """``payload`` compressed for permessage-deflate, with no context from earlier
    messages (``server_no_context_takeover``): the same bytes suit every client that
    accepted this window size."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


def encode_deflated_frame(payload: bytes, window_bits: int, first: int = _FIN_TEXT) -> bytes:
    """A final frame carrying ``payload`` compressed (RSV1 set)."""
    return encode_frame(deflate(payload, window_bits), first | _RSV1)


class OutFrame:
    """One text message on its way to one or many clients.

    ``wire`` is the full frame for connections Hubbub's server writes to directly;
    ``asgi_event`` is the ASGI message for connections served by another ASGI server.
    Both are built at most once, however many clients receive the frame.
    """

    __slots__ = ("_asgi_event", "_deflated", "payload", "wire")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.wire = encode_text_frame(payload)
        self._asgi_event: dict[str, Any] | None = None
        self._deflated: dict[int, bytes] | None = None

    def deflated(self, window_bits: int, min_bytes: int) -> bytes:
        """The frame for a client that accepted permessage-deflate with this window:
        compressed once per window size however many clients get it; :attr:`wire` if
        the payload is shorter than ``min_bytes``."""
        if len(self.payload) < min_bytes:
            return self.wire
        cache = self._deflated
        if cache is None:
            cache = self._deflated = {}
        wire = cache.get(window_bits)
        if wire is None:
            wire = cache[window_bits] = encode_deflated_frame(self.payload, window_bits)
        return wire

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
