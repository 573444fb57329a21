"""Proxy hooks (docs/hooks.md) against a real backend over HTTP: connect turns the
backend's own cookie into an identity or refuses it; publish approves, changes or refuses
a send; a backend that is down gets the stated policy."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hubbub.webhooks import verify
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.test_chat_ws import request
from tests.webhook_receiver import Answer, Receiver

SECRET = "hook-secret-for-tests"
SESSIONS = {
    "s-ann": {"user": "u-ann", "name": "Ann", "rooms": ["team-*"], "moderate": ["team-*"]},
    "s-cy": {"user": "u-cy"},  # no rooms said: none, as in a token
}


@pytest.fixture
def backend() -> Iterator[Receiver]:
    backend = Receiver()
    yield backend
    backend.stop()


def answering(backend: Receiver, decide: Callable[[str, dict[str, Any]], Answer]) -> None:
    """The backend checks each call's signature, then ``decide(kind, call)``."""

    def respond(headers: dict[str, str], body: bytes) -> Answer:
        call = verify(SECRET, body, headers)
        return decide(headers["Hubbub-Hook"], call)

    backend.respond = respond


def identify(kind: str, call: dict[str, Any]) -> Answer:
    assert kind == "connect"
    cookie = call["headers"].get("cookie", "")
    session = dict(part.split("=", 1) for part in cookie.split("; ") if "=" in part)
    if "app_session" not in session:
        return 204, b""  # not ours to say: the client says hello
    who = SESSIONS.get(session["app_session"])
    return (200, json.dumps(who).encode()) if who else (403, b"")


def hooked(backend: Receiver, *more: str) -> tuple[str, ...]:
    return ("--webhook-secret", SECRET, "--hook-timeout", "10", *more)


async def test_the_connect_hook_turns_the_backends_cookie_into_an_identity(
    start_server: Callable[..., ServerProcess], backend: Receiver
) -> None:
    answering(backend, identify)
    server = start_server(*hooked(backend, "--connect-hook-url", backend.url))
    ann = RoomClient(
        await connect(server.ws("/v1/ws"), additional_headers={"Cookie": "app_session=s-ann"})
    )
    welcome = await ann.next_of("welcome")
    assert (welcome["user"], welcome["name"], welcome["guest"]) == ("u-ann", "Ann", False)
    await ann.join("team-a")
    listed = await request(ann, "rooms", answer="rooms")
    assert listed["rooms"][0]["role"] == "moderator"  # the backend's moderate claim
    (headers, body, _), *_ = backend.requests
    call = json.loads(body)
    assert call["headers"]["cookie"] == "app_session=s-ann" and call["client"] == "127.0.0.1"
    assert headers["Hubbub-Hook"] == "connect"

    mark = len(ann.frames)
    await ann.send(type="join", room="lobby")  # not in its patterns
    assert (await ann.next_of("error", mark))["code"] == "forbidden"
    cy = RoomClient(
        await connect(server.ws("/v1/ws"), additional_headers={"Cookie": "app_session=s-cy"})
    )
    await cy.next_of("welcome")
    await cy.send(type="join", room="team-a")
    assert (await cy.next_of("error"))["code"] == "forbidden"
    await cy.close()
    # An unknown session is refused; no opinion leaves it to the hello.
    refused = RoomClient(
        await connect(server.ws("/v1/ws"), additional_headers={"Cookie": "app_session=bad"})
    )
    assert (await refused.next_of("error"))["code"] == "unauthorized"
    await refused.wait(lambda: refused.closed)
    assert refused.ws.close_code == 1008
    plain = RoomClient(await connect(server.ws("/v1/ws")))
    await plain.send(type="hello", name="bob")
    assert (await plain.next_of("welcome"))["guest"] is True
    # URL credentials never ask the backend.
    asked = len(backend.requests)
    guest = await RoomClient.open(server.ws(""), "cy")
    await guest.next_of("welcome")
    assert len(backend.requests) == asked
    # A foreign page carrying the cookies is refused before the upgrade.
    with pytest.raises(InvalidStatus) as foreign:
        await connect(
            server.ws("/v1/ws"),
            additional_headers={"Cookie": "app_session=s-ann", "Origin": "https://evil.example"},
        )
    assert foreign.value.response.status_code == 403
    for client in (ann, plain, guest):
        await client.close()


async def refused_for_now(server: ServerProcess) -> None:
    client = RoomClient(await connect(server.ws("/v1/ws")))
    assert (await client.next_of("error"))["code"] == "unavailable"
    await client.wait(lambda: client.closed)
    assert client.ws.close_code == 1013


async def test_a_connect_hook_that_is_down_or_wrong_says_try_again(
    start_server: Callable[..., ServerProcess], backend: Receiver
) -> None:
    server = start_server(*hooked(backend, "--connect-hook-url", backend.url))
    hostile = (
        (200, b'{"user": "guest:9b1f0c33e2a4"}'),  # a guest's id: its DMs
        (200, b'{"user": "u-1", "name": "Ann\\u202e\\u200b"}'),  # a name that hides
        (200, b'{"user": "u-1", "moderate": [' + b'"x",' * 100 + b'"x"]}'),  # 101 patterns
        (200, b'{"user": "u-1", "x": "' + b"a" * 70_000 + b'"}'),  # an answer too long
    )
    for answer in ((500, b""), (200, b'{"name": "no user"}'), (200, b"not json"), *hostile):
        backend.respond = lambda headers, body, answer=answer: answer
        await refused_for_now(server)
    backend.stop()  # not there at all
    await refused_for_now(server)
    backend.start()
    assert "Traceback" not in server.log


def moderate(kind: str, call: dict[str, Any]) -> Answer:
    assert kind == "publish"
    if "spam" in call["text"]:
        return 403, json.dumps({"reason": "no spam here"}).encode()
    if "http://" in call["text"]:
        return 200, json.dumps({"text": call["text"].replace("http://", "https://")}).encode()
    if call["text"] == "empty it":
        return 200, json.dumps({"text": ""}).encode()
    return 200, b""


async def test_the_publish_hook_approves_changes_and_refuses(
    start_server: Callable[..., ServerProcess], backend: Receiver
) -> None:
    answering(backend, moderate)
    server = start_server(*hooked(backend, "--publish-hook-url", backend.url))
    ann = await RoomClient.open(server.ws(""), "ann")
    await ann.join("r")
    ok = await ann.say("r", "hello")
    changed = await ann.say("r", "see http://example.com")
    refused = await request(ann, "send", room="r", text="buy spam")
    assert (refused["code"], refused["message"]) == ("refused", "no spam here")
    emptied = await request(ann, "send", room="r", text="empty it")
    assert emptied["code"] == "bad_frame"  # the backend's change is checked like a send
    edit = await request(ann, "edit", room="r", seq=ok["seq"], text="spam!")
    assert edit["code"] == "refused"
    await request(ann, "edit", room="r", seq=ok["seq"], text="hello again")
    await ann.next_of("edit", target=ok["seq"])
    assert ann.texts["r"] == ["hello", "see https://example.com"]
    assert changed["seq"] == ok["seq"] + 1  # nothing refused was stored
    calls = [json.loads(body) for _, body, _ in backend.requests]
    assert calls[0] == {
        "action": "send",
        "room": "r",
        "user": calls[0]["user"],
        "name": "ann",
        "reply_to": None,
        "text": "hello",
        "data": None,
    }
    assert calls[4]["action"] == "edit" and calls[4]["seq"] == ok["seq"]
    # A repeat of a stored send is answered as one, whatever the hook would say now.
    first = await request(ann, "send", room="r", text="once", id="s-1")
    asked = len(backend.requests)
    repeat = await request(ann, "send", room="r", text="buy spam", id="s-1")
    assert (repeat["type"], repeat["seq"], repeat["repeat"]) == ("ack", first["seq"], True)
    assert len(backend.requests) == asked  # not asked again
    await ann.close()


async def test_a_publish_hook_that_is_down_refuses_or_allows_as_configured(
    start_server: Callable[..., ServerProcess], backend: Receiver
) -> None:
    backend.status = 503
    strict = start_server(*hooked(backend, "--publish-hook-url", backend.url))
    lenient = start_server(
        *hooked(backend, "--publish-hook-url", backend.url, "--publish-hook-fallback", "allow")
    )
    for server, stored in ((strict, False), (lenient, True)):
        ann = await RoomClient.open(server.ws(""), "ann")
        await ann.join("r")
        answer = await request(ann, "send", room="r", text="hello")
        assert (answer["type"] == "ack") is stored, answer
        if not stored:
            assert answer["code"] == "unavailable"
        await ann.close()
    assert "stored unchecked" in lenient.log


def test_hooks_without_a_secret_are_refused_when_embedded_too() -> None:
    from hubbub.config import Settings
    from hubbub.embed import Hubbub
    from hubbub.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="webhook_secret"):
        Hubbub(Settings(connect_hook_url="http://127.0.0.1:9/hook"))
