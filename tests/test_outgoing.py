"""frames.py: one pre-encoded frame, valid on every connection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from hubbub.outgoing import OutFrame, encode_text_frame


@given(st.binary(max_size=70_000))
def test_encoding_matches_the_websockets_library(payload: bytes) -> None:
    assert encode_text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def test_length_boundaries() -> None:
    for n, header_len in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)]:
        wire = encode_text_frame(b"a" * n)
        assert len(wire) == header_len + n
        assert wire[0] == 0x81


def test_outframe_builds_each_form_once() -> None:
    frame = OutFrame.from_text("héllo")
    assert frame.payload == "héllo".encode()
    assert frame.size == len(frame.wire) == 2 + len(frame.payload)
    event = frame.asgi_event
    assert event == {"type": "websocket.send", "text": "héllo"}
    assert frame.asgi_event is event
