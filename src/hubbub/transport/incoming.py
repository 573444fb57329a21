"""Incoming WebSocket frames: a splitter in front of websockets' sans-I/O core.

Chat traffic is almost only whole, masked text frames, and websockets' parser resumes
about ten generators per frame (~30 % of the server's CPU per echo round trip, by
py-spy). :class:`FrameReader` finds frame boundaries itself and handles what it can
check completely in a few lines: data frames (whole or fragmented, with the size limit
and UTF-8 checked as they arrive, so a bad fragment fails at once), well-formed pings
and pongs, and a well-formed close frame (a valid code and a UTF-8 reason, or no
payload), which it hands to the session with its code and ignores every byte after it.
Everything else — a close frame with a bad code or reason, anything with reserved bits,
an unknown opcode, no mask, an oversized or fragmented control frame — and every byte
after it goes to websockets' :class:`~websockets.server.ServerProtocol` through its
documented ``receive_data``, starting at that frame's first byte, so websockets decides
the error and its close code.

A close frame in the middle of a fragmented message is answered like any other close
(RFC 6455 §5.4 lets control frames interleave with fragments): websockets alone would
fail such a connection with 1002, since only this reader knows about the fragments.
"""

from __future__ import annotations

import codecs
from typing import Protocol

from hubbub.errors import CloseCode
from hubbub.transport.deflate import inflate
from hubbub.upstream import apply_mask

_FIN = 0x80
_RSV = 0x70
_RSV1 = 0x40  # permessage-deflate: the message is compressed
_OPCODE = 0x0F
_MASK = 0x80
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# Close codes a peer may send (RFC 6455 §7.4.1 and IANA's registry, as websockets
# accepts them), besides 3000-4999.
_PEER_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


class FrameSink(Protocol):
    """Where a :class:`FrameReader` sends what it reads (the WebSocket session)."""

    def on_text(self, text: str) -> None:
        """A whole text message."""

    def on_bytes(self, data: bytes) -> None:
        """A whole binary message."""

    def on_ping(self, payload: bytes) -> None:
        """A valid ping: answer it."""

    def on_pong(self) -> None:
        """A valid pong."""

    def on_close(self, code: int, payload: bytes) -> None:
        """A well-formed close frame: ``code`` (1005 for none) and its whole payload."""

    def to_core(self, data: bytes) -> None:
        """Bytes for websockets' core, from a frame boundary on."""

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7) with ``code``."""


class FrameReader:
    """Splits one client's byte stream into frames (see the module doc).

    :meth:`read` hands over at most :attr:`budget` messages, then keeps the rest; the
    owner calls :meth:`read` again (with no data) to go on. Set :attr:`budget` to 0 to
    stop after the message being handed over.
    """

    __slots__ = (
        "_buffer",
        "_checked",
        "_compressed",
        "_decoded",
        "_decoder",
        "_kind",
        "_parts",
        "_probe",
        "_size",
        "budget",
        "done",
        "dropping",
        "inflate_bits",
        "max_size",
        "sink",
        "through",
    )

    def __init__(self, sink: FrameSink, max_size: int) -> None:
        self.sink = sink
        self.max_size = max_size
        self.budget = 0
        self.through = False  # everything goes to websockets' core from now on
        self.dropping = False  # our close is sent: data frames are dropped
        self.done = False  # failed, or the close is read: every further byte is ignored
        self.inflate_bits = 0  # permessage-deflate accepted: the client's window, else 0
        self._compressed = False  # the fragmented message being read is compressed
        self._buffer: bytearray | None = None  # the start of an incomplete frame
        self._kind = 0  # opcode of the fragmented message being read, or 0
        self._parts: list[bytes] = []
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._decoded: list[str] = []
        # UTF-8 of a text frame still arriving: payload bytes checked, and the decoder.
        self._checked = 0
        self._probe: codecs.IncrementalDecoder | None = None

    @property
    def pending(self) -> bool:
        """True while bytes wait that may hold a whole frame (more after a budget)."""
        return bool(self._buffer) and not self.through

    def read(self, data: bytes) -> None:
        """Read ``data`` (after what is pending) until it runs out or the budget does."""
        if self.done or self.through:
            if data and not self.done:
                self.sink.to_core(data)
            return
        pending = self._buffer
        if pending:
            pending += data  # amortised: a frame arriving in many reads is not re-copied
            buffer: bytes | bytearray = pending
        else:
            buffer = data
        size = len(buffer)
        start = 0
        sink = self.sink
        while size - start >= 2 and self.budget > 0:
            first = buffer[start]
            second = buffer[start + 1]
            opcode = first & _OPCODE
            rsv = first & _RSV
            if rsv and (
                rsv != _RSV1 or not self.inflate_bits or not OP_TEXT <= opcode <= OP_BINARY
            ):
                break  # RSV1 only starts a compressed message: websockets fails the rest
            if not second & _MASK or (opcode > OP_BINARY and opcode < OP_CLOSE):
                break  # invalid: websockets fails the connection with its code
            if opcode > OP_PONG:
                break
            length = second & 0x7F
            header = 6
            if length == 126:
                header = 8
                if size - start < 4:
                    start = -start - 1  # incomplete
                    break
                length = int.from_bytes(buffer[start + 2 : start + 4], "big")
            elif length == 127:
                header = 14
                if size - start < 10:
                    start = -start - 1
                    break
                length = int.from_bytes(buffer[start + 2 : start + 10], "big")
            if opcode >= OP_CLOSE:
                if not first & _FIN or length > 125 or (opcode == OP_CLOSE and length == 1):
                    break  # websockets checks and answers these
            elif length > self.max_size - self._size:
                self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
                break
            end = start + header + length
            if end > size:
                # A text frame in its place (else the sequence error comes first).
                if (opcode == OP_TEXT and not self._kind and not rsv) or (
                    opcode == OP_CONT and self._decoder is not None
                ):
                    self._check_partial(buffer, start + header, size)
                start = -start - 1
                break
            if self._checked:
                self._checked = 0
                self._probe = None
            payload = apply_mask(
                buffer[start + header : end], buffer[start + header - 4 : start + header]
            )
            if opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if payload else CloseCode.NO_STATUS
                if payload and not (_valid_close_code(code) and _is_utf8(payload[2:])):
                    break  # websockets fails it with 1002 or 1007
                self._reset()
                self._buffer = None
                self.done = True
                sink.on_close(code, payload)
                return
            start = end
            if opcode == OP_PING:
                if not self.dropping:
                    sink.on_ping(payload)
            elif opcode == OP_PONG:
                sink.on_pong()
            elif not self._data(opcode, first & _FIN, payload, rsv):
                break  # failed
        else:
            # Out of data or of budget, at a frame boundary.
            self._keep(buffer, start, size, pending)
            return
        if self.done:
            return
        if start < 0:  # an incomplete frame starts at -start - 1
            self._keep(buffer, -start - 1, size, pending)
            return
        # A frame for websockets' core: from here on, every byte is.
        self.through = True
        self._buffer = None
        self._reset()
        sink.to_core(bytes(buffer[start:]))

    def _check_partial(self, buffer: bytes | bytearray, payload_start: int, size: int) -> bool:
        """Fail at once on invalid UTF-8 in the part of a text frame that has arrived
        (RFC 6455 §8.1); False if it failed."""
        checked = self._checked
        if self.dropping or payload_start + checked >= size:
            return True
        probe = self._probe
        if probe is None:
            probe = self._probe = _utf8_decoder()
            if self._decoder is not None:  # a continuation: start where the message is
                probe.setstate(self._decoder.getstate())
        mask = bytes(buffer[payload_start - 4 : payload_start])
        turn = checked % 4
        chunk = apply_mask(buffer[payload_start + checked : size], mask[turn:] + mask[:turn])
        self._checked = size - payload_start
        try:
            probe.decode(chunk, final=False)
        except UnicodeDecodeError:
            return self._fail(CloseCode.INVALID_DATA, "invalid UTF-8")
        return True

    def _keep(
        self, buffer: bytes | bytearray, start: int, size: int, pending: bytearray | None
    ) -> None:
        if pending:
            del pending[:start]
        elif start < size:
            self._buffer = bytearray(buffer[start:])

    def _data(self, opcode: int, fin: int, payload: bytes, compressed: int) -> bool:
        """One data frame; False if it failed the connection."""
        kind = self._kind
        if opcode == OP_CONT:
            if not kind:
                return self._fail(CloseCode.PROTOCOL_ERROR, "unexpected continuation frame")
        elif kind:
            return self._fail(CloseCode.PROTOCOL_ERROR, "expected a continuation frame")
        elif fin:
            return self._whole(opcode, payload, compressed)
        else:
            kind = self._kind = opcode
            if compressed:
                self._compressed = True  # decoded once inflated, at the end
            elif opcode == OP_TEXT:
                self._decoder = _utf8_decoder()
        return self._fragment(kind, fin, payload)

    def _inflated(self, payload: bytes) -> bytes | None:
        out = inflate(payload, self.inflate_bits, self.max_size)
        if isinstance(out, int):
            self._fail(
                out, "message too big" if out == CloseCode.MESSAGE_TOO_BIG else "bad deflate"
            )
            return None
        return out

    def _whole(self, opcode: int, payload: bytes, compressed: int = 0) -> bool:
        if self.dropping:
            return True
        if compressed:
            inflated = self._inflated(payload)
            if inflated is None:
                return False
            payload = inflated
        self.budget -= 1
        if opcode == OP_BINARY:
            self.sink.on_bytes(payload)
            return True
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            return self._fail(CloseCode.INVALID_DATA, "invalid UTF-8")
        self.sink.on_text(text)
        return True

    def _fragment(self, kind: int, fin: int, payload: bytes) -> bool:
        # The size so far counts (checked at the header); text is decoded as it comes.
        self._size += len(payload)
        decoder = self._decoder
        if decoder is not None:
            try:
                self._decoded.append(decoder.decode(payload, final=bool(fin)))
            except UnicodeDecodeError:
                return self._fail(CloseCode.INVALID_DATA, "invalid UTF-8")
        else:
            self._parts.append(payload)
        if not fin:
            return True
        decoded, parts = self._decoded, self._parts
        compressed = self._compressed
        self._reset()
        if compressed:
            return self._whole(kind, b"".join(parts), 1)
        if not self.dropping:
            self.budget -= 1
            if kind == OP_TEXT:
                self.sink.on_text("".join(decoded))
            else:
                self.sink.on_bytes(b"".join(parts))
        return True

    def _fail(self, code: int, reason: str) -> bool:
        self._reset()
        self._buffer = None
        self.done = True
        self.sink.fail(code, reason)
        return False

    def _reset(self) -> None:
        self._compressed = False
        self._checked = 0
        self._probe = None
        self._kind = self._size = 0
        self._parts = []
        self._decoded = []
        self._decoder = None


def _valid_close_code(code: int) -> bool:
    return code in _PEER_CLOSE_CODES or 3000 <= code < 5000


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
