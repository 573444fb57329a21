"""Presence across two processes sharing a broker, and the HTTP API, on real servers."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import service_url

SECRET = "p" * 64
KEY = "api-key-for-tests"


def token(user: str) -> str:
    claims = {"sub": user, "name": user.title(), "rooms": ["*"], "exp": int(time.time()) + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture
def pair(start_server: Callable[..., ServerProcess], tmp_path: Any) -> list[ServerProcess]:
    args = ("--broker-url", service_url("redis"), "--store-url", f"sqlite:///{tmp_path}/s.db",
            "--jwt-secret", SECRET, "--presence-interval", "0.3", "--api-key", KEY)  # fmt: skip
    return [start_server(*args), start_server(*args)]


def presence_frames(client: RoomClient) -> list[tuple[list[str], list[str]]]:
    return [(f["joined"], f["left"]) for f in client.frames if f["type"] == "presence"]


async def test_presence_across_processes_and_two_tabs(pair: list[ServerProcess]) -> None:
    a, b = pair
    ann = await RoomClient.open(a.ws(""), query=f"token={token('ann')}")
    await ann.join("lobby")
    bob_tab1 = await RoomClient.open(b.ws(""), query=f"token={token('bob')}")
    joined = await bob_tab1.join("lobby")
    assert joined["members"] == ["Ann", "Bob"]
    await ann.next_of("presence", joined=["Bob"])
    bob_tab2 = await RoomClient.open(a.ws(""), query=f"token={token('bob')}")
    await bob_tab2.join("lobby")
    await bob_tab1.close()  # one tab closes: Bob is still there
    await bob_tab2.say("lobby", "still here")
    await ann.has_seqs("lobby", 1)
    assert presence_frames(ann) == [(["Bob"], [])]
    await bob_tab2.close()  # the last tab: now Bob leaves
    await ann.next_of("presence", left=["Bob"])
    assert presence_frames(ann) == [(["Bob"], []), ([], ["Bob"])]
    await ann.close()


async def test_members_of_a_killed_process_vanish(pair: list[ServerProcess]) -> None:
    a, b = pair
    ann = await RoomClient.open(a.ws(""), query=f"token={token('ann')}")
    await ann.join("lobby")
    cid = await RoomClient.open(b.ws(""), query=f"token={token('cid')}")
    await cid.join("lobby")
    await ann.next_of("presence", joined=["Cid"])
    b.signal(signal.SIGKILL)  # no goodbye
    b.wait()
    await ann.next_of("presence", left=["Cid"])  # within three presence intervals
    assert api(a, "GET", "/api/v1/rooms/lobby/presence") == (200, [{"user": "ann", "name": "Ann"}])
    await ann.close()


def api(server: ServerProcess, method: str, path: str, body: Any = None,
        key: str | None = KEY) -> tuple[int, Any]:  # fmt: skip
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.http(path), data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_http_api(pair: list[ServerProcess]) -> None:
    a, b = pair
    dan = await RoomClient.open(b.ws(""), query=f"token={token('dan')}")
    await dan.join("news")
    status, posted = api(a, "POST", "/api/v1/rooms/news/messages", {"text": "hello", "from": "bot"})
    assert status == 201 and posted["room"] == "news" and posted["seq"] == 1
    message = await dan.next_of("message", seq=1)  # published on a, delivered on b
    assert (message["from"], message["text"]) == ("bot", "hello")
    for i in range(2, 6):
        api(a, "POST", "/api/v1/rooms/news/messages", {"text": f"m{i}"})
    status, page = api(b, "GET", "/api/v1/rooms/news/messages?limit=2")
    assert status == 200 and [m["seq"] for m in page["messages"]] == [4, 5]
    assert page["messages"][0]["from"] == "server"
    status, page = api(b, "GET", "/api/v1/rooms/news/messages?before=4&limit=10")
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3]
    assert api(a, "GET", "/api/v1/rooms") == (200, [{"room": "news", "last_seq": 5}])
    assert api(a, "GET", "/api/v1/rooms/news/presence") == (200, [{"user": "dan", "name": "Dan"}])
    status, result = api(a, "DELETE", "/api/v1/users/dan/connections")
    assert status == 200 and result == {"user": "dan", "closed_here": 0}
    await dan.wait(lambda: dan.closed)  # closed by the other process
    assert dan.close_code == 1008


@pytest.mark.parametrize(
    ("method", "path", "body", "key", "expected"),
    [
        ("GET", "/api/v1/rooms", None, None, 401),
        ("GET", "/api/v1/rooms", None, "wrong", 401),
        ("POST", "/api/v1/rooms/news/messages", {"text": 5}, KEY, 422),
        ("POST", "/api/v1/rooms/news/messages", {}, KEY, 422),
        ("POST", "/api/v1/rooms/bad room/messages", {"text": "x"}, KEY, 422),
        ("GET", "/api/v1/rooms/news/messages?limit=0", None, KEY, 422),
        ("GET", "/api/v1/rooms/news/messages?before=x", None, KEY, 422),
    ],
)
def test_api_refusals(  # noqa: PLR0917 - one parameter per column of the table above
    pair: list[ServerProcess], method: str, path: str, body: Any, key: str | None, expected: int
) -> None:
    status, answer = api(pair[0], method, path.replace(" ", "%20"), body, key)
    assert status == expected
    assert answer["detail"]  # says what is wrong


def test_api_is_refused_without_a_configured_key(server: ServerProcess) -> None:
    status, answer = api(server, "GET", "/api/v1/rooms")
    assert status == 401 and "HUBBUB_API_KEY" in answer["detail"]


def test_openapi_documents_the_api(server: ServerProcess) -> None:
    with urllib.request.urlopen(server.http("/openapi.json"), timeout=10) as response:
        paths = json.loads(response.read())["paths"]
    assert {"/api/v1/rooms", "/api/v1/rooms/{room}/messages", "/api/v1/rooms/{room}/presence",
            "/api/v1/users/{user}/connections"} <= set(paths)  # fmt: skip


async def test_a_stopped_process_says_goodbye_for_its_members(
    start_server: Callable[..., ServerProcess], tmp_path: Any
) -> None:
    # A long presence interval: "left" can only come from the stopping process itself,
    # not from its silence (that would take three intervals, 3 minutes here).
    args = ("--broker-url", service_url("redis"), "--store-url", f"sqlite:///{tmp_path}/s.db",
            "--jwt-secret", SECRET, "--presence-interval", "60")  # fmt: skip
    a, b = start_server(*args), start_server(*args)
    ann = await RoomClient.open(a.ws(""), query=f"token={token('ann')}")
    await ann.join("lobby")
    cid = await RoomClient.open(b.ws(""), query=f"token={token('cid')}")
    await cid.join("lobby")
    await ann.next_of("presence", joined=["Cid"])
    b.signal(signal.SIGTERM)
    assert await asyncio.to_thread(b.wait) == 0  # the clients keep answering meanwhile
    await ann.next_of("presence", left=["Cid"])
    assert "Traceback" not in b.log
    await ann.close()
