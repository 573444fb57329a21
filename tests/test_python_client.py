"""``hubbub.client`` (the asyncio client, docs/python-client.md) over real sockets against
real ``hubbub serve`` processes: rooms, history and presence; sends stored once and
events delivered once, in order, through a SIGKILL and restart of the server; a
refused identity stops the client; the bot of ``docs/examples/bot.py`` answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
from websockets.asyncio.client import connect

from hubbub.client import (
    Client,
    ClientError,
    Event,
    IdentityRefused,
    Joined,
    Left,
    Message,
    Presence,
    State,
)
from tests.integration.private import free_port
from tests.servers import ServerProcess

TIMEOUT = 30
KEY = "api-key-for-python-client-tests"
SECRET = "a-secret-for-python-client-tests-0123456789"
ROOT = Path(__file__).resolve().parents[1]
BOT = ROOT / "docs" / "examples" / "bot.py"
T = TypeVar("T")
FAST = 0.05, 0.5  # backoff_min, backoff_max: reconnect quickly after a restart


async def within(step: Awaitable[T]) -> T:
    """``await step``, bounded: a test fails rather than waits for ever."""
    return await asyncio.wait_for(step, TIMEOUT)


@contextlib.asynccontextmanager
async def opened(client: Client) -> AsyncIterator[Client]:
    """``async with client``, its connection awaited :data:`TIMEOUT` at most (the
    client itself would try for ever while the server cannot be reached)."""
    try:
        await within(client.connect())
        yield client
    finally:
        await client.close()


class Collector:
    """Reads a client's events in a task of its own; tests wait on what arrived."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self.done = False
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.client.events():
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self.done = True
                self._changed.notify_all()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds (checked on every event), or the stream ends."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate() or self.done), TIMEOUT
            )
        assert predicate(), self.events

    async def wait_text(self, room: str, text: str) -> None:
        await self.wait(lambda: text in self.texts(room))

    async def wait_count(self, room: str, count: int) -> None:
        await self.wait(lambda: len(self.messages(room)) >= count)

    def messages(self, room: str) -> list[Message]:
        return [e for e in self.events if isinstance(e, Message) and e.room == room]

    def texts(self, room: str) -> list[str]:
        return [m.text for m in self.messages(room)]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])


@pytest.fixture
async def collect() -> AsyncIterator[Callable[[Client], Collector]]:
    """``collect(client)``: a :class:`Collector`, stopped after the test."""
    made: list[Collector] = []

    def start(client: Client) -> Collector:
        made.append(Collector(client))
        return made[-1]

    yield start
    for collector in made:
        await collector.stop()


def stored(server: ServerProcess, room: str) -> list[tuple[int, str, str | None]]:
    """``(seq, text, user)`` of every message the server's store holds for ``room``."""
    request = urllib.request.Request(server.http(f"/api/v1/rooms/{room}/messages?limit=1000"))
    request.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        page = json.loads(response.read())
    return [(m["seq"], m["text"], m.get("user")) for m in page["messages"]]


class Relay:
    """A TCP relay to a local port that can drop what the server sends: :meth:`mute`
    makes the connections open now lose every byte from the server (acks included),
    while what the client sends still goes through. New connections are not muted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: asyncio.Server | None = None
        self._muted: dict[asyncio.StreamWriter, bool] = {}  # client side -> muted
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    def ws(self, path: str) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}{path}"

    def mute(self) -> None:
        for writer in self._muted:
            self._muted[writer] = True

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._muted:
            writer.transport.abort()
        for task in self._handlers:
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:  # the server is down: so is this connection
                writer.transport.abort()
                return
            self._muted[writer] = False
            await asyncio.gather(
                self._pump(reader, up_writer, None), self._pump(up_reader, writer, writer)
            )
        finally:
            self._muted.pop(writer, None)
            self._handlers.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        muted_by: asyncio.StreamWriter | None,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if muted_by is not None and self._muted.get(muted_by):
                    continue  # the fault this relay injects: the server's bytes are lost
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


async def test_join_send_receive_history_presence_and_leave(
    server: ServerProcess, collect: Callable[[Client], Collector]
) -> None:
    url = server.ws("/v1/ws")
    async with opened(Client(url, name="ann")) as ann, opened(Client(url, name="bob")) as bob:
        assert [ann.state, bob.state] == [State.CONNECTED] * 2
        assert ann.user is not None
        assert ann.user.startswith("guest:") and ann.guest_token is not None
        seen_ann, seen_bob = collect(ann), collect(bob)
        joined = await within(ann.join("lobby"))
        assert (joined.seq, joined.members, joined.reset) == (0, ["ann"], False)
        await within(bob.join("lobby"))
        # Presence: ann hears bob come in; both know who is there, by user id and name.
        await seen_ann.wait(lambda: any(isinstance(e, Presence) for e in seen_ann.events))
        ids = {ann.user, bob.user}
        await seen_ann.wait(lambda: {p.user for p in ann.members("lobby")} == ids)
        assert [p.name for p in bob.members("lobby")] == ["ann", "bob"]

        # Send and receive, with a reply and data.
        first = await within(ann.send("lobby", "hello"))
        data = {"mentions": ["ann"], "n": [1, {"deep": True}]}
        second = await within(bob.send("lobby", "hi ann", reply_to=first, data=data))
        assert second == first + 1
        for seen in (seen_ann, seen_bob):
            await seen.wait_count("lobby", 2)
            hello, reply = seen.messages("lobby")
            assert (hello.seq, hello.text, hello.sender, hello.user) == (
                first,
                "hello",
                "ann",
                ann.user,
            )
            assert (reply.seq, reply.reply_to, reply.data, reply.user) == (
                second,
                first,
                data,
                bob.user,
            )
        assert ann.last_seq("lobby") == second

        # History, paged backwards to the beginning.
        for n in range(5):
            await within(ann.send("lobby", f"m{n}"))
        newest = await within(bob.history("lobby", limit=3))
        assert [m.text for m in newest] == ["m2", "m3", "m4"]
        pages, before = [], newest[0].seq
        while page := await within(bob.history("lobby", before=before, limit=3)):
            pages.append([m.text for m in page])
            before = page[0].seq
        assert pages == [["hi ann", "m0", "m1"], ["hello"]]
        assert (await within(bob.history("lobby")))[-1].text == "m4"  # default limit

        # Refusals raise, with the server's code, and are not tried again.
        with pytest.raises(ClientError) as refused:
            await within(ann.send("lobby", "x" * 4001))
        assert refused.value.code == "text_too_long"
        with pytest.raises(ClientError) as refused:
            await within(ann.send("elsewhere", "hi"))
        assert refused.value.code == "not_joined"

        # A join refused (another users' direct messages) beside one that is not.
        refused_join, other = await within(
            asyncio.gather(
                ann.join("dm:0123456789abcdef"), ann.join("other"), return_exceptions=True
            )
        )
        assert isinstance(refused_join, ClientError) and refused_join.code == "forbidden"
        assert isinstance(other, Joined) and other.room == "other"
        assert ann.rooms == ["lobby", "other"]

        # Leave: presence says so, and the room takes no more requests.
        await within(bob.leave("lobby"))
        await seen_ann.wait(lambda: [p.name for p in ann.members("lobby")] == ["ann"])
        assert any(isinstance(e, Presence) and e.left == ["bob"] for e in seen_ann.events)
        assert bob.rooms == []
        with pytest.raises(ClientError) as refused:
            await within(bob.send("lobby", "still here?"))
        assert refused.value.code == "not_joined"
        last = await within(ann.send("lobby", "after bob left"))
        await seen_ann.wait(lambda: ann.last_seq("lobby") == last)
        assert "after bob left" not in seen_bob.texts("lobby")
    assert ann.state is State.CLOSED
    with pytest.raises(ClientError) as closed:
        await within(ann.join("lobby"))
    assert closed.value.code == "closed"


async def test_sends_are_stored_once_and_events_delivered_once_through_a_server_kill(
    start_server: Callable[..., ServerProcess],
    collect: Callable[[Client], Collector],
    tmp_path: Path,
) -> None:
    # The same port and store for the restarted server, so the clients find it again.
    store = ("--store-url", f"sqlite:///{tmp_path}/h.db", "--api-key", KEY)
    args = ("--port", str(free_port()), *store)
    server = start_server(*args)
    relay = await Relay(server.port).start()
    ann = Client(
        relay.ws("/v1/ws"), name="ann", backoff_min=FAST[0], backoff_max=FAST[1]
    )  # through the relay
    bob = Client(server.ws("/v1/ws"), name="bob", backoff_min=FAST[0], backoff_max=FAST[1])
    sent: dict[asyncio.Task[int], tuple[Client, str]] = {}

    def send(client: Client, text: str) -> None:
        sent[asyncio.create_task(client.send("r", text))] = (client, text)

    try:
        async with opened(ann), opened(bob):
            seen_ann, seen_bob = collect(ann), collect(bob)
            await within(ann.join("r"))
            await within(bob.join("r"))
            users = ann.user, bob.user
            for n in range(3):
                send(ann, f"ann-{n}")
                send(bob, f"bob-{n}")
            await asyncio.wait_for(asyncio.gather(*sent), TIMEOUT)

            # Stored, but the acks (and every frame after) are lost on ann's connection.
            relay.mute()
            for n in range(3):
                send(ann, f"ann-unacked-{n}")
            unacked = {f"ann-unacked-{n}" for n in range(3)}
            await seen_bob.wait(lambda: unacked <= set(seen_bob.texts("r")))
            # Under way as the server is killed (from a thread, so the sends go on
            # meanwhile): stored or not, nobody knows.
            for n in range(3):
                send(ann, f"ann-at-kill-{n}")
                send(bob, f"bob-at-kill-{n}")
            await asyncio.to_thread(server.signal, signal.SIGKILL)
            await asyncio.to_thread(server.wait)
            # Sent while the server is down (and the clients try to reconnect).
            for n in range(3):
                send(ann, f"ann-offline-{n}")
                send(bob, f"bob-offline-{n}")
            server = await asyncio.to_thread(start_server, *args)

            seqs = await asyncio.wait_for(asyncio.gather(*sent), TIMEOUT)
            answered = {sent[task][1]: seq for task, seq in zip(sent, seqs, strict=True)}
            rows = stored(server, "r")
            # Nothing lost, nothing doubled; each send answered with its message's seq
            # (those stored before the kill by a repeat: their first seq).
            assert sorted(text for _, text, _ in rows) == sorted(answered)
            assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
            assert {text: seq for seq, text, _ in rows} == answered
            # Each client's messages stored in the order it sent them, under its one user.
            for client, user in zip((ann, bob), users, strict=True):
                texts = [text for _, (c, text) in sent.items() if c is client]
                assert [answered[t] for t in texts] == sorted(answered[t] for t in texts)
                assert {u for _, text, u in rows if text in texts} == {user}
            assert (ann.user, bob.user) == users

            # Every event of the room reached both once, in order, across the restart
            # (ann's frames since the mute came again from the resumed join).
            last = await within(bob.send("r", "last"))
            rows = stored(server, "r")
            for seen in (seen_ann, seen_bob):
                await seen.wait_text("r", "last")
                assert [(m.seq, m.text) for m in seen.messages("r")] == [
                    (seq, text) for seq, text, _ in rows
                ]
                assert seen.messages("r")[-1].seq == last
                rejoins = [e for e in seen.events if isinstance(e, Joined)]
                assert len(rejoins) >= 2 and not any(j.reset for j in rejoins)
            assert ann.connections >= 2 and bob.connections >= 2
    finally:
        await relay.stop()


async def test_a_new_store_resets_the_rooms_numbering(
    start_server: Callable[..., ServerProcess],
    collect: Callable[[Client], Collector],
    tmp_path: Path,
) -> None:
    port = str(free_port())
    server = start_server("--port", port, "--store-url", f"sqlite:///{tmp_path}/one.db")
    client = Client(server.ws("/v1/ws"), name="ann", backoff_min=FAST[0], backoff_max=FAST[1])
    async with opened(client) as ann:
        seen = collect(ann)
        await within(ann.join("r"))
        for n in range(3):
            await within(ann.send("r", f"old-{n}"))
        old_epoch, old_user = ann.epoch, ann.user
        server.signal(signal.SIGKILL)
        server.wait()
        # Another store: another epoch, whose seqs start at 1 again.
        server = start_server("--port", port, "--store-url", f"sqlite:///{tmp_path}/two.db")
        await seen.wait(lambda: any(isinstance(e, Joined) and e.reset for e in seen.events))
        assert ann.epoch != old_epoch and ann.last_seq("r") == 0
        # The old store's guest token means nothing here: a new guest of the same name.
        assert ann.user != old_user and ann.name == "ann"
        seq = await within(ann.send("r", "new"))
        assert seq == 1
        await seen.wait_text("r", "new")
        assert [(m.seq, m.text) for m in seen.messages("r")] == [
            (1, "old-0"),
            (2, "old-1"),
            (3, "old-2"),
            (1, "new"),
        ]


async def test_sends_refused_for_now_go_again_and_are_stored_once(
    start_server: Callable[..., ServerProcess], collect: Callable[[Client], Collector]
) -> None:
    # A burst far over the rate: many sends are refused with rate_limited, and so many
    # refusals get the connection closed (1008, too many refused frames) as well.
    server = start_server("--rate-burst", "5", "--rate-per-second", "50", "--api-key", KEY)
    url = server.ws("/v1/ws")
    async with opened(Client(url, name="ann", backoff_min=FAST[0], backoff_max=FAST[1])) as ann:
        seen = collect(ann)
        await within(ann.join("r"))
        texts = [f"burst-{n}" for n in range(40)]
        seqs = await asyncio.wait_for(
            asyncio.gather(*(ann.send("r", text) for text in texts)), TIMEOUT
        )
        rows = stored(server, "r")
        assert sorted(text for _, text, _ in rows) == sorted(texts)  # each once
        assert {text: seq for seq, text, _ in rows} == dict(zip(texts, seqs, strict=True))
        await seen.wait_count("r", len(texts))
        assert [(m.seq, m.text) for m in seen.messages("r")] == [(s, t) for s, t, _ in rows]


async def test_a_refused_identity_stops_the_client_without_reconnecting(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--jwt-secret", SECRET)
    url = server.ws("/v1/ws")
    hour = time.time() + 3600
    claims = {"sub": "alice", "name": "Alice", "rooms": ["*"]}
    forged = jwt.encode({**claims, "exp": hour}, "another-secret-of-forty-characters-00", "HS256")
    expired = jwt.encode({**claims, "exp": time.time() - 60}, SECRET, "HS256")
    quick = 0.01  # a retry loop would spin at once
    for client, code in [
        (Client(url, token=forged, backoff_min=quick, backoff_max=quick), "unauthorized"),
        (Client(url, token=expired, backoff_min=quick, backoff_max=quick), "token_expired"),
        # No guests on a server with a secret.
        (Client(url, name="ann", backoff_min=quick, backoff_max=quick), "unauthorized"),
        # Refused before the upgrade (HTTP 403: a query parameter over its bound).
        (Client(f"{url}?name={'x' * 65}", name="ann", backoff_min=quick), "unauthorized"),
    ]:
        with pytest.raises(IdentityRefused) as refused:
            async with opened(client):
                pass
        assert refused.value.code == code
        # Stopped for good after one attempt: nothing left that could reconnect.
        assert (client.state, client.attempts, client.connections) == (State.CLOSED, 1, 0)
        with pytest.raises(IdentityRefused):
            await within(client.join("lobby"))
        with pytest.raises(IdentityRefused):
            async for _ in client.events():
                pass
    token = jwt.encode({**claims, "exp": hour}, SECRET, "HS256")
    async with opened(Client(url, token=token)) as alice:
        assert (alice.user, alice.name, alice.guest_token) == ("alice", "Alice", None)
        await within(alice.join("lobby"))
        assert await within(alice.send("lobby", "a good token works")) == 1


async def test_a_kicked_client_loses_the_room_and_does_not_rejoin(
    start_server: Callable[..., ServerProcess], collect: Callable[[Client], Collector]
) -> None:
    server = start_server("--jwt-secret", SECRET, "--guests", "true")
    url = server.ws("/v1/ws")
    claims = {"sub": "mod", "exp": time.time() + 3600, "rooms": ["*"], "moderate": ["*"]}
    token = jwt.encode(claims, SECRET, "HS256")
    async with opened(Client(url, name="ann")) as ann:
        seen = collect(ann)
        await within(ann.join("r"))
        # A moderator on a bare connection (the client has no moderation calls).
        async with connect(url) as moderator:
            await within(moderator.send(json.dumps({"type": "hello", "token": token})))
            await within(moderator.send(json.dumps({"type": "join", "room": "r"})))
            await seen.wait(lambda: "mod" in [p.name for p in ann.members("r")])
            kick = {"type": "moderate", "room": "r", "user": ann.user, "action": "kick"}
            await within(moderator.send(json.dumps(kick)))
            await seen.wait(lambda: any(isinstance(e, Left) for e in seen.events))
            left = next(e for e in seen.events if isinstance(e, Left))
            assert (left.room, left.reason) == ("r", "kicked")
            assert ann.rooms == []
            with pytest.raises(ClientError) as refused:
                await within(ann.send("r", "let me back"))
            assert refused.value.code == "not_joined"


async def test_the_example_bot_answers_ping(
    server: ServerProcess, collect: Callable[[Client], Collector]
) -> None:
    # The page shows the example as it is in docs/examples/bot.py.
    page = (ROOT / "docs" / "python-client.md").read_text()
    assert BOT.read_text().strip() in page
    url = server.ws("/v1/ws")
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BOT),
        url,
        "lobby",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with opened(Client(url, name="ann")) as ann:
            seen = collect(ann)
            await within(ann.join("lobby"))
            await seen.wait(lambda: "pingbot" in [p.name for p in ann.members("lobby")])
            await within(ann.send("lobby", "hello, bot"))  # not a ping: no answer
            ping = await within(ann.send("lobby", "!ping"))
            await seen.wait(lambda: any(m.reply_to == ping for m in seen.messages("lobby")))
            assert [(m.sender, m.text, m.reply_to) for m in seen.messages("lobby")] == [
                ("ann", "hello, bot", None),
                ("ann", "!ping", None),
                ("pingbot", "pong", ping),
            ]
        bot.send_signal(signal.SIGINT)  # Ctrl-C: the bot closes its client and exits
        output, _ = await asyncio.wait_for(bot.communicate(), TIMEOUT)
        assert bot.returncode == 0, output.decode()
    finally:
        if bot.returncode is None:
            bot.kill()
            await bot.communicate()
