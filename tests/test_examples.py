"""The examples in docs/ run as shown: the webhook receiver of docs/webhooks.md gets,
checks and keeps what happens in a room."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.roomclient import RoomClient
from tests.servers import ServerProcess

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
SECRET = "example-webhook-secret"
TIMEOUT = 60.0


def get(server: ServerProcess, path: str) -> Any:
    with urllib.request.urlopen(server.http(path), timeout=TIMEOUT) as response:
        return json.loads(response.read())


async def test_the_webhook_receiver_example_keeps_a_rooms_activity(
    start_server: Callable[..., ServerProcess],
) -> None:
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "webhook_receiver:app"]
    receiver = start_server(command=command, env={"WEBHOOK_SECRET": SECRET})
    hook = f"http://127.0.0.1:{receiver.port}/hubbub"
    server = start_server("--webhook-urls", hook, "--webhook-secret", SECRET)
    ann = await RoomClient.open(server.ws(""), "ann")
    await ann.join("lobby")
    seq = (await ann.say("lobby", "hello"))["seq"]
    await ann.close()
    deadline = time.monotonic() + TIMEOUT
    while len(get(receiver, "/rooms/lobby")) < 4:  # polled: the receiver is another process
        assert time.monotonic() < deadline, get(receiver, "/rooms/lobby")
        await asyncio.sleep(0.2)
    activity = get(receiver, "/rooms/lobby")
    assert [a["type"] for a in activity] == [
        "member.joined",
        "message.created",
        "member.left",
        "room.vacated",
    ]
    assert (activity[1]["seq"], activity[1]["text"]) == (seq, "hello")
    assert status_of_unsigned(hook) == 401  # a forged event is refused


def status_of_unsigned(url: str) -> int:
    forged = urllib.request.Request(url, data=b'{"id":"x"}', method="POST")
    try:
        with urllib.request.urlopen(forged, timeout=TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code
