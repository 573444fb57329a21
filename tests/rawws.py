"""A deliberately bare WebSocket client over a plain socket, for misbehaving peers.

It does only what a test tells it to: it never answers pings by itself, never reads
unless asked, and can send broken frames.
"""

from __future__ import annotations

import base64
import os
import socket
import struct

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def handshake_request(path: str, port: int, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawWebSocket:
    """A blocking WebSocket client on a plain socket; every call has a timeout."""

    def __init__(
        self,
        port: int,
        path: str,
        *,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
        early: bytes = b"",
    ) -> None:
        """Connect and complete the handshake; ``early`` is sent in the same write as
        the handshake request, before the answer."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self._buffer = b""
        try:
            self.sock.connect(("127.0.0.1", port))
            self.sock.sendall(handshake_request(path, port) + early)
            head = self._read_until(b"\r\n\r\n")
            self.status = int(head.split(b" ", 2)[1])
            if self.status != 101:
                raise ConnectionError(f"handshake refused: {head!r}")
        except BaseException:
            self.sock.close()
            raise

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise EOFError("connection closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.send(frame(OP_TEXT, text.encode()))

    def recv_frame(self) -> tuple[int, bytes]:
        """The next frame as ``(opcode, payload)``; raises EOFError when the TCP stream ends."""
        b0, b1 = self._read_exactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exactly(8))
        return b0 & 0x0F, self._read_exactly(n)

    def recv_until_close(self) -> tuple[list[tuple[int, bytes]], int | None]:
        """Read every frame until a close frame (its code) or the end of the stream (None)."""
        frames = []
        try:
            while True:
                opcode, payload = self.recv_frame()
                if opcode == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return frames, code
                frames.append((opcode, payload))
        except (EOFError, ConnectionResetError):
            return frames, None

    def close(self) -> None:
        self.sock.close()
