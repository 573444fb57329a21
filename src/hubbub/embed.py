"""``Hubbub(settings)``: the hub as a library, for an application of one's own.

::

    hubbub = Hubbub(Settings())
    app = FastAPI()
    app.include_router(hubbub.router, prefix="/chat")   # /chat/v1/ws, /chat/api/v1, /chat/

One object holds what :func:`hubbub.app.create_app` used to build inline: the hub (its
broker, store and metrics) and the authenticator. Its router carries its lifespan, which
FastAPI runs with the application's own when it includes the router; ``async with
hubbub:`` (or ``lifespan=hubbub.lifespan``) runs it explicitly, for an application that
wants Hubbub running in its own lifespan. Runs nest: the first to enter starts the hub,
the last to leave stops it. A Hubbub runs once: after it stopped it cannot start again.

Hub-using routes of a Hubbub nobody started answer 503 (a WebSocket is closed with
1011) with a message that says how to start it, and ``/readyz`` says not ready: that is
what mounting :func:`create_app`'s application (``app.mount``) gets, since Starlette
never runs a mounted application's lifespan. See ``docs/embedding.md``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from types import TracebackType
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, WebSocketException
from fastapi.params import Depends as DependsParam
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hubbub import protocol
from hubbub.auth import Authenticator, patterns
from hubbub.brokers import broker_from_url
from hubbub.config import Settings
from hubbub.errors import CloseCode, ErrorCode, HubbubError, ProtocolError
from hubbub.hub import Hub
from hubbub.metrics import Metrics
from hubbub.protocol import Message
from hubbub.routes.api import ApiKeyGate, api_router
from hubbub.routes.health import health_router
from hubbub.routes.rooms import rooms_router
from hubbub.routes.web import web_router
from hubbub.stores import Retention, store_from_url
from hubbub.stores.timed import TimedStore

logger = logging.getLogger("hubbub.embed")

__all__ = ["Hubbub", "NotStarted", "StartedGate"]

MAX_SENDER_CHARS = 64  # the HTTP API's bound on `from`
MAX_HISTORY = 1000  # the HTTP API's bound on one page


class NotStarted(HubbubError):
    """Hubbub was asked for something that needs its hub before its lifespan started it
    (or after it stopped)."""

    code = ErrorCode.UNAVAILABLE
    close_code = CloseCode.INTERNAL_ERROR
    close_reason = "hubbub is not started"

    def __init__(self) -> None:
        super().__init__(
            "Hubbub is not started: nothing ran its lifespan. Starlette never runs the "
            "lifespan of a mounted application (app.mount): include Hubbub(settings).router "
            "instead (app.include_router(hubbub.router, prefix=...)), or run Hubbub's "
            "lifespan in the application's (lifespan=hubbub.lifespan, or async with "
            "hubbub). See docs/embedding.md."
        )


class State(enum.Enum):
    """Where a :class:`Hubbub` is in its one life; only ``__aenter__``/``__aexit__``
    move it."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"  # stopped, or failed to start: it cannot start again


class Hubbub:
    """Hubbub's hub, its routes and its lifespan, for an application to include.

    Everything is built here from ``settings`` (default: ``Settings()``, i.e. the
    ``HUBBUB_*`` environment, which is what ``hubbub serve --app`` sets from its flags);
    nothing runs until the lifespan starts it.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings = settings or Settings()
        broker = broker_from_url(
            settings.broker_url,
            buffer_messages=settings.broker_buffer_messages,
            buffer_bytes=settings.broker_buffer_bytes,
            backoff_max=settings.broker_backoff_max,
            namespace=settings.namespace,
        )
        store = store_from_url(
            settings.store_url,
            Retention(
                max_messages=settings.history_max_messages,
                max_age_seconds=settings.history_max_age,
            ),
        )
        self.metrics = Metrics()
        self.hub = Hub(settings, broker, TimedStore(store, self.metrics), self.metrics)
        # Guest tokens are signed with the deployment's secret, known once the store started.
        self.authenticator = Authenticator(
            settings, guest_secret=lambda: self.hub.store.deployment.secret
        )
        self._state = State.NEW
        self._runs = 0  # lifespans entered and not left yet
        self._lock = asyncio.Lock()
        self._told_not_started = False

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the hub is started (some lifespan entered, not all of them left)."""
        return self._state is State.RUNNING

    async def __aenter__(self) -> Hubbub:
        """Start the hub, or count one more run of an already running one."""
        async with self._lock:
            if self._state is State.STOPPED:
                raise RuntimeError("this Hubbub has stopped; a Hubbub runs once: make a new one")
            if self._state is State.NEW:
                try:
                    await self.hub.start()
                except BaseException:
                    self._state = State.STOPPED
                    raise
                self._state = State.RUNNING
            self._runs += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """End one run; the last one stops the hub (connections are closed before)."""
        async with self._lock:
            if self._state is not State.RUNNING:
                raise RuntimeError("this Hubbub is not running: nothing to stop")
            self._runs -= 1
            if self._runs:
                return
            self._state = State.STOPPED
            try:
                await self.hub.stop()
            finally:
                self.metrics.process_exited()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Hubbub's lifespan, for ``FastAPI(lifespan=hubbub.lifespan)`` or to enter
        inside an application's own; the same as ``async with hubbub``."""
        async with self:
            yield

    # -- routes ------------------------------------------------------------------------

    @cached_property
    def router(self) -> APIRouter:
        """Every route but the tutorial's, to include under any prefix:
        ``/v1/ws``, the HTTP API ``/api/v1/...``, the chat page ``/`` and ``/static/...``,
        ``/healthz``, ``/readyz``, ``/metrics``. It carries :meth:`lifespan`, which FastAPI
        runs with the application's once the router is included.

        The HTTP API's key is checked by a dependency here (an included router has no
        middleware of its own): before any of the API's code runs, but after FastAPI has
        read the body (at most ``--max-body-bytes``); the whole server checks it before.
        """
        router = APIRouter(lifespan=self.lifespan)
        started = Depends(self._require_started)
        self._add_routes(
            router,
            hub_routes=[started],
            api_routes=[Depends(self._require_api_key), started],
            tutorial=False,
        )
        return router

    def _add_routes(
        self,
        router: APIRouter,
        *,
        hub_routes: list[DependsParam],
        api_routes: list[DependsParam],
        tutorial: bool,
    ) -> None:
        """Include every route of Hubbub's (the tutorial's pages with ``tutorial``) in
        ``router``: ``/v1/ws`` with the ``hub_routes`` dependencies, the HTTP API with
        ``api_routes``. :func:`hubbub.app.create_app` and :attr:`router` both use it."""
        router.include_router(rooms_router(self.hub, self.authenticator), dependencies=hub_routes)
        router.include_router(api_router(self.hub), dependencies=api_routes)
        cors = patterns(self.settings.cors_origins)
        router.include_router(web_router(cors, tutorial=tutorial))
        router.include_router(health_router(self.hub, self.metrics, lambda: self.running))

    def not_started(self) -> NotStarted:
        """The error for a use before the start (logged once per Hubbub, at ERROR: a
        deployment that never started its hub has nothing else to tell it so)."""
        error = NotStarted()
        if not self._told_not_started:
            self._told_not_started = True
            logger.error("%s", error.message)
        return error

    async def _require_started(self, connection: HTTPConnection) -> None:
        if self.running:
            return
        error = self.not_started()
        if connection.scope["type"] == "websocket":
            raise WebSocketException(CloseCode.INTERNAL_ERROR, error.close_reason)
        raise HTTPException(503, error.message)

    @cached_property
    def _api_key_gate(self) -> ApiKeyGate:
        return ApiKeyGate(_unreachable, self.settings.api_key, self.settings.max_body_bytes)

    async def _require_api_key(self, request: Request) -> None:
        refusal = self._api_key_gate.unauthorized(request.headers.get("authorization"))
        if refusal is not None:
            detail = json.loads(bytes(refusal.body))["detail"]
            challenge = refusal.headers.get("www-authenticate")
            headers = {"WWW-Authenticate": challenge} if challenge else None
            raise HTTPException(refusal.status_code, detail, headers=headers)

    # -- the Python API ----------------------------------------------------------------

    async def publish(
        self,
        room: str,
        text: str,
        *,
        sender: str = "server",
        user: str | None = None,
        reply_to: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Message:
        """Post ``text`` to ``room`` (stored: it gets the room's next ``seq``); every
        member on every process receives it. ``sender`` is shown as ``from``; ``user``:
        the author's id, for a message posted on a user's behalf (who may then edit and
        delete it); ``reply_to``: the ``seq`` it answers; ``data``: a JSON object for
        applications. The rules of ``send`` on ``/v1/ws`` apply: a bad room name, text
        or ``data`` raises :class:`~hubbub.errors.ProtocolError`."""
        self._check_running()
        _check_room(room)
        if not 1 <= len(sender) <= MAX_SENDER_CHARS:
            raise ProtocolError(ErrorCode.BAD_FRAME, "sender: 1 to 64 characters")
        protocol.check_text(text, self.settings.max_text_chars)
        protocol.check_data(data, self.settings.max_data_bytes)
        return await self.hub.send_to_room(
            room, sender, text, user=user, reply_to=reply_to, data=data
        )

    def send_to_user(self, user: str, frame: protocol.ServerFrame) -> None:
        """Send ``frame`` to every connection of ``user`` on every process, now (not
        stored: a connection that is not open misses it). ``frame`` is one of the server
        frames of ``docs/protocol.md``, e.g. ``protocol.DmOpened`` to show a user a
        direct-message room on all its devices."""
        self._check_running()
        self.hub.push_to_user(user, frame)

    async def disconnect_user(self, user: str) -> int:
        """Close every connection of ``user`` on every process (1008, "disconnected by
        the server"); returns how many were closed on this one."""
        self._check_running()
        return await self.hub.disconnect_user(user)

    def presence(self, room: str) -> dict[str, str]:
        """Who is in ``room`` now, on every process: user id → display name."""
        self._check_running()
        _check_room(room)
        return self.hub.presence.members(room)

    async def history(
        self, room: str, *, before: int | None = None, limit: int = 50
    ) -> list[Message]:
        """Up to ``limit`` (1 to 1000) messages of ``room`` with ``seq < before`` (the
        newest without it), ascending, each in its current state. Like every page of
        history, also bounded in bytes (a quarter of ``--outbox-max-bytes``… see
        ``docs/protocol.md``): a shorter page is not the start of the room; page on
        with ``before`` set to the first ``seq`` received."""
        self._check_running()
        _check_room(room)
        if not 1 <= limit <= MAX_HISTORY:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"limit: 1 to {MAX_HISTORY}")
        if before is not None and not 1 <= before <= protocol.MAX_SEQ:
            raise ProtocolError(ErrorCode.BAD_FRAME, "before: a seq")
        return await self.hub.history(room, before, limit, self.settings.outbox_max_bytes)

    def create_token(self, user: str, name: str, *, rooms: str = "*", ttl: float = 3600) -> str:
        """A token for ``/v1/ws`` (``?token=``, a ``hello``, or the session cookie) that
        makes its holder ``user``, shown as ``name``, allowed in the rooms that ``rooms``
        (patterns, comma-separated) match, for ``ttl`` seconds: what an application's own
        login hands out. Needs an HS256 ``--jwt-secret``
        (:class:`~hubbub.errors.ConfigurationError` without)."""
        return self.authenticator.create(user, name, rooms, ttl)

    def _check_running(self) -> None:
        if not self.running:
            raise self.not_started()


class StartedGate:
    """Pure ASGI middleware of the whole server (:func:`hubbub.app.create_app`): while
    its Hubbub is not started, every request is answered 503 and every WebSocket closed
    with 1011, saying why, instead of failing somewhere inside (mounted with
    ``app.mount``, the application's lifespan never runs)."""

    def __init__(self, app: ASGIApp, hubbub: Hubbub) -> None:
        self.app = app
        self.hubbub = hubbub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hubbub.running or scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        error = self.hubbub.not_started()
        if scope["type"] == "websocket":
            reason = error.close_reason
            await send({"type": "websocket.close", "code": error.close_code, "reason": reason})
            return
        await JSONResponse({"detail": error.message}, 503)(scope, receive, send)


async def _unreachable(scope: Scope, receive: Receive, send: Send) -> None:
    # The application behind the ApiKeyGate whose checks the router's dependency uses.
    raise AssertionError("ApiKeyGate's checks only")


def _check_room(room: str) -> None:
    if re.match(protocol.ROOM_PATTERN, room) is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"not a room name: {room!r}")
