"""Hubbub behind nginx and Caddy from Debian, each started by the test with the config
under ``deploy/`` (the one docs/operations.md shows): WebSocket upgrades through it, the
client's address as the proxy saw it, the public origin and the Origin allow-list, and
a proxy read timeout shorter than the idle time (Hubbub's pings keep it open)."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.proxies import CADDY, NGINX, Caddy, Certificate, Nginx, require
from tests.servers import ServerProcess

TIMEOUT = 30
ROOT = Path(__file__).resolve().parents[2]
# The client's own address: not the proxy's (127.0.0.1, which Hubbub trusts), so that
# what Hubbub logs can only have come from X-Forwarded-For.
CLIENT = "127.0.0.5"
SECRET = "s" * 40


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def nginx(certificate: Certificate) -> Iterator[Nginx]:
    require(NGINX)
    proxy = Nginx(certificate)
    yield proxy
    proxy.stop()


@pytest.fixture
def caddy(certificate: Certificate) -> Iterator[Caddy]:
    require(CADDY)
    proxy = Caddy(certificate)
    yield proxy
    proxy.stop()


def dial(
    url: str, certificate: Certificate, **kwargs: object
) -> connect:  # the awaitable and async context manager websockets returns
    """A WebSocket through the proxy from :data:`CLIENT`, trusting the test's certificate."""
    return connect(
        url,
        ssl=certificate.client_context(),
        local_addr=(CLIENT, 0),
        open_timeout=TIMEOUT,
        **kwargs,  # type: ignore[arg-type]
    )


async def recv(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    return message


def https_get(
    proxy: Nginx | Caddy, path: str, certificate: Certificate, source: str = CLIENT
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(
        "127.0.0.1",
        proxy.https_port,
        timeout=TIMEOUT,
        context=certificate.client_context(),
        source_address=(source, 0),
    )
    try:
        # A client's own X-Forwarded-For is kept by the proxy, with the address it saw
        # appended: Hubbub takes the last address that is not a trusted proxy's.
        conn.request("GET", path, headers={"X-Forwarded-For": "203.0.113.9"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def token(user: str) -> str:
    claims = {"sub": user, "name": user.title(), "rooms": ["*"], "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def cookie_upgrade(proxy: Nginx | Caddy, certificate: Certificate, origin: str) -> int:
    """Open ``/v1/ws`` through the proxy with the session cookie from a page at
    ``origin``: 101 (then the welcome) or the refusal's status."""
    cookie = {"Cookie": f"hubbub_session={token('carol')}"}
    try:
        async with dial(
            proxy.ws("/v1/ws"), certificate, additional_headers=cookie, origin=origin
        ) as ws:
            assert '"welcome"' in await recv(ws)
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


# -- nginx -------------------------------------------------------------------------------


async def test_websockets_through_nginx_log_the_clients_address(
    start_server: Callable[..., ServerProcess], nginx: Nginx, certificate: Certificate
) -> None:
    server = start_server("--forwarded-allow-ips", "127.0.0.1")
    nginx.start_for(server.port)
    async with dial(
        nginx.ws("/ws/7"), certificate, additional_headers={"X-Forwarded-For": "203.0.113.9"}
    ) as ws:
        await ws.send("hello")
        assert {await recv(ws), await recv(ws)} == {"You wrote: hello", "Client #7 says: hello"}
    async with dial(nginx.ws("/v1/ws?name=pat"), certificate) as ws:
        welcome = json.loads(await recv(ws))
        assert welcome["type"] == "welcome"
    # What nginx saw is what Hubbub logs: the client's address, not nginx's own.
    server.wait_for_log(rf'^INFO: +{re.escape(CLIENT)}:0 - "WebSocket /ws/7" accepted', TIMEOUT)
    server.wait_for_log(rf'{re.escape(CLIENT)}:0 - "WebSocket /v1/ws\?name=pat" accepted')
    assert f'{CLIENT} "GET /ws/7 HTTP/1.1" 101' in nginx.access_log
    assert f'{CLIENT} "GET /v1/ws?name=pat HTTP/1.1" 101' in nginx.access_log
    assert "203.0.113.9" not in server.log  # the client's own header counts for nothing


async def test_plain_http_through_nginx_has_the_clients_address_and_https(
    start_server: Callable[..., ServerProcess], nginx: Nginx, certificate: Certificate
) -> None:
    server = start_server(
        "--forwarded-allow-ips", "127.0.0.1",
        "--app", "tests.whoami_app:app", "--app-dir", str(ROOT),
    )  # fmt: skip
    nginx.start_for(server.port)
    status, body = https_get(nginx, "/whoami", certificate)
    assert status == 200 and json.loads(body) == {"client": CLIENT, "scheme": "https"}
    async with dial(nginx.ws("/whoami"), certificate) as ws:
        assert json.loads(await recv(ws)) == {"client": CLIENT, "scheme": "wss"}
    status, body = https_get(nginx, "/healthz", certificate)
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert https_get(nginx, "/metrics", certificate)[0] == 403  # for the scraper only
    status, body = https_get(nginx, "/metrics", certificate, source="127.0.0.1")
    assert status == 200 and b"hubbub_connections_open" in body
    # Port 80 only redirects.
    conn = http.client.HTTPConnection("127.0.0.1", nginx.http_port, timeout=TIMEOUT)
    conn.request("GET", "/v1/ws")
    response = conn.getresponse()
    assert response.status == 301
    assert response.headers["Location"] == "https://127.0.0.1/v1/ws"
    conn.close()


async def test_the_public_origin_may_use_the_session_cookie_through_nginx(
    start_server: Callable[..., ServerProcess], nginx: Nginx, certificate: Certificate
) -> None:
    # Hubbub sees https (X-Forwarded-Proto) and the Host the browser asked for ($http_host),
    # so a page of the public origin is its own origin: no --allowed-origins needed.
    server = start_server("--jwt-secret", SECRET, "--forwarded-allow-ips", "127.0.0.1")
    nginx.start_for(server.port)
    assert await cookie_upgrade(nginx, certificate, nginx.origin) == 101
    assert await cookie_upgrade(nginx, certificate, "https://evil.example") == 403
    # The same page over http is another origin.
    assert await cookie_upgrade(nginx, certificate, f"http://127.0.0.1:{nginx.https_port}") == 403


async def test_without_trusting_nginx_the_public_origin_must_be_allowed(
    start_server: Callable[..., ServerProcess], nginx: Nginx, certificate: Certificate
) -> None:
    untrusting = start_server("--jwt-secret", SECRET)  # it takes the request for ws://
    nginx.start_for(untrusting.port)
    assert await cookie_upgrade(nginx, certificate, nginx.origin) == 403
    nginx.stop()

    other = Nginx(certificate)
    try:
        allowing = start_server("--jwt-secret", SECRET, "--allowed-origins", other.origin)
        other.start_for(allowing.port)
        assert await cookie_upgrade(other, certificate, other.origin) == 101
        assert await cookie_upgrade(other, certificate, "https://evil.example") == 403
    finally:
        other.stop()


READ_TIMEOUT = 3.0  # nginx's proxy_read_timeout in these two tests, seconds


async def test_pings_keep_an_idle_websocket_open_past_nginxs_read_timeout(
    start_server: Callable[..., ServerProcess], nginx: Nginx, certificate: Certificate
) -> None:
    server = start_server("--ping-interval", "1", "--ping-timeout", "20")
    nginx.start_for(server.port, read_timeout=f"{READ_TIMEOUT:g}s")
    # ping_interval=None: the client sends nothing by itself (it answers pings).
    async with dial(nginx.ws("/ws"), certificate, ping_interval=None) as ws:
        # Idle for three of nginx's read timeouts: waiting is the point of this test.
        await asyncio.sleep(3 * READ_TIMEOUT)
        await ws.send("still here")
        assert await recv(ws) == "Message text was: still here"
    assert "upstream timed out" not in nginx.error_log


async def test_without_pings_nginx_closes_an_idle_websocket(
    start_server: Callable[..., ServerProcess], nginx: Nginx, certificate: Certificate
) -> None:
    # The control: the same setup with pings further apart than nginx's timeout.
    server = start_server("--ping-interval", "600")
    nginx.start_for(server.port, read_timeout=f"{READ_TIMEOUT:g}s")
    async with dial(nginx.ws("/ws"), certificate, ping_interval=None) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert "upstream timed out" in nginx.error_log
    server.wait_for_log(r'"WebSocket /ws" accepted')


# -- Caddy -------------------------------------------------------------------------------


async def test_websockets_and_the_public_origin_through_caddy(
    start_server: Callable[..., ServerProcess], caddy: Caddy, certificate: Certificate
) -> None:
    server = start_server("--jwt-secret", SECRET, "--forwarded-allow-ips", "127.0.0.1")
    caddy.start_for(server.port)
    async with dial(caddy.ws("/ws/7"), certificate) as ws:
        await ws.send("hello")
        assert {await recv(ws), await recv(ws)} == {"You wrote: hello", "Client #7 says: hello"}
    server.wait_for_log(rf'{re.escape(CLIENT)}:0 - "WebSocket /ws/7" accepted', TIMEOUT)
    assert await cookie_upgrade(caddy, certificate, caddy.origin) == 101
    assert await cookie_upgrade(caddy, certificate, "https://evil.example") == 403


async def test_plain_http_through_caddy_has_the_clients_address_and_https(
    start_server: Callable[..., ServerProcess], caddy: Caddy, certificate: Certificate
) -> None:
    server = start_server(
        "--forwarded-allow-ips", "127.0.0.1",
        "--app", "tests.whoami_app:app", "--app-dir", str(ROOT),
    )  # fmt: skip
    caddy.start_for(server.port)
    status, body = https_get(caddy, "/whoami", certificate)
    assert status == 200 and json.loads(body) == {"client": CLIENT, "scheme": "https"}
