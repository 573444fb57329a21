"""An asyncio client for the ``/v1/ws`` room protocol (docs/protocol.md), for bots, tests
and backend workers; docs/python-client.md shows how to use it.

It keeps one WebSocket open and reconnects by itself (exponential backoff with jitter),
joins every room again with ``since`` on each new connection, so that the application
sees each room event once and in order, and keeps every ``send`` (with an ``id`` of its
own) in an outbox until the server acknowledges it, so that a send is stored once
through any reconnection or server restart. What it decides (when to stop, what to try
again) follows the browser client, ``hubbub.js`` (docs/client.md).

The frames it hands out are the server's own types from :mod:`hubbub.protocol`
(:class:`Message`, :class:`Joined`, :class:`Presence`, …).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeAlias, get_args

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from hubbub.protocol import (
    ROOM_PATTERN,
    Ack,
    Delete,
    DmOpened,
    Edit,
    Error,
    HistoryPage,
    Joined,
    Left,
    MembershipNotice,
    Message,
    Moderation,
    Person,
    Pong,
    Presence,
    Reaction,
    ReadState,
    Receipt,
    RoomList,
    ServerFrame,
    TypingNotice,
    Welcome,
)

__all__ = [
    "Client",
    "ClientClosed",
    "ClientError",
    "Delete",
    "DmOpened",
    "Edit",
    "Error",
    "Event",
    "IdentityRefused",
    "Joined",
    "Left",
    "MembershipNotice",
    "Message",
    "Moderation",
    "Person",
    "Presence",
    "Reaction",
    "ReadState",
    "Receipt",
    "RoomEvent",
    "State",
    "TypingNotice",
    "Welcome",
]

logger = logging.getLogger("hubbub.client")

RoomEvent: TypeAlias = Message | Edit | Delete | Reaction | Moderation
"""What a room's ``seq`` stream holds: each is delivered once, in ``seq`` order."""

Event: TypeAlias = (
    RoomEvent
    | Joined
    | Left
    | Presence
    | TypingNotice
    | Receipt
    | ReadState
    | MembershipNotice
    | DmOpened
    | Welcome
    | Error
)
"""What :meth:`Client.events` yields (see its docstring for when each comes)."""

# Refusals of the connection itself: the server closes it next (1008), and trying again
# with the same name or token would only be refused again.
REFUSED = frozenset({"unauthorized", "token_expired", "token_not_yet_valid", "invalid_name"})
# Refusals that mean "not now" rather than "never": the request is tried again later.
RETRY_LATER = frozenset({"unavailable", "rate_limited"})
# A membership ended by a moderator: the server has taken the user out of the room.
REMOVED = frozenset({"kicked", "banned"})
POLICY_VIOLATION = 1008
SEND_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
ROOM = re.compile(ROOM_PATTERN)
CLOSE_TIMEOUT = 5.0

_decoder: msgspec.json.Decoder[ServerFrame] = msgspec.json.Decoder(ServerFrame)
# The server's frame types: one of these that does not decode is a mismatch worth a
# warning; any other type is newer than this client, and ignored.
_KNOWN_TYPES = frozenset(frame.__struct_config__.tag for frame in get_args(ServerFrame))


class ClientError(Exception):
    """A request refused by the server (``code`` is its error code: ``not_joined``,
    ``text_too_long``, ``forbidden``, …) or ended by the client itself (``closed``,
    ``left``, ``kicked``, ``banned``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class IdentityRefused(ClientError):
    """The server refused who the client says it is (``unauthorized``,
    ``token_expired``, ``token_not_yet_valid``, ``invalid_name``, or an HTTP 401/403 at
    the upgrade). The client stops: trying again would be refused again."""


class ClientClosed(ClientError):
    """The client was closed (``code`` ``closed``) before the request was answered."""


class State(enum.Enum):
    """Where a :class:`Client` is."""

    IDLE = "idle"
    """Made, not started (see :meth:`Client.connect`)."""
    CONNECTING = "connecting"
    """Its first connection is under way."""
    CONNECTED = "connected"
    """Connected, and the server said who it takes the client to be (``welcome``)."""
    RECONNECTING = "reconnecting"
    """The connection dropped: waiting (backoff) or trying again."""
    CLOSED = "closed"
    """Stopped for good: :meth:`Client.close`, or refused (:class:`IdentityRefused`)."""


class _Kind(enum.Enum):
    JOIN = "joined"  # the value: the frame type that answers it
    SEND = "ack"
    HISTORY = "history"
    LEAVE = "left"


@dataclass(eq=False)
class _Request:
    """A frame that waits for its answer; ``number`` orders them as they were asked."""

    kind: _Kind
    room: str
    frame: dict[str, Any]
    number: int
    future: asyncio.Future[object] | None = None

    @property
    def ref(self) -> object:
        return self.frame.get("ref")

    @property
    def wanted(self) -> bool:
        """Still worth writing: a send always is (it may be stored already), a question
        only while someone waits for its answer."""
        return self.kind is _Kind.SEND or (self.future is not None and not self.future.done())

    def resolve(self, answer: object) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(answer)

    def reject(self, error: ClientError) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)


@dataclass(eq=False)
class _Room:
    """What the client knows of one joined room."""

    name: str
    last: int | None = None  # seq of the last event delivered (or of the first joined)
    epoch: str | None = None  # the deployment ``last`` counts in
    joined: Joined | None = None  # the latest answer to a join
    link: _Link | None = None  # the connection the room is joined on, if any
    paused: bool = False  # a request was refused for now: the room's others wait
    rejoin: bool = False  # ... and the server forgot the join: join again, then go on
    refusals: int = 0  # refusals in a row, for the backoff
    people: dict[str, Person] = field(default_factory=dict)  # user id -> who
    waiters: list[asyncio.Future[Joined]] = field(default_factory=list)


class _Link:
    """One WebSocket connection and what it writes, in order, from one writer task."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.outgoing: asyncio.Queue[str] = asyncio.Queue()
        self.welcomed = False
        self.refusal: Error | None = None  # the server refused the identity: a close follows


def _consume(future: asyncio.Future[Any]) -> None:
    # A refusal nobody awaits any more (a cancelled caller) is not an error to log.
    if not future.cancelled():
        future.exception()


class Client:
    """One connection to a Hubbub server's ``/v1/ws``, kept up until :meth:`close`.

    ``url``: the endpoint, ``ws://HOST:PORT/v1/ws`` (``wss://`` for TLS). Who the client
    is, one of:

    - ``token``: a user token (a JWT the server verifies);
    - ``name``: a new guest of that display name, where the server allows guests;
    - ``guest_token`` (with or without ``name``): the same guest as before, from an
      earlier :attr:`guest_token` (with ``name``: under that name). A guest token the
      server no longer takes makes the client a new guest of ``name``, if it has one.

    Every ``welcome`` brings a fresh :attr:`guest_token`, which the client uses for its
    reconnections (so it stays the same user) and an application may keep. The
    credentials go in the protocol's first frame (``hello``), never in the URL.

    After a drop the client waits ``min(backoff_max, backoff_min * 2**n)`` seconds, half
    of it fixed and half random, then tries again (``n``: failed attempts in a row).
    ``heartbeat``: seconds between WebSocket pings; a connection that does not answer
    one within as long counts as dropped (None: no pings). ``open_timeout``: seconds for
    the TCP, TLS and WebSocket handshakes.

    Use it as ``async with Client(url, name="bot") as client:``, or call
    :meth:`connect` and :meth:`close`. One client belongs to one event loop.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        name: str | None = None,
        guest_token: str | None = None,
        backoff_min: float = 0.25,
        backoff_max: float = 5.0,
        heartbeat: float | None = 15.0,
        open_timeout: float = 10.0,
    ) -> None:
        if token is not None and (name is not None or guest_token is not None):
            raise ValueError("a token, or a guest's name or guest token: not both")
        if token is None and name is None and guest_token is None:
            raise ValueError("give a token, a guest name or a guest token")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("backoff: 0 < backoff_min <= backoff_max")
        self.url = url
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.heartbeat = heartbeat
        self.open_timeout = open_timeout
        self._token = token
        self._name = name
        self._guest_token = guest_token
        self.user: str | None = None
        """The user id the server gave (from ``welcome``); None before the first."""
        self.name: str | None = name
        """The display name the server took (from ``welcome``)."""
        self.epoch: str | None = None
        """The server deployment's epoch (docs/protocol.md, "Epochs")."""
        self.attempts = 0
        """Connections tried so far (whether they succeeded or not)."""
        self.connections = 0
        """Connections the server welcomed so far."""
        self._state = State.IDLE
        self._failure: ClientError | None = None  # why it stopped
        self._rooms: dict[str, _Room] = {}
        self._queue: list[_Request] = []  # not written yet: no connection, or room not ready
        self._inflight: list[_Request] = []  # written on this connection, unanswered, in order
        self._link: _Link | None = None
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()  # None: the end
        self._runner: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._connect_waiters: list[asyncio.Future[None]] = []
        self._refs = itertools.count(1)
        self._numbers = itertools.count()
        self._attempt = 0  # failed attempts in a row: the backoff's exponent

    # -- life ------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """Where the client is: see :class:`State`."""
        return self._state

    @property
    def guest_token(self) -> str | None:
        """The token that brings this guest back as itself (None for a user token)."""
        return self._guest_token

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Start (if not started yet) and return once connected. From now on the client
        reconnects by itself until :meth:`close`. Raises :class:`IdentityRefused` if the
        server refuses the identity, :class:`ClientClosed` once closed. While the server
        cannot be reached it keeps trying: bound the wait with ``asyncio.timeout``."""
        self._check_open()
        self._start()
        if self._state is State.CONNECTED:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_consume)
        self._connect_waiters.append(waiter)
        await waiter

    async def close(self) -> None:
        """Stop for good and close the connection (code 1000). Every request still
        waiting (a :meth:`send` not acknowledged yet, a :meth:`join`, a
        :meth:`history`) fails with :class:`ClientClosed`; :meth:`events` ends once what
        it buffered is read. A send written before may still have been stored."""
        self._stop(ClientClosed("closed", "the client is closed"))
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            await asyncio.wait([runner])

    # -- rooms -----------------------------------------------------------------------

    @property
    def rooms(self) -> list[str]:
        """The rooms joined (or being joined), in the order they were joined."""
        return list(self._rooms)

    async def join(self, room: str) -> Joined:
        """Join ``room`` (and again, resuming where it stopped, on every reconnection);
        returns the server's ``joined`` (its ``seq``, ``members``, ``people``).

        Waits until connected. A join refused for now (``unavailable``,
        ``rate_limited``) is tried again with backoff; any other refusal
        (``forbidden``, ``name_taken``, ``banned``, …) raises :class:`ClientError`
        and forgets the room. Joining a joined room returns its latest ``joined``.
        """
        self._check_open()
        if not ROOM.match(room):
            raise ValueError(f"bad room name: {room!r}")
        self._start()
        entry = self._rooms.get(room)
        if entry is None:
            entry = self._rooms[room] = _Room(room)
            if self._state is State.CONNECTED:
                self._send_join(entry)
        elif entry.joined is not None and entry.link is not None and entry.link is self._link:
            return entry.joined
        waiter: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_consume)
        entry.waiters.append(waiter)
        return await waiter

    async def leave(self, room: str, *, forget: bool = False) -> None:
        """Stop receiving ``room`` (nothing more of it is delivered once this is
        called); requests of the room not yet written fail with code ``left``.
        ``forget``: end the user's stored membership too (the room leaves its list on
        every device); only done while connected. Returns once the server answered,
        or at once when not connected."""
        if room not in self._rooms:
            return
        self._forget(room, ClientError("left", f"left room {room}"), announce=False)
        if self._state is not State.CONNECTED:
            return
        frame: dict[str, Any] = {"type": "leave", "room": room}
        if forget:
            frame["forget"] = True
        request = self._request(_Kind.LEAVE, room, frame)
        self._write(request)
        assert request.future is not None
        await request.future

    def last_seq(self, room: str) -> int | None:
        """The ``seq`` of the last event delivered in ``room`` (or the room's ``seq``
        when first joined); None before its first join is answered or if not joined."""
        entry = self._rooms.get(room)
        return entry.last if entry is not None else None

    def members(self, room: str) -> list[Person]:
        """Who is in ``room`` now, by name, as the client last heard (the ``joined``
        list, kept up to date by ``presence``): each with ``user`` (id) and ``name``."""
        entry = self._require_room(room)
        return sorted(entry.people.values(), key=lambda person: (person.name, person.user))

    # -- requests --------------------------------------------------------------------

    async def send(
        self,
        room: str,
        text: str,
        *,
        reply_to: int | None = None,
        data: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> int:
        """Post ``text`` to joined ``room``; returns the message's ``seq`` once stored.

        ``reply_to``: the ``seq`` of a message of the room; ``data``: a JSON object for
        applications. ``id`` (1-64 of ``A-Z a-z 0-9 . _ : -``; a new UUID if not given)
        makes the send happen once: the message stays in the client's outbox until its
        ``ack``, goes again with the same ``id`` after any reconnection, and the server
        stores it only the first time. Pass an ``id`` of your own (a job's, say) to have
        a send repeated by another run of your program stored once as well.

        Waits while disconnected. A refusal raises :class:`ClientError` (``not_joined``
        when the room is not joined here, ``text_too_long``, ``forbidden``, ``muted``,
        ``refused`` by the deployment's publish hook…);
        ``unavailable`` and ``rate_limited`` are tried again with backoff. Cancelling
        the call stops the waiting, not the message: it is sent all the same.

        A room's sends go out, and are stored, in the order they were made, except
        after an ``unavailable`` or ``rate_limited`` refusal: those sent again may land
        after later ones.
        """
        self._require_room(room)
        send_id = str(uuid.uuid4()) if id is None else id
        if not SEND_ID.fullmatch(send_id):
            raise ValueError(f"bad send id: {send_id!r}")
        frame: dict[str, Any] = {
            "type": "send",
            "room": room,
            "text": text,
            "ref": f"c{next(self._refs)}",
            "id": send_id,
        }
        if reply_to is not None:
            frame["reply_to"] = reply_to
        if data is not None:
            frame["data"] = data
        request = self._request(_Kind.SEND, room, frame)
        self._submit(request)
        assert request.future is not None
        ack = await asyncio.shield(request.future)
        assert isinstance(ack, Ack) and ack.seq is not None, ack
        return ack.seq

    async def history(
        self, room: str, *, before: int | None = None, limit: int | None = None
    ) -> list[Message]:
        """Up to ``limit`` (1-1000; the server's default is 50) messages of joined
        ``room`` with ``seq < before`` (the newest without ``before``), in ascending
        ``seq``, each in its current state (``edited``, ``deleted``, ``reactions``).

        Page back with ``before`` = the smallest ``seq`` received; an empty list is the
        beginning (a page may hold fewer than ``limit`` without being the end: the
        server bounds pages in bytes too). Waits while disconnected.
        """
        self._require_room(room)
        frame: dict[str, Any] = {"type": "history", "room": room}
        if before is not None:
            frame["before"] = before
        if limit is not None:
            frame["limit"] = limit
        request = self._request(_Kind.HISTORY, room, frame)
        self._submit(request)
        assert request.future is not None
        page = await request.future
        assert isinstance(page, HistoryPage), page
        return page.messages

    # -- events ----------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Everything the server tells the application, in the order it arrived,
        buffered until read (one stream per client: each event goes to one reader):

        - :class:`Message`, :class:`Edit`, :class:`Delete`, :class:`Reaction`,
          :class:`Moderation` (the room events, :data:`RoomEvent`): each once, in
          ``seq`` order per room, across reconnections;
        - :class:`Joined` after every join and rejoin (``reset``: the room's history
          started over, on a new store; drop what you know of the room);
        - :class:`Left` with a ``reason`` when the client lost a room it was in (a
          moderator's ``kicked`` or ``banned``; a rejoin refused): it is not joined
          again;
        - :class:`Presence`, :class:`TypingNotice`, :class:`Receipt` of joined rooms;
          :class:`ReadState`, :class:`MembershipNotice`, :class:`DmOpened` of the user;
        - :class:`Welcome` on every connection; :class:`Error` for a refusal that no
          request was waiting for.

        The iteration ends after :meth:`close`, or raises :class:`IdentityRefused` once the
        server refused the identity.
        """
        return _EventStream(self)

    async def _next_event(self) -> Event:
        event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)  # for every other reader too
            if isinstance(self._failure, IdentityRefused):
                raise self._failure
            raise StopAsyncIteration
        return event

    # -- the connection --------------------------------------------------------------

    def _start(self) -> None:
        if self._runner is None:
            self._set_state(State.CONNECTING)
            self._runner = asyncio.create_task(self._run(), name=f"hubbub.client {self.url}")
            self._runner.add_done_callback(self._runner_done)

    def _runner_done(self, runner: asyncio.Task[None]) -> None:
        if not runner.cancelled() and (exc := runner.exception()) is not None:
            logger.error("hubbub client stopped by an error", exc_info=exc)
            self._stop(ClientError("internal", f"the client failed: {exc!r}"))

    async def _run(self) -> None:
        """Connect, serve the connection, and again after a backoff, until stopped."""
        while self._state is not State.CLOSED:
            delay = await self._connect_once()
            if self._failure is not None:  # stopped while connected
                return
            self._set_state(State.RECONNECTING)
            if delay > 0:
                await asyncio.sleep(delay)  # the backoff itself, not a wait for an event

    async def _connect_once(self) -> float:
        """One connection, from the handshake to its end; the delay before the next."""
        self.attempts += 1
        link: _Link | None = None
        try:
            async with connect(
                self.url,
                open_timeout=self.open_timeout,
                ping_interval=self.heartbeat,
                ping_timeout=self.heartbeat,
                close_timeout=CLOSE_TIMEOUT,
                max_size=None,  # the server bounds its frames (history pages, backlogs)
            ) as ws:
                link = _Link(ws)
                await self._serve(link)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                self._stop(
                    IdentityRefused("unauthorized", f"the upgrade was refused: HTTP {status}")
                )
                return 0.0
            logger.warning("hubbub: %s refused the upgrade: HTTP %d", self.url, status)
        except InvalidURI as exc:
            self._stop(ClientError("bad_url", str(exc)))
            return 0.0
        except (OSError, TimeoutError, WebSocketException) as exc:
            logger.info("hubbub: no connection to %s: %s", self.url, exc or type(exc).__name__)
        except Exception:  # a bug of ours: logged, and the connection tried again
            logger.exception("hubbub: the connection to %s failed", self.url)
        finally:
            if link is not None:
                self._dropped(link)
        if link is not None and link.welcomed:
            self._attempt = 0  # it had answered: the backoff starts afresh
        refusal = link.refusal if link is not None else None
        if refusal is not None and link is not None and link.ws.close_code == POLICY_VIOLATION:
            if refusal.code == "unauthorized" and self._guest_token and self._name:
                # A guest token this server cannot take (expired, another deployment):
                # come back as a new guest of the same name rather than not at all.
                logger.warning("hubbub: guest token refused; connecting as a new guest")
                self._guest_token = None
                return 0.0
            self._stop(IdentityRefused(refusal.code, refusal.message))
            return 0.0
        delay = self._backoff(self._attempt)
        self._attempt += 1
        return delay

    async def _serve(self, link: _Link) -> None:
        """Say who we are, then read until the connection closes."""
        self._link = link
        link.outgoing.put_nowait(msgspec.json.encode(self._hello()).decode())
        async with asyncio.TaskGroup() as tasks:
            writer = tasks.create_task(self._write_all(link))
            try:
                while True:
                    try:
                        raw = await link.ws.recv()
                    except ConnectionClosed:
                        break
                    self._receive(link, raw)
            finally:
                writer.cancel()
        code, reason = link.ws.close_code, link.ws.close_reason
        logger.info("hubbub: connection to %s closed: %s %s", self.url, code, reason or "")

    async def _write_all(self, link: _Link) -> None:
        # One writer per connection: frames go out in the order they were queued.
        while True:
            text = await link.outgoing.get()
            try:
                await link.ws.send(text)
            except ConnectionClosed:
                return

    def _hello(self) -> dict[str, Any]:
        if self._token is not None:
            return {"type": "hello", "token": self._token}
        hello: dict[str, Any] = {"type": "hello"}
        if self._guest_token is not None:
            hello["guest"] = self._guest_token
        if self._name is not None:
            hello["name"] = self._name
        return hello

    def _dropped(self, link: _Link) -> None:
        """The connection ended: what was written and not answered goes again on the
        next one (joins are redone anyway; a leave is done: the server forgot us)."""
        if self._link is not link:
            return
        self._link = None
        self._cancel_timers()
        again: list[_Request] = []
        for request in self._inflight:
            if request.kind is _Kind.LEAVE:
                request.resolve(None)
            elif request.kind is not _Kind.JOIN:
                if request.room not in self._rooms:
                    request.reject(ClientError("left", f"left room {request.room}"))
                elif request.wanted:
                    again.append(request)
        self._inflight = []
        self._queue = sorted(again + self._queue, key=lambda request: request.number)
        for entry in self._rooms.values():
            entry.link, entry.paused, entry.rejoin = None, False, False
        if self._state is not State.CLOSED:
            self._set_state(State.RECONNECTING)

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half fixed, half random, so clients dropped together do not
        # all come back together.
        ceiling = min(self.backoff_max, self.backoff_min * 2.0 ** min(attempt, 32))
        return ceiling / 2 + random.random() * ceiling / 2

    def _stop(self, error: ClientError) -> None:
        """Stop for good: everything waiting fails with ``error``."""
        if self._state is State.CLOSED:
            return
        self._failure = error
        self._set_state(State.CLOSED)
        self._cancel_timers()
        for request in [*self._inflight, *self._queue]:
            request.reject(error)
        self._inflight, self._queue = [], []
        for entry in self._rooms.values():
            for waiter in entry.waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            entry.waiters.clear()
        for connecting in self._connect_waiters:
            if not connecting.done():
                connecting.set_exception(error)
        self._connect_waiters.clear()
        self._events.put_nowait(None)

    def _set_state(self, state: State) -> None:
        if state is not self._state:
            logger.debug("hubbub: %s -> %s", self._state.value, state.value)
            self._state = state

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure

    # -- frames in -------------------------------------------------------------------

    def _receive(self, link: _Link, raw: str | bytes) -> None:
        if link is not self._link or self._state is State.CLOSED:
            return
        if isinstance(raw, bytes):
            logger.warning("hubbub: a binary frame from the server, ignored")
            return
        try:
            frame = _decoder.decode(raw)
        except msgspec.DecodeError as exc:  # ValidationError too
            self._undecodable(raw, exc)
            return
        self._on_frame(link, frame)

    @staticmethod
    def _undecodable(raw: str, exc: Exception) -> None:
        try:
            kind = msgspec.json.decode(raw).get("type")
        except (msgspec.DecodeError, AttributeError):
            kind = None
        if kind in _KNOWN_TYPES:
            logger.warning("hubbub: a %s frame not as expected (%s), ignored", kind, exc)
        else:  # a frame type newer than this client: ignored, as the protocol says
            logger.debug("hubbub: a frame of unknown type %r, ignored", kind)

    def _on_frame(self, link: _Link, frame: ServerFrame) -> None:
        match frame:
            case Message() | Edit() | Delete() | Reaction() | Moderation():
                self._on_event(frame)
            case Ack(ref=ref) if ref is not None:
                request = self._take(lambda r: r.ref == ref)
                if request is not None:
                    self._answered(request, frame)
            case Joined(room=room):
                request = self._take(lambda r: r.kind is _Kind.JOIN and r.room == room)
                if request is not None:
                    self._on_joined(frame, request)
            case HistoryPage(room=room):
                request = self._take(lambda r: r.kind is _Kind.HISTORY and r.room == room)
                if request is not None:
                    self._answered(request, frame)
            case Left(room=room, reason=reason):
                if reason is not None:
                    if room in self._rooms:
                        self._forget(room, ClientError(reason, f"removed from {room}"))
                else:
                    request = self._take(lambda r: r.kind is _Kind.LEAVE and r.room == room)
                    if request is not None:
                        request.resolve(None)
            case Presence(room=room):
                self._on_presence(frame)
            case TypingNotice(room=room) | Receipt(room=room):
                if room in self._rooms:
                    self._emit(frame)
            case MembershipNotice(room=room, member=member, reason=reason):
                if not member and reason in REMOVED and room in self._rooms:
                    self._forget(room, ClientError(reason or "", f"removed from {room}"))
                self._emit(frame)
            case ReadState() | DmOpened():
                self._emit(frame)  # of the user's rooms, joined here or not
            case Welcome():
                self._on_welcome(link, frame)
            case Error():
                self._on_error(link, frame)
            case Ack() | Pong() | RoomList():
                pass  # answers to nothing this client asked

    def _take(self, match: Callable[[_Request], bool]) -> _Request | None:
        """The oldest request in flight that ``match``-es, taken out."""
        for index, request in enumerate(self._inflight):
            if match(request):
                del self._inflight[index]
                return request
        return None

    def _answered(self, request: _Request, answer: object) -> None:
        entry = self._rooms.get(request.room)
        if entry is not None:
            entry.refusals = 0
        request.resolve(answer)

    def _on_welcome(self, link: _Link, frame: Welcome) -> None:
        self.user, self.name = frame.user, frame.name
        if frame.guest_token is not None:
            self._guest_token = frame.guest_token
        if frame.epoch is not None:
            self.epoch = frame.epoch
        if not link.welcomed:
            link.welcomed = True
            self.connections += 1
            self._set_state(State.CONNECTED)
            for entry in list(self._rooms.values()):
                self._send_join(entry)
            for waiter in self._connect_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._connect_waiters.clear()
        self._emit(frame)

    def _on_joined(self, frame: Joined, request: _Request) -> None:
        entry = self._rooms.get(frame.room)
        if entry is None:
            return  # left while the join was on its way
        since = request.frame.get("since")
        # The server says our since was of another deployment (epoch); an older server
        # says it only by a last seq below ours. Either way the history started over.
        reset = since is not None and (frame.reset or frame.seq < since)
        if reset and not frame.reset:
            frame = msgspec.structs.replace(frame, reset=True)
        if entry.last is None or reset:
            entry.last = frame.seq
        if frame.epoch is not None:
            entry.epoch = frame.epoch
        entry.joined, entry.link, entry.paused, entry.rejoin = frame, self._link, False, False
        entry.refusals = 0
        entry.people = {p.user: p for p in frame.people or _people(frame.members)}
        self._flush(entry)  # what waited for the room goes before anyone hears of it
        for waiter in entry.waiters:
            if not waiter.done():
                waiter.set_result(frame)
        entry.waiters.clear()
        self._emit(frame)

    def _on_event(self, event: RoomEvent) -> None:
        entry = self._rooms.get(event.room)
        # Once and in order: nothing after leaving, nothing at or below what was delivered.
        if entry is None or (entry.last is not None and event.seq <= entry.last):
            return
        entry.last = event.seq
        self._emit(event)

    def _on_presence(self, frame: Presence) -> None:
        entry = self._rooms.get(frame.room)
        if entry is None:
            return
        for person in frame.left_people or _people(frame.left):
            entry.people.pop(person.user, None)
        for person in frame.joined_people or _people(frame.joined):
            entry.people[person.user] = person
        self._emit(frame)

    def _on_error(self, link: _Link, frame: Error) -> None:
        if frame.ref is None and frame.code in REFUSED:
            link.refusal = frame  # acted on when the close (1008) comes
            return
        if frame.ref is not None:
            request = self._take(lambda r: r.ref == frame.ref)
        else:
            # A refusal without a ref is for a join, history or leave: the oldest in
            # flight of its room (the server names it, and answers one connection's
            # frames one at a time, in order).
            request = self._take(
                lambda r: r.ref is None and (frame.room is None or r.room == frame.room)
            )
        if request is None:
            self._emit(frame)
            if frame.code == "unavailable":
                # A join whose backlog the store failed to read is answered by joined,
                # then by this: the server no longer has us in the room. Join again.
                self._rejoin(link, frame.room)
            return
        entry = self._rooms.get(request.room)
        if request.kind is _Kind.JOIN:
            if entry is not None:
                self._on_join_refused(entry, frame)
        elif request.kind is _Kind.LEAVE:
            request.resolve(None)  # not in the room there: left all the same
        elif entry is not None and (frame.code in RETRY_LATER or frame.code == "not_joined"):
            # Not now (or the server forgot our join): this request and the room's
            # next ones wait, and go again after a backoff.
            self._queue = sorted([request, *self._queue], key=lambda r: r.number)
            self._pause(entry, rejoin=frame.code == "not_joined")
        else:
            request.reject(ClientError(frame.code, frame.message))

    def _on_join_refused(self, entry: _Room, frame: Error) -> None:
        if frame.code in RETRY_LATER:
            logger.info("hubbub: join of %s refused for now (%s)", entry.name, frame.code)
            delay = self._backoff(entry.refusals)
            entry.refusals += 1
            link = self._link
            self._later(delay, lambda: self._join_again(entry, link))
            return
        error = ClientError(frame.code, frame.message)
        self._forget(entry.name, error, announce=entry.joined is not None)

    # -- frames out ------------------------------------------------------------------

    def _request(self, kind: _Kind, room: str, frame: dict[str, Any]) -> _Request:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        return _Request(kind, room, frame, next(self._numbers), future)

    def _ready(self, entry: _Room) -> bool:
        """The room is joined on the current connection and may take requests now."""
        return entry.link is not None and entry.link is self._link and not entry.paused

    def _submit(self, request: _Request) -> None:
        entry = self._rooms[request.room]
        if self._ready(entry):
            self._write(request)
        else:
            self._queue.append(request)  # the newest: the queue stays in order

    def _write(self, request: _Request) -> None:
        link = self._link
        assert link is not None
        self._inflight.append(request)
        link.outgoing.put_nowait(msgspec.json.encode(request.frame).decode())

    def _send_join(self, entry: _Room) -> None:
        frame: dict[str, Any] = {"type": "join", "room": entry.name}
        if entry.last is not None:
            frame["since"] = entry.last  # resume right after the last delivered ...
            if entry.epoch is not None:
                frame["epoch"] = entry.epoch  # ... of the history it belongs to
        self._write(_Request(_Kind.JOIN, entry.name, frame, next(self._numbers)))

    def _flush(self, entry: _Room) -> None:
        """Write what waited for ``entry`` to be ready, in the order it was asked."""
        waiting = [r for r in self._queue if r.room == entry.name]
        self._queue = [r for r in self._queue if r.room != entry.name]
        for request in waiting:
            if request.wanted:
                self._write(request)

    def _pause(self, entry: _Room, rejoin: bool) -> None:
        entry.rejoin = entry.rejoin or rejoin
        if entry.paused:
            return
        entry.paused = True
        delay = self._backoff(entry.refusals)
        entry.refusals += 1
        link = self._link
        self._later(delay, lambda: self._resume(entry, link))

    def _resume(self, entry: _Room, link: _Link | None) -> None:
        if link is not self._link or self._rooms.get(entry.name) is not entry:
            return  # another connection (it rejoins anyway), or the room was left
        entry.paused = False
        if entry.rejoin:
            entry.rejoin, entry.link = False, None
            self._send_join(entry)  # its joined flushes the queue
        else:
            self._flush(entry)

    def _join_again(self, entry: _Room, link: _Link | None) -> None:
        if link is self._link and self._rooms.get(entry.name) is entry:
            self._send_join(entry)

    def _rejoin(self, link: _Link, room: str | None) -> None:
        """Join ``room`` (None: every room) again if it is joined on ``link``."""
        for entry in self._rooms.values():
            if entry.link is link and room in (None, entry.name):
                entry.link = None
                self._send_join(entry)

    def _forget(self, room: str, error: ClientError, *, announce: bool = True) -> None:
        """No more of ``room``: whatever waits for it fails with ``error``; with
        ``announce``, the application hears it as a :class:`Left` with a reason."""
        entry = self._rooms.pop(room)
        for waiter in entry.waiters:
            if not waiter.done():
                waiter.set_exception(error)
        waiting = [r for r in self._queue if r.room == room]
        self._queue = [r for r in self._queue if r.room != room]
        for request in waiting:
            request.reject(error)
        if announce:
            self._emit(Left(room=room, reason=error.code))

    def _emit(self, event: Event) -> None:
        if self._state is not State.CLOSED:
            self._events.put_nowait(event)

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        """``callback`` after ``delay`` seconds, unless the connection ends first."""

        def fire() -> None:
            self._timers.discard(handle)
            callback()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def _require_room(self, room: str) -> _Room:
        self._check_open()
        entry = self._rooms.get(room)
        if entry is None:
            raise ClientError("not_joined", f"join {room} first")
        return entry


class _EventStream:
    """:meth:`Client.events`: an async iterator over the client's event buffer."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Event:
        return await self._client._next_event()


def _people(names: list[str]) -> list[Person]:
    # From a server that sends names only: the name stands for the user.
    return [Person(user=name, name=name) for name in names]
