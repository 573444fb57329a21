"""``FramingServerProtocol`` against websockets' ``ServerProtocol``, differentially.

Both get the same handshake, then the same arbitrary bytes, cut into the same pieces;
after each piece they must show the same events, the same bytes to send, the same
state, the same kind of parser error and the same close frames (what uvicorn looks
at after each read). The input chooses the size limit and the cuts; the rest is the
byte stream, masks included.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["hubbub", "websockets"]):
    from websockets.frames import Frame
    from websockets.server import ServerProtocol

    from hubbub.framing import FramingServerProtocol

from tests.rawws import frame, handshake_request

from fuzz._run import run

LIMITS = [300, 65536, None]  # the tests' limit, Hubbub's default, none


def opened(cls: type[ServerProtocol], max_size: int | None) -> ServerProtocol:
    """A server protocol past its opening handshake, as uvicorn drives it."""
    protocol = cls(max_size=max_size)
    protocol.receive_data(handshake_request("/ws", 8000))
    (request,) = protocol.events_received()
    protocol.send_response(protocol.accept(request))  # type: ignore[arg-type]
    protocol.data_to_send()
    return protocol


def seen(protocol: ServerProtocol) -> tuple[object, ...]:
    events = [
        (e.opcode, bytes(e.data), e.fin) for e in protocol.events_received() if isinstance(e, Frame)
    ]
    return (
        events,
        protocol.data_to_send(),
        protocol.state,
        type(protocol.parser_exc),
        protocol.close_rcvd,
        protocol.close_sent,
    )


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    max_size = LIMITS[fdp.ConsumeIntInRange(0, len(LIMITS) - 1)]
    cuts = [fdp.ConsumeUInt(2) for _ in range(fdp.ConsumeIntInRange(0, 6))]
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    cuts = sorted(cut % (len(stream) + 1) for cut in cuts)
    plain, fast = opened(ServerProtocol, max_size), opened(FramingServerProtocol, max_size)
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        plain.receive_data(stream[a:b])
        fast.receive_data(stream[a:b])
        expected, got = seen(plain), seen(fast)
        assert got == expected, f"after byte {b}:\n fast  {got}\n plain {expected}"


def _seed(frames: bytes, cuts: int = 0) -> bytes:
    # Limit 300, ``cuts`` cuts (at bytes 3, 5, ...), then the stream.
    head = bytes([0, cuts]) + b"".join((3 + 2 * i).to_bytes(2, "little") for i in range(cuts))
    return head + frames


SEEDS = [
    _seed(frame(0x1, b"hello") + frame(0x2, b"\x00\x01")),
    _seed(frame(0x1, b"x" * 200) + frame(0x9, b"ping"), cuts=3),
    _seed(frame(0x1, b"frag", fin=False) + frame(0x0, b"ment") + frame(0xA, b"")),
    _seed(frame(0x8, b"\x03\xe8bye") + frame(0x1, b"after close")),
    _seed(frame(0x1, b"x" * 301)),
    _seed(b"\x81\x05hello"),  # unmasked
]


if __name__ == "__main__":
    run(test_one_input, SEEDS)
