"""``--log-format json``: every line one JSON object, with the connection it is about."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable

from hubbub.logs import JsonFormatter
from tests.rawws import OP_TEXT, RawWebSocket, frame
from tests.servers import ServerProcess

CONN_ID = re.compile(r"^[0-9a-f]{8}$")


def test_json_lines_carry_time_level_logger_message_and_conn(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--log-format", "json")
    raw = RawWebSocket(server.port, "/ws")
    raw.send(frame(OP_TEXT, b"\xff not utf-8"))
    _, code = raw.recv_until_close()
    raw.close()
    assert code == 1007
    server.wait_for_log("text frame is not valid UTF-8")
    assert server.stop() == 0

    lines = [json.loads(line) for line in server.log.splitlines()]  # each one is JSON
    assert len(lines) > 3
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    (closing,) = [line for line in lines if "not valid UTF-8" in line["message"]]
    assert closing["level"] == "INFO"
    assert closing["logger"] == "hubbub.server"
    assert CONN_ID.match(closing["conn"])
    assert closing["conn"] in closing["message"]  # text logs name it too
    assert any(line["message"].startswith("Uvicorn running on") for line in lines)


def test_the_json_formatter_keeps_user_room_and_the_exception_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "hubbub.rooms", logging.WARNING, __file__, 1, "room %s: %s", ("lobby", "x"), exc_info
    )
    record.__dict__.update(conn="0badc0de", user="u1", room="lobby")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "hubbub.rooms"
    assert parsed["message"] == "room lobby: x"
    assert (parsed["conn"], parsed["user"], parsed["room"]) == ("0badc0de", "u1", "lobby")
    assert "ValueError: boom" in parsed["exc_info"]
