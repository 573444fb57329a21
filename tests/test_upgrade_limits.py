"""Upgrade requests the WebSocket handshake parser refuses: each gets its whole HTTP
answer and then the end of the stream, never a socket left open; a browser's big cookie
jar is not refused."""

from __future__ import annotations

import base64
import os
import socket
import sys
from collections.abc import Callable

import pytest
from websockets.sync.client import connect

from tests.servers import ServerProcess

TIMEOUT = 10
LINE_LIMIT = 64 * 1024  # the longest request line or header line of an upgrade (docs)
HEADER_LIMIT = 128  # the most headers an upgrade may have (websockets' default)
BIG_COOKIE = "jar=" + "c" * 9000  # bigger than websockets' default line limit (8 KiB)


def upgrade(path: str = "/ws", extra: str = "", *, body: bytes = b"") -> bytes:
    """A WebSocket upgrade request with ``extra`` header lines."""
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    return head.encode() + body


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` and read until the server ends the stream; a server that leaves
    the socket open fails this with a timeout. The status, headers and body read."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received = read_to_end(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    return int(status_line.split(" ", 2)[1]), headers, body


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the server ends the stream (a timeout if it never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def assert_serving(server: ServerProcess) -> None:
    """A fresh client still gets its echo."""
    with connect(server.ws("/ws"), open_timeout=TIMEOUT) as ws:
        ws.send("still there?")
        assert ws.recv(TIMEOUT) == "Message text was: still there?"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(upgrade("/ws?q=" + "x" * LINE_LIMIT), 414, id="request-line-too-long"),
        pytest.param(upgrade(extra=f"Cookie: a={'x' * LINE_LIMIT}\r\n"), 431, id="header-too-long"),
        pytest.param(
            # 128 more on top of the handshake's own five
            upgrade(extra="".join(f"X-Filler-{i}: v\r\n" for i in range(HEADER_LIMIT))),
            431,
            id="too-many-headers",
        ),
        # httptools reads these as upgrades; websockets' parser refuses them without a word.
        pytest.param(upgrade(extra="Content-Length: 5\r\n", body=b"hello"), 400, id="body"),
        pytest.param(
            upgrade(extra="Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"),
            400,
            id="transfer-encoding",
        ),
    ],
)
def test_a_refused_upgrade_gets_its_whole_answer_then_the_end_of_the_stream(
    server: ServerProcess, request_bytes: bytes, status: int
) -> None:
    got, headers, body = exchange(server.port, request_bytes)
    assert got == status
    assert headers["connection"] == "close"
    assert len(body) == int(headers["content-length"]) > 0  # the whole answer came
    server.wait_for_log(rf"refusing the request from 127\.0\.0\.1:\d+ with {status}")
    assert_serving(server)


FILE_LIMIT = 200
# `hubbub serve` with at most FILE_LIMIT open files (the setting of the report).
LIMITED_SERVE = (
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FILE_LIMIT}, {FILE_LIMIT})); "
    "sys.argv[0] = 'hubbub'; runpy.run_module('hubbub', run_name='__main__')"
)


def test_refused_upgrades_do_not_lock_others_out(
    start_server: Callable[..., ServerProcess],
) -> None:
    # More refused upgrades than the server may have files, each kept open on our side:
    # the server must close its end of each, or the next clients find no file left. One
    # at a time, so that a server which keeps up is never past its limit.
    server = start_server(command=[sys.executable, "-c", LIMITED_SERVE, "serve"])
    socks: list[socket.socket] = []
    try:
        for _ in range(FILE_LIMIT + 50):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            socks.append(sock)
            sock.sendall(upgrade(extra=f"Cookie: a={'x' * LINE_LIMIT}\r\n"))
            assert read_to_end(sock).startswith(b"HTTP/1.1 431 ")
        assert_serving(server)
    finally:
        for sock in socks:
            sock.close()


def test_a_big_cookie_jar_opens_a_websocket_as_it_loads_a_page(server: ServerProcess) -> None:
    # A browser sends the same Cookie header with the page and with its WebSocket.
    cookie = f"Cookie: {BIG_COOKIE}\r\n"
    page = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{cookie}\r\n"
    assert exchange(server.port, page.encode())[0] == 200
    with connect(
        server.ws("/ws"), open_timeout=TIMEOUT, additional_headers={"Cookie": BIG_COOKIE}
    ) as ws:
        ws.send("hello")
        assert ws.recv(TIMEOUT) == "Message text was: hello"


def test_lines_up_to_the_limit_are_accepted(server: ServerProcess) -> None:
    # The request line and a header line of exactly LINE_LIMIT bytes with their CRLF.
    filler = LINE_LIMIT - len("GET /ws?q= HTTP/1.1\r\n")
    assert status_of(server.port, upgrade("/ws?q=" + "x" * filler)) == 101
    header = f"Cookie: a={'x' * (LINE_LIMIT - len('Cookie: a=') - 2)}\r\n"
    assert status_of(server.port, upgrade(extra=header)) == 101


def status_of(port: int, request: bytes) -> int:
    """Send ``request`` and read the answer's head only (a 101 keeps the socket open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {received!r}"
            received += chunk
    return int(received.split(b" ", 2)[1])


def test_a_second_request_that_stalls_on_a_kept_alive_connection_is_dropped(
    start_server: Callable[..., ServerProcess],
) -> None:
    # The deadline used to be armed for a connection's first request only.
    server = start_server("--handshake-timeout", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b'{"status":"ok"}' not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        assert read_to_end(sock) == b""  # dropped by the server, not by this timeout
