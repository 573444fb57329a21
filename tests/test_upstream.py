"""Each undocumented upstream name in ``hubbub.upstream``, checked against the installed
version: an upgrade that removes or changes one fails here, naming it."""

from __future__ import annotations

import asyncio
import inspect

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from hubbub import upstream
from hubbub.transport.entry import HttpEntry


async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    pass


def test_uvicorn_takes_a_protocol_class_for_http_and_ws() -> None:
    config = uvicorn.Config(app, http=HttpEntry, ws=HttpEntry, log_config=None)
    config.load()
    assert config.http_protocol_class is HttpEntry, "uvicorn.Config(http=<class>)"
    assert config.ws_protocol_class is HttpEntry, "uvicorn.Config(ws=<class>)"


def test_uvicorn_builds_protocols_with_the_keywords_hubbub_takes() -> None:
    # Server.startup builds the http class, and the http protocol the ws class, with
    # these keywords; HttpToolsProtocol's own constructor names them too.
    for source, what in (
        (inspect.getsource(uvicorn.Server.startup), "uvicorn.Server.startup"),
        (inspect.getsource(HttpToolsProtocol.handle_websocket_upgrade), "handle_websocket_upgrade"),
    ):
        for keyword in upstream.PROTOCOL_KEYWORDS:
            assert f"{keyword}=" in source, f"{what} no longer passes {keyword}="
    parameters = inspect.signature(HttpToolsProtocol.__init__).parameters
    assert set(upstream.PROTOCOL_KEYWORDS) <= set(parameters), "HttpToolsProtocol.__init__"


def test_config_loaded_app_is_the_asgi_application() -> None:
    config = uvicorn.Config(app, log_config=None, proxy_headers=False)
    assert upstream.asgi_app(config) is app, "uvicorn.Config.loaded_app"


def test_server_state_tracks_connections_and_tasks_that_shutdown_waits_for() -> None:
    state = ServerState()
    protocol = asyncio.Protocol()
    upstream.track_connection(state, protocol)
    assert protocol in state.connections, "ServerState.connections"
    upstream.untrack_connection(state, protocol)
    assert not state.connections
    source = inspect.getsource(uvicorn.Server.shutdown) + inspect.getsource(
        uvicorn.Server._wait_tasks_to_complete
    )
    assert "connection.shutdown()" in source, "Server.shutdown calls each connection's shutdown()"
    assert "server_state.connections" in source, "Server waits for ServerState.connections"
    assert "server_state.tasks" in source, "Server waits for ServerState.tasks"


async def test_server_state_forgets_a_task_once_done() -> None:
    state = ServerState()

    async def nothing() -> None:
        pass

    task = asyncio.create_task(nothing())
    upstream.track_task(state, task)
    assert task in state.tasks, "ServerState.tasks"
    await task
    await asyncio.sleep(0)
    assert not state.tasks


def test_httptools_protocol_has_the_callbacks_kept_alive_http_extends() -> None:
    for name in ("on_message_begin", "on_headers_complete", "connection_made", "connection_lost"):
        assert callable(getattr(HttpToolsProtocol, name, None)), f"HttpToolsProtocol.{name}"
    assert issubclass(upstream.KeptAliveHttp, HttpToolsProtocol)


def test_websockets_apply_mask_unmasks() -> None:
    masked = bytes(b ^ k for b, k in zip(b"hello", b"abcda", strict=True))
    assert upstream.apply_mask(masked, b"abcd") == b"hello", "websockets apply_mask"
