"""Every name Hubbub uses that its upstream libraries do not document, in one place.

Everything else Hubbub imports from uvicorn, websockets, httptools and nats-py is
documented public API. What is here is not: each name is used only through this
module, and ``tests/test_upstream*.py`` checks each one against the installed version,
so an upgrade that removes or changes one fails there, loudly, with the name in the
message, instead of somewhere at run time.
"""

from __future__ import annotations

__all__ = [
    "PROTOCOL_KEYWORDS",
    "KeptAliveHttp",
    "apply_mask",
    "asgi_app",
    "hand_over_http",
    "track_connection",
    "track_task",
    "untrack_connection",
]

# --- websockets ---------------------------------------------------------------------

try:  # websockets' C helper for unmasking client frames (not in its API reference)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

# --- uvicorn ------------------------------------------------------------------------
#
# uvicorn documents how to run it (``uvicorn.Config``, ``uvicorn.Server``, the ``http``
# and ``ws`` options naming a protocol class) but not what such a class is given and
# must do. What Hubbub relies on: uvicorn builds the class with the keyword arguments
# ``config``, ``server_state`` and ``app_state``; ``config.loaded_app`` is the ASGI
# application wrapped in uvicorn's middleware (proxy headers); a protocol adds itself
# to ``server_state.connections`` while open (a graceful shutdown calls ``shutdown()``
# on each and waits until the set is empty) and its tasks to ``server_state.tasks``;
# for a plain HTTP request Hubbub hands the connection to uvicorn's httptools protocol.

import asyncio as _asyncio
from typing import Any as _Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

PROTOCOL_KEYWORDS = ("config", "server_state", "app_state")
"""The keyword arguments uvicorn builds its ``http`` and ``ws`` protocol classes with."""


def asgi_app(config: _Any) -> _Any:
    """The application uvicorn serves, after ``Config.load()`` (``Server`` calls it)."""
    if not config.loaded:
        config.load()
    return config.loaded_app


def track_connection(server_state: _Any, protocol: _asyncio.BaseProtocol) -> None:
    """Count ``protocol`` among the server's open connections (shutdown waits for them)."""
    server_state.connections.add(protocol)


def untrack_connection(server_state: _Any, protocol: _asyncio.BaseProtocol) -> None:
    """The connection of ``protocol`` is over, or another protocol carries it."""
    server_state.connections.discard(protocol)


def track_task(server_state: _Any, task: _asyncio.Task[None]) -> None:
    """Count ``task`` among the server's tasks until it is done (shutdown waits)."""
    server_state.tasks.add(task)
    task.add_done_callback(server_state.tasks.discard)


class KeptAliveHttp(_HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the head of every further
    request on the connection (uvicorn waits forever for one that stalls). It overrides
    two of httptools' parser callbacks, calling uvicorn's own."""

    def __init__(self, *args: _Any, deadline: float, **kwargs: _Any) -> None:
        super().__init__(*args, **kwargs)
        self._hubbub_deadline = deadline
        self._hubbub_timer: _asyncio.TimerHandle | None = None
        self._hubbub_transport: _asyncio.Transport | None = None

    def connection_made(self, transport: _asyncio.Transport) -> None:  # type: ignore[override]
        self._hubbub_transport = transport
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._hubbub_timer is None:
            self._hubbub_timer = _asyncio.get_running_loop().call_later(
                self._hubbub_deadline, self._hubbub_too_slow
            )

    def on_headers_complete(self) -> None:
        self._hubbub_cancel()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._hubbub_cancel()
        super().connection_lost(exc)

    def _hubbub_cancel(self) -> None:
        if self._hubbub_timer is not None:
            self._hubbub_timer.cancel()
            self._hubbub_timer = None

    def _hubbub_too_slow(self) -> None:
        self._hubbub_timer = None
        transport = self._hubbub_transport
        if transport is not None and not transport.is_closing():
            transport.abort()


def hand_over_http(
    config: _Any,
    server_state: _Any,
    app_state: dict[str, _Any],
    transport: _asyncio.Transport,
    *,
    data: bytes,
    deadline: float,
) -> None:
    """Let uvicorn's HTTP protocol carry ``transport`` from here, starting with
    ``data`` (everything read from it so far)."""
    protocol = KeptAliveHttp(
        config=config, server_state=server_state, app_state=app_state, deadline=deadline
    )
    protocol.connection_made(transport)
    transport.set_protocol(protocol)
    protocol.data_received(data)


# --- nats-py ------------------------------------------------------------------------
#
# nats-py documents connecting, publishing, subscribing, ``flush()`` and ``close()``,
# not the tasks it runs nor the queue its commands wait in. Hubbub needs three things
# from those (brokers/nats.py): to know that what it published has been written to
# the socket, to await the tasks nats-py leaves behind, and to drop a socket that
# ``close()`` cannot finish with. nats-py is an extra (``hubbub[nats]``): nothing here
# imports it at run time. Each section imports its own names (hence the noqa).

import asyncio as _nats_asyncio  # noqa: E402
import contextlib as _nats_contextlib  # noqa: E402
from typing import TYPE_CHECKING as _TYPE_CHECKING  # noqa: E402

if _TYPE_CHECKING:
    from nats.aio.client import Client as _NatsClient
    from nats.aio.subscription import Subscription as _NatsSubscription

NATS_CLIENT_TASKS = ("_reading_task", "_ping_interval_task", "_flusher_task")
"""The attributes of a nats-py ``Client`` that hold its tasks (see :func:`nats_tasks`)."""


async def nats_write_pending(nc: _NatsClient) -> None:
    """Return once every command ``nc`` has queued so far is written to its socket.

    Reads ``Client._flush_pending(force_flush=True)``, which hands a flush to nats-py's
    flusher task and waits until the flusher has written everything pending. No public
    call does that: ``flush()`` writes its PING straight to the socket, ahead of the
    commands still waiting for the flusher, so its PONG alone proves nothing about them;
    and a tiny ``pending_size`` (every command waits for the flusher) costs a write and
    a task switch per message instead of per batch. nats-py swallows a cancellation
    that arrives while this waits (see ``brokers/nats.py``'s ``_stop_if_cancelled``).
    """
    await nc._flush_pending(force_flush=True)


def nats_tasks(nc: _NatsClient) -> list[_nats_asyncio.Task[None]]:
    """The tasks nats-py runs for ``nc``: its reader, its PINGs and its flusher.

    Reads ``Client._reading_task``, ``Client._ping_interval_task`` and
    ``Client._flusher_task`` (:data:`NATS_CLIENT_TASKS`). nats-py has no public way to
    reach them, and ``close()`` cancels them without awaiting them, or, when it is stuck
    sending to a frozen server, never gets that far: the caller cancels and awaits
    them so that none outlives the connection. (nats-py's reconnection task is never
    made while ``allow_reconnect`` is False, which Hubbub always passes.)
    """
    tasks = [getattr(nc, name, None) for name in NATS_CLIENT_TASKS]
    return [task for task in tasks if isinstance(task, _nats_asyncio.Task)]


def nats_subscription_task(sub: _NatsSubscription) -> _nats_asyncio.Task[None] | None:
    """The task that hands ``sub``'s messages to its callback (None if it has none).

    Reads ``Subscription._wait_for_msgs_task``: nats-py makes one per subscription with a
    callback and cancels it on ``unsubscribe()`` or ``close()`` without awaiting it (and
    a ``close()`` stuck on a frozen server never cancels it). The only public way to go
    without it, a subscription read through ``sub.messages``, costs a task and an
    ``asyncio.wait`` per message.
    """
    task = getattr(sub, "_wait_for_msgs_task", None)
    return task if isinstance(task, _nats_asyncio.Task) else None


def nats_abort(nc: _NatsClient) -> None:
    """Drop ``nc``'s socket at once, unsent data and all (a no-op once it is closed).

    Reads ``Client._transport`` and its ``TcpTransport._io_writer`` (the asyncio
    ``StreamWriter``). nats-py has no abort: ``close()`` first waits to send what is
    pending, which against a frozen server takes forever, so the caller bounds
    ``close()`` with a timeout and then drops the socket with this.
    """
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    if isinstance(writer, _nats_asyncio.StreamWriter):
        with _nats_contextlib.suppress(Exception):
            writer.transport.abort()
