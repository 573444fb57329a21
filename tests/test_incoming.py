"""The frame reader in front of websockets' core: for any bytes a client may send, split
anywhere, it hands over the same messages, pings and core bytes; valid streams come out
whole and in order; a bad fragment fails at once."""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.transport.incoming import FrameReader
from tests.rawws import frame

MAX_SIZE = 300


class Sink:
    """Records everything a reader hands over, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []
        self.core = bytearray()

    def on_text(self, text: str) -> None:
        self.seen.append(("text", text))

    def on_bytes(self, data: bytes) -> None:
        self.seen.append(("bytes", data))

    def on_ping(self, payload: bytes) -> None:
        self.seen.append(("ping", payload))

    def on_pong(self) -> None:
        self.seen.append(("pong", None))

    def on_close(self, code: int, payload: bytes) -> None:
        self.seen.append(("close", (code, payload)))

    def to_core(self, data: bytes) -> None:
        self.core += data

    def fail(self, code: int, reason: str) -> None:
        self.seen.append(("fail", code))


def read_all(pieces: list[bytes], budget: int = 1000) -> Sink:
    sink = Sink()
    reader = FrameReader(sink, MAX_SIZE)
    for piece in pieces:
        reader.budget = budget
        reader.read(piece)
        while reader.budget == 0 and reader.pending:  # what a budget left for later turns
            reader.budget = budget
            reader.read(b"")
    return sink


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


any_frames = st.one_of(
    st.builds(lambda p: frame(0x1, p), st.text(max_size=40).map(str.encode)),
    st.builds(lambda p: frame(0x1, p), st.binary(min_size=126, max_size=200)),
    st.builds(lambda p: frame(0x2, p), st.binary(max_size=40)),
    st.builds(
        lambda op, fin, p: frame(op, p, fin=fin),
        st.sampled_from([0x0, 0x1, 0x2]),
        st.booleans(),
        st.binary(max_size=30),
    ),
    st.builds(frame, st.sampled_from([0x8, 0x9, 0xA]), st.binary(max_size=130)),
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


def split(stream: bytes, data: st.DataObject) -> list[bytes]:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@settings(max_examples=400)
@given(st.lists(any_frames, max_size=12), st.data(), st.integers(1, 4))
def test_where_the_stream_is_cut_and_the_budget_change_nothing(
    chunks: list[bytes], data: st.DataObject, budget: int
) -> None:
    stream = b"".join(chunks)
    whole = read_all([stream])
    pieces = read_all(split(stream, data), budget)
    assert (pieces.seen, bytes(pieces.core)) == (whole.seen, bytes(whole.core))
    # Whatever went to the core is the tail of the stream, from a frame boundary.
    assert stream.endswith(bytes(whole.core))
    # After a failure or a close nothing more is handed over.
    kinds = [kind for kind, _ in whole.seen]
    for end in ("fail", "close"):
        if end in kinds:
            assert kinds.index(end) == len(kinds) - 1 and not whole.core


message = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=60)),
    st.tuples(st.just("bytes"), st.binary(max_size=60)),
)


@settings(max_examples=300)
@given(st.lists(message, max_size=10), st.data())
def test_valid_messages_come_out_whole_and_in_order_with_pings_between_fragments(
    messages: list[tuple[str, object]], data: st.DataObject
) -> None:
    stream = b""
    expected: list[tuple[str, object]] = []
    for kind, value in messages:
        payload = value.encode() if isinstance(value, str) else value
        assert isinstance(payload, bytes)
        opcode = 0x1 if kind == "text" else 0x2
        cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            stream += frame(opcode if index == 0 else 0x0, part, fin=last)
            if not last:
                stream += frame(0x9, b"p")  # a ping between fragments is allowed
                expected.append(("ping", b"p"))
        expected.append((kind, value))
    sink = read_all(split(stream, data), budget=2)
    assert sink.seen == expected
    assert not sink.core


def test_a_close_between_fragments_is_read_and_drops_the_partial_message() -> None:
    close = frame(0x8, struct.pack("!H", 1000) + b"bye")
    sink = read_all([frame(0x1, b"frag", fin=False) + close + frame(0x0, b"ment")])
    assert sink.seen == [("close", (1000, struct.pack("!H", 1000) + b"bye"))]
    assert not sink.core  # and the bytes behind it are ignored


def test_a_close_with_no_payload_is_read_as_1005() -> None:
    assert read_all([frame(0x8, b"")]).seen == [("close", (1005, b""))]


def test_a_close_with_a_code_a_peer_may_not_send_goes_to_the_core() -> None:
    for payload in (
        struct.pack("!H", 1005),  # "no status": never on the wire
        struct.pack("!H", 999),
        struct.pack("!H", 2999),
        struct.pack("!H", 5000),
        b"\x03",  # one byte: no whole code
        struct.pack("!H", 1000) + b"\xc3\x28",  # a reason that is not UTF-8
    ):
        stream = frame(0x8, payload) + frame(0x1, b"after")
        sink = read_all([stream])
        assert (sink.seen, bytes(sink.core)) == ([], stream), payload


def test_invalid_utf8_in_a_first_fragment_fails_before_the_message_ends() -> None:
    sink = read_all([frame(0x1, b"ok \xc3\x28 then", fin=False)])  # the last fragment never comes
    assert sink.seen == [("fail", 1007)]


def test_utf8_split_across_fragments_is_valid() -> None:
    snowman = "☃".encode()
    sink = read_all([frame(0x1, snowman[:1], fin=False) + frame(0x0, snowman[1:])])
    assert sink.seen == [("text", "☃")]


def test_a_message_over_the_limit_in_fragments_fails_with_1009() -> None:
    half = b"x" * (MAX_SIZE // 2 + 1)
    sink = read_all([frame(0x2, half, fin=False) + frame(0x0, half)])
    assert sink.seen == [("fail", 1009)]


def test_an_oversized_frame_fails_at_its_header() -> None:
    sink = read_all([frame(0x1, b"x" * (MAX_SIZE + 1))[:10]])  # the payload never comes
    assert sink.seen == [("fail", 1009)]


def test_a_new_message_inside_a_fragmented_one_fails_with_1002() -> None:
    sink = read_all([frame(0x1, b"a", fin=False) + frame(0x1, b"b")])
    assert sink.seen == [("fail", 1002)]


def test_frames_arriving_a_byte_at_a_time_are_read_whole() -> None:
    data = frame(0x1, b"a" * 200) + frame(0x9, b"ping") + frame(0x2, b"\x00\x01")
    sink = read_all([data[i : i + 1] for i in range(len(data))])
    assert sink.seen == [("text", "a" * 200), ("ping", b"ping"), ("bytes", b"\x00\x01")]


def test_invalid_utf8_in_a_text_frame_still_arriving_fails_at_once() -> None:
    # Autobahn 6.4.3-4: the bad bytes come in the first part of one frame.
    data = frame(0x1, b"good \xce\xba\xcf\x8c then \xed\xa0\x80 bad" + b"x" * 100)
    sink = read_all([data[:30]])  # the rest never comes
    assert sink.seen == [("fail", 1007)]


def test_a_valid_text_frame_arriving_in_pieces_is_not_failed_early() -> None:
    snowmen = ("☃" * 50).encode()
    data = frame(0x1, snowmen, fin=False) + frame(0x0, snowmen)
    sink = read_all([data[i : i + 7] for i in range(0, len(data), 7)])
    assert sink.seen == [("text", "☃" * 100)]
