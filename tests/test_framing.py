"""framing.py against websockets' own parser: for any bytes a client may send, split
anywhere, the fast path must produce the same events, the same replies and the same
failure as websockets' ServerProtocol alone."""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame
from websockets.server import ServerProtocol

from hubbub.framing import FramingServerProtocol
from tests.rawws import frame, handshake_request

MAX_SIZE = 300


def opened(cls: type[ServerProtocol]) -> ServerProtocol:
    """A server protocol past its opening handshake, as uvicorn drives it."""
    protocol = cls(max_size=MAX_SIZE)
    protocol.receive_data(handshake_request("/ws", 8000))
    (request,) = protocol.events_received()
    protocol.send_response(protocol.accept(request))  # type: ignore[arg-type]
    protocol.data_to_send()
    return protocol


def raw_frame(first: int, payload: bytes, *, masked: bool = True, long_form: bool = False) -> bytes:
    """Any frame, including invalid ones: ``first`` is the whole first byte."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if long_form:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    elif n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    else:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes) -> bytes:
    return struct.pack("!H", code) + reason


frames = st.one_of(
    # Mostly the common case...
    st.builds(lambda p: frame(0x1, p), st.text(max_size=40).map(str.encode)),
    st.builds(lambda p: frame(0x1, p), st.binary(min_size=126, max_size=200)),
    st.builds(lambda p: frame(0x2, p), st.binary(max_size=40)),
    # ...fragments, control frames, closes...
    st.builds(
        lambda op, fin, p: frame(op, p, fin=fin),
        st.sampled_from([0x0, 0x1, 0x2]),
        st.booleans(),
        st.binary(max_size=30),
    ),
    st.builds(frame, st.sampled_from([0x9, 0xA]), st.binary(max_size=130)),
    st.builds(
        lambda code, reason: frame(0x8, close_payload(code, reason)),
        st.sampled_from([1000, 1001, 1005, 1006, 1011, 2000, 3000, 4999, 5000]),
        st.binary(max_size=10),
    ),
    st.just(frame(0x8, b"")),
    # ...and everything a broken or hostile client may send.
    st.builds(
        lambda first, p, masked, long_form: raw_frame(first, p, masked=masked, long_form=long_form),
        st.integers(0, 255),
        st.binary(max_size=40),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(lambda n: frame(0x1, b"x" * n), st.integers(MAX_SIZE - 2, MAX_SIZE + 2)),
    st.binary(min_size=1, max_size=8),  # garbage
)


def events_of(protocol: ServerProtocol) -> list[tuple[object, bytes, bool]]:
    return [
        (e.opcode, bytes(e.data), e.fin) for e in protocol.events_received() if isinstance(e, Frame)
    ]


@settings(max_examples=400)
@given(st.lists(frames, max_size=12), st.data())
def test_fast_path_behaves_exactly_like_websockets(
    chunks: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(chunks)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    plain, fast = opened(ServerProtocol), opened(FramingServerProtocol)
    seen: dict[str, list[object]] = {"plain": [], "fast": []}
    for piece in pieces:
        for name, protocol in (("plain", plain), ("fast", fast)):
            protocol.receive_data(piece)
            # What uvicorn looks at after each read, in the same order.
            seen[name].append(
                (
                    events_of(protocol),
                    protocol.data_to_send(),
                    protocol.state,
                    type(protocol.parser_exc),
                    protocol.close_rcvd,
                    protocol.close_sent,
                )
            )
    assert seen["fast"] == seen["plain"]


def test_a_frame_split_after_its_header_is_read_whole() -> None:
    fast = opened(FramingServerProtocol)
    data = frame(0x1, b"hello")
    fast.receive_data(data[:6])  # header and mask, no payload yet
    assert fast.events_received() == []
    fast.receive_data(data[6:] + frame(0x1, b"next"))
    assert [bytes(e.data) for e in fast.events_received()] == [b"hello", b"next"]  # type: ignore[union-attr]


def test_an_oversized_frame_fails_at_its_header() -> None:
    fast = opened(FramingServerProtocol)
    fast.receive_data(frame(0x1, b"x" * (MAX_SIZE + 1))[:10])  # the payload never comes
    assert fast.close_sent is not None and fast.close_sent.code == 1009


def test_frames_arriving_a_byte_at_a_time_are_read_whole() -> None:
    fast = opened(FramingServerProtocol)
    data = frame(0x1, b"a" * 200) + frame(0x9, b"ping") + frame(0x2, b"\x00\x01")
    for i in range(len(data)):
        fast.receive_data(data[i : i + 1])
    events = [(e.opcode, bytes(e.data)) for e in fast.events_received()]  # type: ignore[union-attr]
    assert [payload for _, payload in events] == [b"a" * 200, b"ping", b"\x00\x01"]
    assert fast.data_to_send() == [b"\x8a\x04ping"]  # the pong
