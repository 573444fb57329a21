"""Webhooks (docs/webhooks.md) against a real receiver over HTTP: every event, signed,
in order; through an outage of the receiver and a SIGKILL of Hubbub, nothing lost."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hubbub.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    label,
    signature,
    verify,
)
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.test_chat_ws import request
from tests.test_metrics import scrape
from tests.webhook_receiver import Receiver

SECRET = "webhook-secret-for-tests"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


def hooked(receiver: Receiver, *more: str) -> tuple[str, ...]:
    return ("--webhook-urls", receiver.url, "--webhook-secret", SECRET, *more)


# -- signatures ----------------------------------------------------------------------


def test_a_signed_body_verifies_and_anything_changed_does_not() -> None:
    body = b'{"id":"e-1","type":"room.vacated","room":"r","ts":"2026-12-01T00:00:00.000Z"}'
    now = 1_764_547_200
    stamp = str(now)
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(SECRET, stamp, body)}
    assert verify(SECRET, body, headers, now=now)["type"] == "room.vacated"
    lowered = {name.lower(): value for name, value in headers.items()}
    assert verify(SECRET, body, lowered, now=now + 299)["id"] == "e-1"  # any case, in time
    refusals: list[tuple[bytes, dict[str, str], float, str]] = [
        (body.replace(b"r", b"s", 1), headers, now, "signature"),  # another body
        (body, headers, now + 301, "timestamp"),  # replayed late
        (body, headers, now - 301, "timestamp"),
        (body, {**headers, TIMESTAMP_HEADER: str(now + 1)}, now, "signature"),
        (body, {TIMESTAMP_HEADER: stamp}, now, "no timestamp or no signature"),
        (body, {**headers, TIMESTAMP_HEADER: "12a"}, now, "no timestamp"),
        (body, {**headers, TIMESTAMP_HEADER: "\u00b2"}, now, "no timestamp"),  # a digit to str
        (body, {**headers, TIMESTAMP_HEADER: "9" * 5000}, now, "no timestamp"),  # int() refuses
        (body, {**headers, SIGNATURE_HEADER: "v1=\u00e9"}, now, "no timestamp or no signature"),
    ]
    for bad_body, bad_headers, at, why in refusals:
        with pytest.raises(InvalidSignature, match=why):
            verify(SECRET, bad_body, bad_headers, now=at)
    with pytest.raises(InvalidSignature, match="signature"):
        verify("another secret", body, headers, now=now)


def test_metrics_and_logs_show_a_url_without_its_credentials() -> None:
    assert label("https://bob:pw@hooks.example:8443/in?token=t") == "https://hooks.example:8443/in"


# -- delivery ------------------------------------------------------------------------


def check_signed(receiver: Receiver) -> None:
    for headers, body, _ in receiver.requests:
        verify(SECRET, body, headers)


async def test_every_event_reaches_the_receiver_signed_and_in_order(
    start_server: Callable[..., ServerProcess], receiver: Receiver
) -> None:
    server = start_server(*hooked(receiver))
    ann = await RoomClient.open(server.ws(""), "ann")
    ann_id = (await ann.next_of("welcome"))["user"]
    await ann.join("lobby")
    seq = (await ann.say("lobby", "hello"))["seq"]
    await request(ann, "edit", room="lobby", seq=seq, text="hello!")
    await request(ann, "react", room="lobby", seq=seq, emoji="👍")
    await request(ann, "react", room="lobby", seq=seq, emoji="👍", remove=True)
    await request(ann, "delete", room="lobby", seq=seq)
    await ann.close()
    receiver.wait(lambda: len(receiver.delivered()) >= 10)
    events = receiver.delivered()
    assert [e["type"] for e in events] == [
        "user.online",
        "member.joined",
        "message.created",
        "message.edited",
        "reaction.added",
        "reaction.removed",
        "message.deleted",
        "member.left",
        "room.vacated",
        "user.offline",
    ]
    online, offline = events[0], events[-1]
    assert {(e["user"], e["name"], "room" in e) for e in (online, offline)} == {
        (ann_id, "ann", False)
    }
    events = events[1:-1]
    assert {e["room"] for e in events} == {"lobby"}
    assert len({e["id"] for e in events}) == len(events)
    joined, created, edited = events[:3]
    assert (joined["user"], joined["name"]) == (ann_id, "ann")
    assert created["event"] == {
        "type": "message",
        "room": "lobby",
        "seq": seq,
        "from": "ann",
        "user": ann_id,
        "text": "hello",
        "ts": created["ts"],
    }
    assert (edited["event"]["type"], edited["event"]["target"]) == ("edit", seq)
    assert events[5]["event"]["target"] == seq
    check_signed(receiver)
    assert len(receiver.requests) == 10  # nothing failed, nothing sent twice
    metrics = scrape(server)
    url = f"http://127.0.0.1:{receiver.port}/hook"
    assert metrics[("hubbub_webhook_delivered_total", (("url", url),))] == 10
    assert SECRET not in server.log


async def test_nothing_is_lost_through_a_receiver_outage_and_a_sigkill(
    start_server: Callable[..., ServerProcess], receiver: Receiver, tmp_path: Path
) -> None:
    args = hooked(receiver, "--store-url", f"sqlite:///{tmp_path}/hubbub.db")
    server = start_server(*args)
    receiver.status = 503  # up, but failing
    ann = await RoomClient.open(server.ws(""), "ann")
    await ann.join("r")
    for n in range(5):
        await ann.say("r", f"m{n}")
    receiver.wait(lambda: len(receiver.requests) >= 2)  # tried, failed, tried again
    metrics = scrape(server)
    url = (("url", f"http://127.0.0.1:{receiver.port}/hook"),)
    assert metrics[("hubbub_webhook_failed_total", url)] >= 1
    assert metrics[("hubbub_webhook_queued", url)] >= 1
    receiver.stop()  # now not even there
    for n in range(5, 8):
        await ann.say("r", f"m{n}")
    server.signal(signal.SIGKILL)  # and Hubbub dies with all of it undelivered
    server.wait()
    assert receiver.delivered() == []

    receiver.status = 200
    receiver.start()
    server = start_server(*args)
    receiver.wait(lambda: len([e for e in receiver.delivered() if "event" in e]) >= 8)
    texts = [e["event"]["text"] for e in receiver.delivered() if e["type"] == "message.created"]
    assert texts == [f"m{n}" for n in range(8)]  # each once (by id), in order
    assert [e["type"] for e in receiver.delivered()[:2]] == ["user.online", "member.joined"]
    check_signed(receiver)
    await ann.close()


async def test_an_api_post_and_a_moderation_are_events_too(
    start_server: Callable[..., ServerProcess], receiver: Receiver
) -> None:
    from tests.test_chat_ws import KEY, api

    server = start_server(*hooked(receiver, "--api-key", KEY))
    status, _ = api(server, "POST", "/api/v1/rooms/news/messages", {"text": "hi", "from": "bot"})
    assert status == 201
    status, _ = api(server, "PUT", "/api/v1/rooms/news/roles/bob", {"role": "moderator"})
    assert status == 200
    receiver.wait(lambda: len(receiver.delivered()) >= 2)
    created, moderated = receiver.delivered()[:2]
    assert (created["type"], created["event"]["from"]) == ("message.created", "bot")
    assert (moderated["type"], moderated["event"]["action"]) == ("member.moderated", "role")


def test_webhook_urls_without_a_secret_are_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    for args, why in (
        (["--webhook-urls", "http://127.0.0.1:9/hook"], "--webhook-secret"),
        (["--webhook-urls", "ftp://x/", "--webhook-secret", "s"], "http:// or https://"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "hubbub", "serve", "--port", "0", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode != 0 and why in done.stderr, done.stderr
