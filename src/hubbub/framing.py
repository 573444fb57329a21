"""Incoming WebSocket frames, with a fast path for the common case.

websockets' sans-I/O parser is a chain of generators: every frame resumes about ten
of them, which was ~30 % of the server's CPU per echo round trip (py-spy). Chat
traffic is almost only whole, masked, unfragmented text frames, so
:class:`FramingServerProtocol` reads frame boundaries itself and turns those frames
into events directly. Every other frame — ping, pong, close, fragments, anything with
reserved bits, an unknown opcode, no mask, or over the size limit — is handed to
websockets' own parser *as one whole frame*, so its rules, errors and close codes
apply unchanged; the parser is always at a frame boundary when it gets one.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY
_FAST = {0x81: _TEXT, 0x82: _BINARY}  # first byte: FIN, no reserved bits, text/binary
_FRAMEABLE = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})  # opcodes websockets accepts


class FramingServerProtocol(ServerProtocol):
    """websockets' :class:`ServerProtocol` with the fast path described above.

    It adds no state that needs an ``__init__``: an existing ``ServerProtocol`` that
    has not received data yet may become one by class assignment (how the server
    protocol upgrades the one uvicorn builds, rather than building a second one).
    """

    # None: the handshake request is next; True: frames are read here; False:
    # websockets' parser has everything (after a close frame, an error, or an invalid
    # frame). Class attributes are the initial values.
    _framing: bool | None = None
    _pending: bytearray | None = None  # the start of an incomplete frame

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._framing is None:
            # uvicorn hands over the opening handshake alone in one call (re-serialised)
            # and whatever followed it in later calls: after it, the parser is at a
            # frame boundary.
            super().receive_data(data)
            self._framing = self.parser_exc is None and not self.reader.buffer
            return
        if not self._framing:
            super().receive_data(data)
            return
        pending = self._pending
        if pending:
            pending += data  # amortised: a frame arriving in many reads is not re-copied
            buffer: bytes | bytearray = pending
        else:
            buffer = data
        size = len(buffer)
        events = self.events
        start = 0
        while size - start >= 2:
            limit = self._frame_limit()
            first = buffer[start]
            second = buffer[start + 1]
            if first & 0x70 or (first & 0x0F) not in _FRAMEABLE or not second & 0x80:
                # Invalid: websockets' parser fails the connection on these two bytes.
                self._pass_through(buffer[start:])
                return
            length = second & 0x7F
            header = 2
            if length == 126:
                header = 4
                if size - start < header:
                    break
                length = int.from_bytes(buffer[start + 2 : start + 4], "big")
            elif length == 127:
                header = 10
                if size - start < header:
                    break
                length = int.from_bytes(buffer[start + 2 : start + 10], "big")
            if limit is not None and length > limit:
                self._pass_through(buffer[start:])  # fails with 1009, without the payload
                return
            end = start + header + 4 + length
            if end > size:
                break
            opcode = _FAST.get(first)
            if opcode is not None and self.current_size is None and self._parsing():
                mask = buffer[start + header : start + header + 4]
                events.append(Frame(opcode, apply_mask(buffer[start + header + 4 : end], mask)))
            else:
                super().receive_data(buffer[start:end])
                if not self._parsing():  # closed or failed: the parser discards the rest
                    self._pass_through(buffer[end:])
                    return
            start = end
        if pending:
            del pending[:start]
        elif start < size:
            self._pending = bytearray(buffer[start:])

    def _frame_limit(self) -> int | None:
        # The largest next frame websockets accepts (as in Protocol.parse).
        limit = self.max_message_size
        if limit is not None and self.current_size is not None:
            limit -= self.current_size
        if self.max_fragment_size is not None:
            limit = self.max_fragment_size if limit is None else min(limit, self.max_fragment_size)
        return limit

    def _parsing(self) -> bool:
        # websockets still reads frames: no parse error, no close frame received, not
        # failed (fail() and a received close both end our side of the stream).
        return self.parser_exc is None and self.close_rcvd is None and not self.eof_sent

    def _pass_through(self, data: bytes | bytearray) -> None:
        self._framing = False
        self._pending = None
        if data:
            super().receive_data(bytes(data))
