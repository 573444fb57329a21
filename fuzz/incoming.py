"""``FrameReader``, the frame splitter in front of websockets' core, on any client bytes.

The input chooses the size limit (125, the least the settings allow; 300; 65 536, the
default), whether permessage-deflate was accepted and with which client window (9 to
15 bits: the reader's ``inflate_bits``), a budget (1 to 4 messages per read) and up to
6 cuts; the rest is the stream, masks included. The reader hands what it reads to a
recording sink: messages, pings, pongs, a failure with its code, and bytes for
websockets' core. Failures:

- the stream read whole and the stream cut into the input's pieces, read with the
  input's budget (reading on with ``read(b"")`` while the budget is spent and bytes are
  pending, as the session does in its next turns), give different items or different
  bytes to the core;
- the core's bytes are not a suffix of the stream;
- anything handed over after a ``fail`` (an item, or bytes to the core);
- a difference from websockets alone where the two must agree. websockets'
  ``ServerProtocol(state=OPEN, max_size=limit)`` gets the same stream (with its
  ``PerMessageDeflate`` extension, no context takeover, the same client window, when
  the input chose deflate); its frames are reassembled into messages (TEXT or BINARY,
  then CONT frames until ``fin``; text decoded as UTF-8), with its pings and pongs, up
  to its first close frame or its error. Both must hand over the same items in the same
  order until one of them stops, and stop for the same reason: a 1002 or 1009 of the
  reader is a ``ProtocolError`` or ``PayloadTooBig`` of websockets after the same
  items; where websockets raised and the reader did not fail, the reader had passed the
  rest to the core by then (so a message websockets takes as valid is one the reader
  hands over, and a frame websockets refuses is one the reader does not handle itself).

The known, intended differences, and the only ones allowed:

1. UTF-8. The reader fails with 1007 at the first invalid byte of a text message, even
   one still arriving; websockets' core passes text on without decoding it. Where the
   reader failed with 1007, websockets may go on (with pings and pongs), but its next
   message, if it has one, must be text that is not UTF-8.
2. A close between fragments. websockets fails with 1002 (or 1009, if the close is
   longer than what its message limit has left, see 3); the reader passes the close to
   the core, which answers it (RFC 6455 §5.4; Autobahn 7.1.5).
3. A control frame between fragments counts against websockets' message limit (its
   parser gives every frame the limit minus the message so far); the reader does not
   count it. So websockets may fail with 1009 at a ping or pong that the reader hands
   over, or still waits for the rest of (websockets fails at the header).
4. Compressed messages. The reader bounds a compressed message's bytes as they arrive
   and inflates it whole at its last frame (1009 if it inflates past the limit, 1007 if
   it is not deflate data); websockets inflates frame by frame, bounding what each frame
   inflates to by what the limit has left (1009), and fails bad deflate data with 1002.
   So where either stops with 1009, or over deflate data, the two need only agree on
   the items before.

Below 125 websockets' limit would cover control frames outside messages as well; the
settings allow no such limit, so the input cannot choose one.
"""

from __future__ import annotations

import logging
import struct
import zlib

import atheris

with atheris.instrument_imports(include=["hubbub", "websockets"]):
    from websockets.exceptions import PayloadTooBig, ProtocolError
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.frames import Opcode
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    from hubbub.transport.incoming import FrameReader

from fuzz._run import run

LIMITS = [125, 300, 65536]  # the least the settings allow, the tests' limit, the default
WHOLE = 1 << 30  # a budget that never runs out

_quiet = logging.getLogger("fuzz.incoming.websockets")  # websockets' "connection closed"
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

Item = tuple[str, object]


class Sink:
    """Records everything a reader hands over, in order (as tests/test_incoming.py)."""

    def __init__(self) -> None:
        self.seen: list[Item] = []
        self.core = bytearray()
        self.pending = False  # the reader's, after the last read
        self.reason = ""  # of the failure

    def on_text(self, text: str) -> None:
        self.seen.append(("text", text))

    def on_bytes(self, data: bytes) -> None:
        self.seen.append(("bytes", data))

    def on_ping(self, payload: bytes) -> None:
        self.seen.append(("ping", payload))

    def on_pong(self) -> None:
        self.seen.append(("pong", None))

    def to_core(self, data: bytes) -> None:
        assert not self.seen or self.seen[-1][0] != "fail", "bytes to the core after a fail"
        self.core += data

    def fail(self, code: int, reason: str) -> None:
        assert "fail" not in (kind for kind, _ in self.seen), "a second fail"
        self.seen.append(("fail", code))
        self.reason = reason


def read_all(pieces: list[bytes], limit: int, bits: int, budget: int) -> Sink:
    sink = Sink()
    reader = FrameReader(sink, limit)
    reader.inflate_bits = bits  # as the session sets it when it accepts permessage-deflate
    for piece in pieces:
        reader.budget = budget
        reader.read(piece)
        while reader.budget == 0 and reader.pending:  # what a budget left for later turns
            reader.budget = budget
            reader.read(b"")
    sink.pending = reader.pending
    return sink


def websockets_alone(stream: bytes, limit: int, bits: int) -> tuple[list[Item], ServerProtocol]:
    """websockets' messages, pings and pongs, up to its first close frame or error; a
    text message is ("text", str), or ("not utf-8", bytes)."""
    core = ServerProtocol(state=State.OPEN, max_size=limit, logger=_quiet)
    if bits:
        # What its handshake would have settled for Hubbub's answer (no context either way).
        core.extensions = [PerMessageDeflate(True, True, bits, 15)]
    core.receive_data(stream)
    items: list[Item] = []
    kind: Opcode | None = None
    parts: list[bytes] = []
    for event in core.events_received():
        opcode = event.opcode  # type: ignore[union-attr]
        data = bytes(event.data)  # type: ignore[union-attr]
        if opcode is Opcode.CLOSE:
            break
        if opcode is Opcode.PING:
            items.append(("ping", data))
            continue
        if opcode is Opcode.PONG:
            items.append(("pong", None))
            continue
        if opcode is not Opcode.CONT:
            kind, parts = opcode, []
        parts.append(data)
        if event.fin:  # type: ignore[union-attr]
            message = b"".join(parts)
            if kind is Opcode.BINARY:
                items.append(("bytes", message))
            else:
                try:
                    items.append(("text", message.decode()))
                except UnicodeDecodeError:
                    items.append(("not utf-8", message))
    return items, core


def check_against_websockets(stream: bytes, limit: int, bits: int, whole: Sink) -> None:
    """The differential of the module doc."""
    expected, core = websockets_alone(stream, limit, bits)
    exc = core.parser_exc
    got = whole.seen
    code = got[-1][1] if got and got[-1][0] == "fail" else None
    if code is not None:
        got = got[:-1]
    through = bool(whole.core)
    shown = (
        f"\n reader     {whole.seen} core={bytes(whole.core[:16])!r}"
        f"\n websockets {expected} {exc!r}"
    )
    assert exc is None or isinstance(exc, ProtocolError | PayloadTooBig | UnicodeDecodeError), (
        f"websockets failed inside{shown}"
    )
    n = min(len(got), len(expected))
    assert got[:n] == expected[:n], f"different items{shown}"
    if bits and (
        code == 1009
        or whole.reason == "bad deflate"
        or isinstance(exc, PayloadTooBig)
        or isinstance(exc and exc.__cause__, zlib.error)
    ):
        return  # a compressed message's size or data: the items before agree (4)
    if len(got) < len(expected):
        # The reader stopped first: only for UTF-8 (difference 1).
        assert code == 1007, f"websockets read on where the reader stopped{shown}"
        rest = [item for item in expected[n:] if item[0] not in ("ping", "pong")]
        assert not rest or rest[0][0] == "not utf-8", f"1007, yet the message is UTF-8{shown}"
    elif len(expected) < len(got):
        # websockets stopped first: only at a control frame between fragments (3).
        assert isinstance(exc, PayloadTooBig) and exc.current_size is not None, (
            f"the reader read on where websockets stopped{shown}"
        )
        assert got[n][0] in ("ping", "pong"), f"the reader read on past a 1009{shown}"
    elif code in (1002, 1009):
        kind = ProtocolError if code == 1002 else PayloadTooBig
        assert isinstance(exc, kind), f"the reader failed with {code}{shown}"
    elif code is None and exc is not None:
        # websockets refused a frame: the reader must not have handled it (2 is one), or,
        # for a control frame between fragments (3), may still wait for the rest of it.
        between = isinstance(exc, PayloadTooBig) and exc.current_size is not None
        assert through or (between and whole.pending), (
            f"websockets refused what the reader took{shown}"
        )
    else:
        assert code in (None, 1007), f"unknown failure {code}{shown}"


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limit = LIMITS[fdp.ConsumeIntInRange(0, len(LIMITS) - 1)]
    bits = fdp.ConsumeIntInRange(0, 15)
    bits = bits if bits >= 9 else 0  # no permessage-deflate, 9 times in 16
    budget = fdp.ConsumeIntInRange(1, 4)
    cuts = [fdp.ConsumeUInt(2) for _ in range(fdp.ConsumeIntInRange(0, 6))]
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    cuts = sorted(cut % (len(stream) + 1) for cut in cuts)
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    whole = read_all([stream], limit, bits, WHOLE)
    cut = read_all(pieces, limit, bits, budget)
    assert (cut.seen, bytes(cut.core)) == (whole.seen, bytes(whole.core)), (
        f"cut at {cuts}, budget {budget}, deflate {bits}:"
        f"\n cut   {cut.seen} core={bytes(cut.core)!r}"
        f"\n whole {whole.seen} core={bytes(whole.core)!r}"
    )
    assert stream.endswith(bytes(whole.core)), "the core's bytes are not the stream's tail"
    kinds = [kind for kind, _ in whole.seen]
    if "fail" in kinds:
        assert kinds.index("fail") == len(kinds) - 1 and not whole.core, "more after a fail"
    check_against_websockets(stream, limit, bits, whole)


_MASK = b"\x37\xfa\x21\x3d"  # fixed, so that the seeds are the same in every run


def _frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + _MASK + bytes(b ^ _MASK[i % 4] for i, b in enumerate(payload))


def _deflated(data: bytes, bits: int = 15) -> bytes:
    compressor = zlib.compressobj(wbits=-bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]  # without the empty block's tail (RFC 7692 §7.2.1)


def _seed(frames: bytes, *, limit: int = 1, bits: int = 0, budget: int = 4, cuts: int = 0) -> bytes:
    # atheris' FuzzedDataProvider takes ConsumeIntInRange's bytes from the end of the
    # input (limit, deflate, budget, number of cuts) and ConsumeUInt's from the front
    # (the cuts, here at bytes 3, 5, ...); the stream is what is between.
    cut_bytes = b"".join((3 + 2 * i).to_bytes(2, "little") for i in range(cuts))
    return cut_bytes + frames + bytes([cuts, budget - 1, bits, limit])


_SNOWMEN = ("☃" * 100).encode()
_BIG = b"chat " * 200  # 1000 bytes that deflate to a few dozen
_Z = _deflated(_SNOWMEN)
SEEDS = [
    _seed(_frame(0x1, b"hello") + _frame(0x2, b"\x00\x01")),
    _seed(_frame(0x1, b"x" * 200) + _frame(0x9, b"ping") + _frame(0x1, b"y"), budget=1, cuts=3),
    _seed(_frame(0x1, b"frag", fin=False) + _frame(0x9, b"") + _frame(0x0, b"ment"), cuts=2),
    _seed(_frame(0x1, "☃".encode()[:1], fin=False) + _frame(0x0, "☃".encode()[1:]), cuts=1),
    _seed(_frame(0x1, b"ok \xc3\x28 then", fin=False) + _frame(0x0, b"x")),
    _seed(_frame(0x1, b"frag", fin=False) + _frame(0x8, b"\x03\xe8") + _frame(0x0, b"ment")),
    _seed(_frame(0x2, b"x" * 100, fin=False) + _frame(0xA, b"p" * 60) + _frame(0x0, b"")),
    _seed(_frame(0x8, b"\x03\xe8bye") + _frame(0x1, b"after close")),
    _seed(_frame(0x1, b"x" * 301)),
    _seed(_frame(0x2, b"x" * 151, fin=False) + _frame(0x0, b"x" * 150)),
    _seed(_frame(0x1, b"a", fin=False) + _frame(0x1, b"b")),
    _seed(_frame(0x0, b"unexpected")),
    _seed(_frame(0x9, b"p" * 126) + _frame(0x1, b"never")),
    _seed(b"\xc1\x85" + _MASK + b"hello"),  # a reserved bit
    _seed(b"\x81\x05hello"),  # unmasked
    _seed(_frame(0x3, b"reserved opcode")),
    # permessage-deflate
    _seed(_frame(0x1, _deflated(b"hello"), rsv1=True) + _frame(0x2, b"plain"), bits=15),
    _seed(_frame(0x1, _Z[:9], fin=False, rsv1=True) + _frame(0x0, _Z[9:]), bits=15, cuts=2),
    _seed(_frame(0x2, _deflated(b"\x00" * 100, 9), rsv1=True) + _frame(0x9, b"p"), bits=9),
    _seed(_frame(0x2, _deflated(_BIG), rsv1=True), bits=12),  # inflates past 300
    _seed(_frame(0x1, _deflated(b"ok \xc3\x28"), rsv1=True), bits=15),  # not UTF-8
    _seed(_frame(0x1, b"\xff\xfe not deflate", rsv1=True), bits=15),
    _seed(_frame(0x1, _Z[:9], fin=False, rsv1=True) + _frame(0x0, _Z[9:], rsv1=True), bits=15),
    _seed(_frame(0x1, _deflated(b"no deflate accepted"), rsv1=True)),
]


if __name__ == "__main__":
    run(test_one_input, SEEDS)
