"""Hubbub inside someone else's FastAPI app (``docs/examples/embed_app.py``, the example of
``docs/embedding.md``), over real sockets against real server processes."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import service_url

TIMEOUT = 10
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
API_KEY = "k" * 24
SECRET = "s" * 32
# What the example needs: a JWT secret for its login, a key for the HTTP API.
EXAMPLE_ENV = {"HUBBUB_JWT_SECRET": SECRET, "HUBBUB_API_KEY": API_KEY}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def request(
    server: ServerProcess, path: str, method: str = "GET", body: Any = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request: its status, headers (lower-case names) and body, whatever the status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.http(path), data=data, method=method, headers=headers)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _lower(error.headers), error.read()


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def post(server: ServerProcess, path: str, body: Any = None, **headers: str) -> Any:
    status, _, answer = request(server, path, "POST", {} if body is None else body, **headers)
    assert status in (200, 201), (status, answer)
    return json.loads(answer)


def serve_example(start: Callable[..., ServerProcess], *args: str) -> ServerProcess:
    """``hubbub serve --app embed_app:app`` (the example's file, imported by its path)."""
    return start("--app", "embed_app:app", "--app-dir", str(EXAMPLES), *args, env=EXAMPLE_ENV)


@pytest.fixture
def example(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return serve_example(start_server)


async def login(server: ServerProcess, user: str, name: str) -> RoomClient:
    """The example's own login, then a connection to /chat/v1/ws with the token it gave."""
    token = post(server, "/login", {"user": user, "name": name})["token"]
    client = await RoomClient.open(server.ws("/chat"), query=f"token={token}")
    welcome = await client.next_of("welcome")
    assert (welcome["user"], welcome["name"]) == (user, name)
    return client


async def received(client: RoomClient, room: str, count: int) -> None:
    await client.wait(lambda: len(client.texts.get(room, [])) >= count)


# -- the example, on Hubbub's transport ------------------------------------------------


async def test_the_example_chats_under_its_prefix(example: ServerProcess) -> None:
    assert request(example, "/chat/readyz")[0] == 200
    order = post(example, "/orders", {"item": "teapot"})
    room = order["room"]
    ann = await login(example, "ann", "Ann")
    bob = await login(example, "bob", "Bob")
    joined = await ann.join(room)
    assert joined["seq"] == 1  # the shop's own message, published from its route
    await bob.join(room)
    ack = await ann.say(room, "is it blue?")
    await bob.next_of("message", room=room, seq=ack["seq"], text="is it blue?")
    # The shop's route publishes with the Python API; the HTTP API under the prefix too.
    shipped = post(example, f"/orders/{order['order']}/shipped")
    await bob.next_of("message", room=room, seq=shipped["seq"], text="Order 1 has shipped")
    posted = post(example, f"/chat/api/v1/rooms/{room}/messages", {"text": "from ops"}, **AUTH)
    await ann.next_of("message", room=room, seq=posted["seq"], text="from ops")
    # Presence and history through the Python API, from the shop's own route.
    status, _, body = request(example, f"/orders/{order['order']}/chat")
    assert status == 200
    chat = json.loads(body)
    assert chat["online"] == {"ann": "Ann", "bob": "Bob"}
    assert chat["recent"] == [
        "Order 1 placed: teapot",
        "is it blue?",
        "Order 1 has shipped",
        "from ops",
    ]
    # The shop's logout closes the user's connections (1008).
    assert post(example, "/users/bob/logout") == {"closed_here": 1}
    await bob.wait(lambda: bob.closed)
    assert bob.close_code == 1008
    await ann.close()


async def test_the_example_keeps_the_api_key_and_leaves_out_the_tutorial(
    example: ServerProcess,
) -> None:
    status, headers, _ = request(example, "/chat/api/v1/rooms")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    status, _, _ = request(example, "/chat/api/v1/rooms", Authorization="Bearer wrong")
    assert status == 401
    assert request(example, "/chat/api/v1/rooms", **AUTH)[0] == 200
    # The tutorial's endpoints and pages are the whole server's only.
    assert request(example, "/chat/tutorial/echo")[0] == 404
    with pytest.raises(InvalidStatus):
        async with connect(example.ws("/chat/ws")):
            pass
    # The application's own routes and Hubbub's health routes live side by side.
    assert request(example, "/chat/healthz")[0] == 200
    status, _, body = request(example, "/chat/metrics")
    assert status == 200 and b"hubbub_connections_open" in body


def test_the_chat_page_finds_its_files_under_the_prefix(example: ServerProcess) -> None:
    status, _, page = request(example, "/chat/")
    assert status == 200
    html = page.decode()
    sources = re.findall(r'<(?:script|link)[^>]* (?:src|href)="([^"]+)"', html)
    local = [source for source in sources if not source.startswith("data:")]
    assert local == ["static/style.css", "static/app.js"]
    for source in local:  # relative to /chat/, as a browser resolves them
        status, headers, _ = request(example, f"/chat/{source}")
        assert status == 200, source
        assert headers["content-type"].startswith(("text/css", "text/javascript"))
    # app.js connects where hubbub.js was served from: /chat/static/ → /chat/v1/ws.
    _, _, script = request(example, "/chat/static/hubbub.js")
    assert b'new URL("../v1/ws", import.meta.url)' in script
    # Without the trailing slash, to the page (the page's relative URLs need it).
    assert request(example, "/chat")[0] == 200


async def test_the_example_as_a_factory(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(
        "--app", "embed_app:build_app", "--factory", "--app-dir", str(EXAMPLES), env=EXAMPLE_ENV
    )
    assert request(server, "/chat/readyz")[0] == 200
    ann = await login(server, "ann", "Ann")
    await ann.join("lobby")
    await ann.say("lobby", "hi")
    await ann.close()


def test_flags_reach_the_applications_hubbub(start_server: Callable[..., ServerProcess]) -> None:
    # --api-key is a flag here, not a variable: serve hands it to the app's Settings().
    server = start_server(
        "--app",
        "embed_app:app",
        "--app-dir",
        str(EXAMPLES),
        "--api-key",
        "f" * 24,
        env={"HUBBUB_JWT_SECRET": SECRET},
    )
    assert request(server, "/chat/api/v1/rooms", Authorization="Bearer " + "f" * 24)[0] == 200


@pytest.mark.service("redis")
async def test_the_example_with_workers(start_server: Callable[..., ServerProcess]) -> None:
    url = service_url("redis")
    server = serve_example(start_server, "--workers", "2", "--broker-url", url)
    clients = [await login(server, f"u{i}", f"U{i}") for i in range(8)]
    for client in clients:
        await client.join("lobby")
    # Both workers answer (the kernel spreads connections over the processes' accepts).
    pids = {json.loads(request(server, "/chat/readyz")[2])["pid"] for _ in range(40)}
    for _ in range(4):  # published on whichever worker answers, received on both
        post(server, "/chat/api/v1/rooms/lobby/messages", {"text": "to all"}, **AUTH)
    for client in clients:
        await received(client, "lobby", 4)
    for client in clients:
        await client.close()
    assert len(pids) == 2, pids


# -- the example under a foreign ASGI server -------------------------------------------


async def test_the_example_under_plain_uvicorn(start_server: Callable[..., ServerProcess]) -> None:
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "embed_app:app"]
    server = start_server(command=command, env=EXAMPLE_ENV)
    assert request(server, "/chat/readyz")[0] == 200  # the router's lifespan ran
    ann = await login(server, "ann", "Ann")
    await ann.join("lobby")
    posted = post(server, "/chat/api/v1/rooms/lobby/messages", {"text": "hello"}, **AUTH)
    await ann.next_of("message", room="lobby", seq=posted["seq"])
    await ann.close()


# -- create_app mounted: its lifespan never runs (the report) ----------------------


@pytest.fixture
def mounted(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """``app.mount("/chat", create_app())`` under plain uvicorn."""
    command = [sys.executable, "-m", "uvicorn", "--factory", "tests.embedded:mounted"]
    return start_server(command=command, env={"PYTHONPATH": str(ROOT), "HUBBUB_API_KEY": API_KEY})


def test_a_mounted_app_whose_hub_never_started_is_not_ready(mounted: ServerProcess) -> None:
    status, _, body = request(mounted, "/chat/readyz")
    assert status == 503, body
    assert "lifespan" in json.loads(body)["detail"]


async def test_a_mounted_app_whose_hub_never_started_says_so(mounted: ServerProcess) -> None:
    status, _, body = request(
        mounted, "/chat/api/v1/rooms/lobby/messages", "POST", {"text": "hi"}, **AUTH
    )
    # Not a 500 with an AssertionError in the log: a refusal that names the fix.
    assert status == 503, body
    assert "include Hubbub(settings).router" in json.loads(body)["detail"]
    with pytest.raises(InvalidStatus):  # a join is refused at the handshake
        async with connect(mounted.ws("/chat/v1/ws?name=ann")):
            pass
    await asyncio.to_thread(mounted.wait_for_log, "Hubbub is not started")
    assert "Traceback" not in mounted.log


def test_the_docs_show_the_example_as_it_is() -> None:
    doc = (ROOT / "docs" / "embedding.md").read_text()
    code = (EXAMPLES / "embed_app.py").read_text()
    assert f"```python\n{code}```" in doc
