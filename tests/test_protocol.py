"""protocol.py as pure functions: every frame, every refusal, and generated garbage."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub import protocol
from hubbub.protocol import ErrorCode, ProtocolError


def refused(raw: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode(raw)
    return caught.value


@pytest.mark.parametrize(
    ("raw", "frame"),
    [
        ('{"type":"join","room":"lobby"}', protocol.Join(room="lobby")),
        ('{"type":"join","room":"a.b:c-d_e","since":0}', protocol.Join(room="a.b:c-d_e", since=0)),
        ('{"type":"leave","room":"r"}', protocol.Leave(room="r")),
        ('{"type":"send","room":"r","text":"hi"}', protocol.Send(room="r", text="hi")),
        ('{"type":"send","room":"r","text":"","ref":"x1"}', protocol.Send("r", "", "x1")),
        ('{"type":"send","room":"r","text":"t","ref":7}', protocol.Send("r", "t", 7)),
        ('{"type":"history","room":"r"}', protocol.History(room="r")),
        ('{"type":"history","room":"r","before":9,"limit":20}', protocol.History("r", 9, 20)),
        ('{"type":"ping"}', protocol.Ping()),
        ('{"type":"ping","ref":"p","extra":"ignored"}', protocol.Ping(ref="p")),
    ],
)
def test_every_client_frame_decodes(raw: str, frame: protocol.ClientFrame) -> None:
    assert protocol.decode(raw) == frame
    assert protocol.decode(raw.encode()) == frame


@pytest.mark.parametrize(
    ("raw", "code", "ref"),
    [
        ("{", ErrorCode.BAD_JSON, None),
        ("", ErrorCode.BAD_JSON, None),
        ("not json", ErrorCode.BAD_JSON, None),
        ('"\\ud800"', ErrorCode.BAD_JSON, None),  # a lone surrogate
        ("[]", ErrorCode.BAD_FRAME, None),
        ("42", ErrorCode.BAD_FRAME, None),
        ("{}", ErrorCode.UNKNOWN_TYPE, None),
        ('{"type":"shout","ref":"r1"}', ErrorCode.UNKNOWN_TYPE, "r1"),
        ('{"type":5}', ErrorCode.UNKNOWN_TYPE, None),
        ('{"type":"join"}', ErrorCode.BAD_FRAME, None),
        ('{"type":"join","room":""}', ErrorCode.BAD_FRAME, None),
        ('{"type":"join","room":"has space"}', ErrorCode.BAD_FRAME, None),
        ('{"type":"join","room":"' + "r" * 65 + '"}', ErrorCode.BAD_FRAME, None),
        ('{"type":"join","room":"r","since":-1}', ErrorCode.BAD_FRAME, None),
        ('{"type":"join","room":"r","since":"3"}', ErrorCode.BAD_FRAME, None),
        ('{"type":"send","room":"r","ref":"s"}', ErrorCode.BAD_FRAME, "s"),
        ('{"type":"send","room":"r","text":1,"ref":2}', ErrorCode.BAD_FRAME, 2),
        ('{"type":"send","room":"r","text":"x","ref":true}', ErrorCode.BAD_FRAME, None),
        (
            '{"type":"send","room":"r","text":"x","ref":"' + "x" * 65 + '"}',
            ErrorCode.BAD_FRAME,
            None,
        ),
        ('{"type":"history","room":"r","limit":0}', ErrorCode.BAD_FRAME, None),
        ('{"type":"history","room":"r","limit":1001}', ErrorCode.BAD_FRAME, None),
    ],
)
def test_refusals_say_why(raw: str, code: ErrorCode, ref: str | int | None) -> None:
    error = refused(raw)
    assert (error.code, error.ref) == (code, ref)
    frame = json.loads(protocol.error(error))
    assert frame["type"] == "error" and frame["code"] == code.value and frame["message"]
    assert frame.get("ref") == ref


DEEP = 50_000  # far beyond the parser's depth (the interpreter's recursion limit)
_typed = msgspec.json.Decoder(protocol.ClientFrame)


@pytest.mark.parametrize(
    ("raw", "typed_fails_with"),
    [
        # The typed decode refuses early; the untyped one (for the code and ref) recurses.
        ("[" * DEEP, msgspec.ValidationError),
        ('{"type":"send","room":"r","text":' + "[" * DEEP, msgspec.ValidationError),
        ('{"type":"hello","ref":"h","name":' + '{"a":' * DEEP, msgspec.ValidationError),
        # The typed decode itself recurses, skipping an unknown field.
        ('{"type":"ping","x":' + "[" * DEEP, RecursionError),
        ('{"type":"hello","name":"x","x":' + "[" * DEEP + "]" * DEEP + "}", RecursionError),
        ('{"x":' * DEEP + "1" + "}" * DEEP, RecursionError),
    ],
)
def test_deeply_nested_json_is_a_bad_frame(raw: str, typed_fails_with: type[Exception]) -> None:
    # Pin which decode path each input takes, so neither path goes untested.
    with pytest.raises(typed_fails_with):
        _typed.decode(raw)
    for text in (raw, raw.encode()):
        error = refused(text)
        assert (error.code, error.ref) == (ErrorCode.BAD_FRAME, None)
        assert "nested" in error.message
        assert json.loads(protocol.error(error))["code"] == "bad_frame"


@pytest.mark.parametrize(
    ("raw", "typed_fails_with"),
    [
        # Found by fuzz/decode.py: msgspec up to 0.22 raises UnicodeError, not DecodeError,
        # for a string that is not UTF-8 (bytes) or cannot be (a str with a lone
        # surrogate); 0.23 raises DecodeError for bytes. Either way the answer is bad_json.
        (b'{"type":"\x83"}', (UnicodeDecodeError, msgspec.DecodeError)),
        (b'{"type":"send","room":"r","text":"\xff"}', (UnicodeDecodeError, msgspec.DecodeError)),
        (b'{"\x83":1}', msgspec.ValidationError),  # the untyped decode fails on it
        ('{"type":"\ud800"}', UnicodeEncodeError),
        ("\ud800", UnicodeEncodeError),
    ],
)
def test_text_that_is_not_utf8_is_bad_json(
    raw: str | bytes, typed_fails_with: type[Exception] | tuple[type[Exception], ...]
) -> None:
    with pytest.raises(typed_fails_with):
        _typed.decode(raw)
    error = refused(raw)
    assert (error.code, error.ref) == (ErrorCode.BAD_JSON, None)
    assert json.loads(protocol.error(error))["code"] == "bad_json"


def test_server_frames_encode_as_documented() -> None:
    message = protocol.Message(
        room="r", seq=3, sender="ann", text="hi", ts="2026-01-01T00:00:00.000Z"
    )
    assert json.loads(protocol.encode(message)) == {
        "type": "message",
        "room": "r",
        "seq": 3,
        "from": "ann",
        "text": "hi",
        "ts": "2026-01-01T00:00:00.000Z",
    }
    assert protocol.decode_room_frame(protocol.encode(message)) == message
    assert json.loads(protocol.encode(protocol.Ack(room="r", seq=3))) == {
        "type": "ack",
        "room": "r",
        "seq": 3,
    }
    assert json.loads(protocol.encode(protocol.Ack(room="r", seq=3, ref="a"))) == {
        "type": "ack",
        "room": "r",
        "seq": 3,
        "ref": "a",
    }
    assert json.loads(protocol.encode(protocol.Joined(room="r", seq=0, members=["a"]))) == {
        "type": "joined",
        "room": "r",
        "seq": 0,
        "members": ["a"],
    }
    assert json.loads(protocol.encode(protocol.HistoryPage(room="r", messages=[message]))) == {
        "type": "history",
        "room": "r",
        "messages": [json.loads(protocol.encode(message))],
    }
    assert protocol.encode(protocol.Pong()) == b'{"type":"pong"}'
    assert json.loads(protocol.encode(protocol.Presence(room="r", joined=["a"], left=[]))) == {
        "type": "presence",
        "room": "r",
        "joined": ["a"],
        "left": [],
    }


def test_timestamp_is_iso8601_utc_with_milliseconds() -> None:
    ts = protocol.timestamp()
    assert ts.endswith("Z") and len(ts) == len("2026-01-01T00:00:00.000Z")


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: hypothesis inspects its source to see that it recurses, which
    # fails for a multi-line lambda (a deprecation warning, an error under -W error).
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=8), children, max_size=4
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    _containers,
    max_leaves=12,
)


@given(st.binary(max_size=300))
def test_garbage_bytes_never_escape_as_anything_but_protocol_error(raw: bytes) -> None:
    try:
        protocol.decode(raw)
    except ProtocolError as error:
        assert error.code in ErrorCode


@given(
    st.dictionaries(
        st.sampled_from(["type", "room", "text", "since", "before", "limit", "ref", "x"]),
        json_values | st.sampled_from(["join", "send", "leave", "history", "ping", "lobby"]),
    )
)
def test_generated_objects_decode_or_are_refused_with_a_code(obj: dict[str, object]) -> None:
    raw = msgspec.json.encode(obj)
    try:
        frame = protocol.decode(raw)
    except ProtocolError as error:
        assert error.code in (ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_TYPE)
        json.loads(protocol.error(error))  # the error frame itself is valid JSON
    else:
        assert obj["type"] in protocol.CLIENT_TYPES
        assert isinstance(frame, protocol.ClientFrame)
