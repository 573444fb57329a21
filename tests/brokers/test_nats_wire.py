"""The NATS wire format (``brokers/nats_wire.py``) without a server: subjects, frames,
and their reassembly per sender."""

from __future__ import annotations

import random
import string

from hypothesis import given
from hypothesis import strategies as st

from hubbub.brokers.nats_wire import PART_HEADER_BYTES, Reassembler, frames_for, subject_for
from hubbub.brokers.remote import NODE_ID_BYTES

NODE_A = b"a" * NODE_ID_BYTES
NODE_B = b"b" * NODE_ID_BYTES

ODD_NAMES = [
    "a",
    "a.b",
    "a.b.c",
    "a b",
    " ",
    "*",
    ">",
    "a.*",
    "a.>",
    "hubbub.>",
    "r.a",
    "YQ",  # base64url of "a": literal and encoded names must not meet
    "",
    "\x00",
    "tab\there",
    "line\r\nbreak",
    "é",
    "🎉 party",
    "room-1",
    "x" * 500 + "é",
]


def payload_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- subjects ------------------------------------------------------------------------


def test_subjects_are_distinct_valid_and_never_wildcards() -> None:
    subjects = [subject_for(name) for name in ODD_NAMES]
    assert len(set(subjects)) == len(ODD_NAMES)
    allowed = set(string.ascii_letters + string.digits + "-_.")
    for subject in subjects:
        assert set(subject) <= allowed, subject
        assert all(subject.split(".")), subject  # no empty token
        assert subject.startswith("hubbub.")
    # Names that are already safe stay readable on the wire.
    assert subject_for("room-1") == "hubbub.r.room-1"


# -- framing and reassembly, without a server ---------------------------------------


def reassemble(frames: list[bytes], channel: str = "c") -> list[bytes]:
    reassembler = Reassembler(1 << 30, lambda channel, size: None)
    complete = [reassembler.feed(channel, frame) for frame in frames]
    return [data for data in complete if data is not None]


@given(size=st.integers(0, 3000), limit=st.integers(PART_HEADER_BYTES + 1, 600))
def test_frames_fit_the_limit_and_reassemble(size: int, limit: int) -> None:
    data = NODE_A + payload_of(size, size)
    frames = list(frames_for(data, 7, limit))
    assert all(len(frame) <= limit for frame in frames)
    assert reassemble(frames) == [data]


def test_a_resent_batch_is_delivered_once() -> None:
    small, large = NODE_A + b"small", NODE_A + payload_of(1, 1000)
    sent = [*frames_for(small, 1, 200), *frames_for(large, 2, 200)]
    # The connection broke after the small message and two parts of the large one,
    # before the server confirmed them; the same batch goes out again.
    assert reassemble(sent[:3] + sent) == [small, large]
    # ... also when the break came after the server had delivered all of it.
    assert reassemble(sent + sent) == [small, large]


def test_a_message_joined_midway_or_with_a_gap_is_not_delivered() -> None:
    first, second = NODE_A + payload_of(1, 1000), NODE_A + payload_of(2, 1000)
    frames, next_frames = list(frames_for(first, 1, 200)), list(frames_for(second, 2, 200))
    assert reassemble(frames[1:] + next_frames) == [second]
    assert reassemble(frames[:2] + frames[3:] + next_frames) == [second]


def test_senders_and_channels_do_not_mix() -> None:
    one, two = NODE_A + payload_of(1, 900), NODE_B + payload_of(2, 700)
    reassembler = Reassembler(1 << 30, lambda channel, size: None)
    complete = []
    # The same sequence numbers from two senders, and one sender on two channels,
    # with their parts interleaved.
    streams = [
        [("c", f) for f in frames_for(one, 1, 200)],
        [("c", f) for f in frames_for(two, 1, 200)],
        [("d", f) for f in frames_for(one, 1, 200)],
    ]
    while any(streams):
        for stream in streams:
            if stream:
                channel, frame = stream.pop(0)
                data = reassembler.feed(channel, frame)
                if data is not None:
                    complete.append((channel, data))
    assert sorted(complete) == sorted([("c", one), ("c", two), ("d", one)])
    assert reassembler.pending_bytes == 0
    assert reassembler.duplicates == 0


def test_incomplete_messages_beyond_the_budget_are_dropped_and_reported() -> None:
    dropped: list[tuple[str, int]] = []
    reassembler = Reassembler(1000, lambda channel, size: dropped.append((channel, size)))
    old = list(frames_for(NODE_A + payload_of(1, 2000), 1, 500))
    new = list(frames_for(NODE_B + payload_of(2, 2000), 1, 500))
    assert reassembler.feed("c", old[0]) is None
    assert reassembler.feed("c", new[0]) is None
    assert reassembler.feed("c", new[1]) is None  # over budget: the oldest goes
    assert dropped == [("c", 500 - PART_HEADER_BYTES)]
    assert reassembler.pending_bytes == 2 * (500 - PART_HEADER_BYTES)
    reassembler.forget("c")
    assert reassembler.pending_bytes == 0
