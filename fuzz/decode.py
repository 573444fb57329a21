"""``protocol.decode``: any text or bytes is a frame or a ProtocolError, nothing else.

A frame must survive a round trip (encode, decode again: the same frame); a refusal
must carry a known code, a valid ``ref`` or none, and make an error frame that is
JSON. The input is tried as bytes and as ``str`` (decoded with ``surrogateescape``:
the server's text is always UTF-8, but ``decode`` takes any ``str``).
"""

from __future__ import annotations

import json
import re
import sys

import atheris

with atheris.instrument_imports(include=["hubbub"]):
    import msgspec

    from hubbub import protocol
    from hubbub.protocol import ErrorCode, ProtocolError

from fuzz._run import run

_FRAME_TYPES = (
    protocol.Join,
    protocol.Leave,
    protocol.Send,
    protocol.History,
    protocol.Ping,
    protocol.Hello,
    protocol.Refresh,
)

SEEDS = [
    b'{"type":"join","room":"lobby","since":3}',
    b'{"type":"leave","room":"lobby"}',
    b'{"type":"send","room":"lobby","text":"hi \\u00e9","ref":"c-1"}',
    b'{"type":"history","room":"r","before":9,"limit":20}',
    b'{"type":"ping","ref":7}',
    b'{"type":"hello","name":"ann"}',
    b'{"type":"hello","token":"a.b.c"}',
    b'{"type":"refresh","token":"a.b.c"}',
    b'{"type":"shout","ref":"r1"}',
    b'{"type":"send","room":"r","text":1,"ref":2,"x":[[{"y":null}]]}',
    b"[1, 2.5e3, true, false, null]",
]


_OPENINGS = re.compile(rb"\[+")
_ERROR_AT = re.compile(r"\(byte (\d+)\)")


def _nesting(data: bytes) -> int:
    """The longest run of "[" in the part of ``data`` msgspec parses before it fails."""
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        at = _ERROR_AT.search(str(exc))
        data = data[: int(at[1])] if at else data
    except (RecursionError, UnicodeError):
        pass
    return max(map(len, _OPENINGS.findall(data)), default=0)


@atheris.instrument_func
def _depth_feedback(deepest: int) -> None:
    # msgspec's depth limit is in C, which coverage cannot see; with libFuzzer's value
    # profile this comparison rewards inputs that nest closer to it. (Runs of "[" behind
    # an invalid prefix, or braces anywhere, let the fuzzer game it.)
    if deepest > sys.getrecursionlimit():
        return


def test_one_input(data: bytes) -> None:
    _depth_feedback(_nesting(data))
    for raw in (data, data.decode("utf-8", "surrogateescape")):
        try:
            frame = protocol.decode(raw)
        except ProtocolError as exc:
            assert exc.code in ErrorCode, exc.code
            assert exc.ref is None or msgspec.convert(exc.ref, protocol.Ref) == exc.ref
            answer = json.loads(protocol.error(exc))
            assert answer["type"] == "error" and answer["code"] == exc.code.value, answer
        else:
            assert isinstance(frame, _FRAME_TYPES), frame
            assert protocol.decode(msgspec.json.encode(frame)) == frame, frame


if __name__ == "__main__":
    run(test_one_input, SEEDS, ["-max_len=8192", "-len_control=0", "-use_value_profile=1"])
