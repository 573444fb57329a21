"""Deeply nested JSON on ``/v1/ws``, over real sockets: an ``error`` frame, never a
traceback (the ``start_server`` fixture checks the log) and never a dropped socket."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.rawws import RawWebSocket
from tests.roomclient import RoomClient
from tests.servers import ServerProcess

DEEP = 60_000  # under --max-frame-bytes (64 KiB), far beyond the parser's depth

# Each input reaches one of protocol.decode's two parses first (see test_protocol.py):
# the typed one refuses the first and the untyped one recurses; the typed one recurses
# on the second, skipping an unknown field.
NESTED = {
    "untyped": "[" * DEEP,
    "typed": '{"type":"hello","name":"x","x":' + "[" * (DEEP - 40),
}


@pytest.mark.parametrize("path", NESTED)
def test_nested_hello_is_refused_with_an_error_and_1008(
    start_server: Callable[..., ServerProcess], path: str
) -> None:
    server = start_server()
    raw = RawWebSocket(server.port, "/v1/ws")  # no name or token: the first frame is the hello
    raw.send_text(NESTED[path])
    frames, code = raw.recv_until_close()
    raw.close()
    assert [json.loads(payload)["code"] for _, payload in frames] == ["bad_frame"]
    assert code == 1008


async def test_nested_frames_after_login_are_refused_and_the_connection_stays_open(
    server: ServerProcess,
) -> None:
    ann = await RoomClient.open(server.ws(""), "ann")
    await ann.next_of("welcome")
    for path, text in NESTED.items():
        mark = len(ann.frames)
        await ann.ws.send(text)
        error = await ann.next_of("error", mark)
        assert error["code"] == "bad_frame", path
    mark = len(ann.frames)
    await ann.send(type="ping", ref="still here")
    assert await ann.next_of("pong", mark) == {"type": "pong", "ref": "still here"}
    await ann.join("lobby")
    assert (await ann.say("lobby", "fine"))["seq"] == 1
    await ann.close()
