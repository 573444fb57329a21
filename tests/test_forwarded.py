"""``--forwarded-allow-ips``: the client's address and scheme from ``X-Forwarded-For`` and
``X-Forwarded-Proto``, believed only from the proxies named, on plain HTTP and on Hubbub's
own WebSocket transport; against real servers (nginx in front: tests/integration/
test_reverse_proxy.py)."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from websockets.asyncio.client import connect

from tests.servers import ServerProcess

TIMEOUT = 30
ROOT = Path(__file__).resolve().parents[1]
FORGED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
# Linux answers on all of 127.0.0.0/8: a client bound to another loopback address is a
# client from an address that is not the trusted proxy's.
OTHER = "127.0.0.9"


def serve_whoami(start_server: Callable[..., ServerProcess], *args: str) -> ServerProcess:
    return start_server("--app", "tests.whoami_app:app", "--app-dir", str(ROOT), *args)


def get_whoami(server: ServerProcess, source: str = "127.0.0.1") -> dict[str, Any]:
    """``GET /whoami`` from ``source``, with forged ``X-Forwarded-*`` headers."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=TIMEOUT, source_address=(source, 0)
    )
    try:
        conn.request("GET", "/whoami", headers=FORGED)
        response = conn.getresponse()
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
        return answer
    finally:
        conn.close()


async def ws_whoami(server: ServerProcess, source: str = "127.0.0.1") -> dict[str, Any]:
    """The application's view of a WebSocket from ``source`` with forged headers."""
    async with connect(
        server.ws("/whoami"), additional_headers=FORGED, local_addr=(source, 0)
    ) as ws:
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        return answer


async def test_by_default_no_forwarded_header_is_believed(
    start_server: Callable[..., ServerProcess],
) -> None:
    # uvicorn alone would believe any process on the machine (it trusts 127.0.0.1).
    server = serve_whoami(start_server)
    assert get_whoami(server) == {"client": "127.0.0.1", "scheme": "http"}
    assert await ws_whoami(server) == {"client": "127.0.0.1", "scheme": "ws"}
    async with connect(server.ws("/v1/ws?name=pat"), additional_headers=FORGED) as ws:
        assert '"welcome"' in str(await asyncio.wait_for(ws.recv(), TIMEOUT))
    server.wait_for_log(r'127\.0\.0\.1:\d+ - "WebSocket /v1/ws\?name=pat" accepted')
    assert "203.0.113.9" not in server.log


async def test_a_trusted_proxy_is_believed_on_http_and_websockets(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = serve_whoami(start_server, "--forwarded-allow-ips", "127.0.0.1")
    assert get_whoami(server) == {"client": "203.0.113.9", "scheme": "https"}
    assert await ws_whoami(server) == {"client": "203.0.113.9", "scheme": "wss"}
    # Hubbub's own log lines of the connection say what the application saw.
    async with connect(server.ws("/v1/ws?name=pat"), additional_headers=FORGED) as ws:
        assert '"welcome"' in str(await asyncio.wait_for(ws.recv(), TIMEOUT))
    server.wait_for_log(r'203\.0\.113\.9:0 - "WebSocket /v1/ws\?name=pat" accepted')


async def test_an_address_not_named_is_not_believed(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = serve_whoami(start_server, "--forwarded-allow-ips", "127.0.0.1")
    assert get_whoami(server, OTHER) == {"client": OTHER, "scheme": "http"}
    assert await ws_whoami(server, OTHER) == {"client": OTHER, "scheme": "ws"}
    async with connect(
        server.ws("/v1/ws?name=pat"), additional_headers=FORGED, local_addr=(OTHER, 0)
    ) as ws:
        assert '"welcome"' in str(await asyncio.wait_for(ws.recv(), TIMEOUT))
    server.wait_for_log(rf'{OTHER}:\d+ - "WebSocket /v1/ws\?name=pat" accepted')


async def test_networks_are_trusted_whole(start_server: Callable[..., ServerProcess]) -> None:
    server = serve_whoami(start_server, "--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.0/24")
    assert get_whoami(server, OTHER)["client"] == "203.0.113.9"


async def test_uvicorns_middleware_rewrites_the_scope_hubbub_logs_from() -> None:
    """The seam: HttpEntry hands its scope to ``config.loaded_app`` (uvicorn's
    ProxyHeadersMiddleware around the application) and the session's log lines read the
    same dict. If uvicorn ever copied the scope instead, the logs would name the proxy:
    this fails first."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    middleware = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")  # type: ignore[arg-type]
    scope: dict[str, Any] = {
        "type": "websocket",
        "scheme": "ws",
        "client": ("127.0.0.1", 40000),
        "headers": [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")],
    }
    await middleware(scope, None, None)  # type: ignore[arg-type]
    assert seen == [scope] and seen[0] is scope
    assert scope["client"] == ("203.0.113.9", 0) and scope["scheme"] == "wss"
