"""Hubbub's own transport over real sockets: the handshake it checks itself, an upgrade
on a kept-alive HTTP connection, and the close handshake in the middle of a fragmented
message (Autobahn 7.1.5)."""

from __future__ import annotations

import base64
import os
import socket
import struct

import pytest

from tests.rawws import OP_CLOSE, OP_TEXT, RawWebSocket, frame
from tests.servers import ServerProcess
from tests.test_upgrade_limits import exchange

TIMEOUT = 10


def upgrade_request(path: str = "/ws", **headers: str) -> bytes:
    """An upgrade request; a header given as "" is left out."""
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value)
    return f"GET {path} HTTP/1.1\r\n{lines}\r\n".encode()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"Sec_WebSocket_Version": "8"}, 426, id="old-version"),
        pytest.param({"Sec_WebSocket_Key": "not base64!"}, 400, id="bad-key"),
        pytest.param(
            {"Sec_WebSocket_Key": base64.b64encode(b"short").decode()}, 400, id="short-key"
        ),
        pytest.param({"Sec_WebSocket_Key": ""}, 400, id="no-key"),
        pytest.param({"Host": ""}, 400, id="no-host"),
    ],
)
def test_an_invalid_upgrade_is_refused_with_its_status(
    server: ServerProcess, headers: dict[str, str], status: int
) -> None:
    got, answer, body = exchange(server.port, upgrade_request(**headers))
    assert got == status
    assert answer["connection"] == "close" and body
    if status == 426:
        assert answer["sec-websocket-version"] == "13"


def test_the_accept_key_is_the_rfc_example(server: ServerProcess) -> None:
    # RFC 6455 §1.3: this key must be answered with this accept value.
    request = upgrade_request(Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk
            head += chunk
    assert head.startswith(b"HTTP/1.1 101 ")
    lines = {line.lower().partition(b":")[0]: line for line in head.split(b"\r\n")}
    assert lines[b"sec-websocket-accept"].endswith(b": s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


def test_an_upgrade_on_a_kept_alive_http_connection_works(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b'{"status":"ok"}' not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        sock.sendall(upgrade_request("/ws"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(frame(OP_TEXT, b"again"))
        reply = head.partition(b"\r\n\r\n")[2]
        expected = b"Message text was: again"
        while len(reply) < 2 + len(expected):
            chunk = sock.recv(4096)
            assert chunk
            reply += chunk
        assert reply[2:] == expected


def test_a_close_between_fragments_is_answered_with_its_code(server: ServerProcess) -> None:
    # RFC 6455 §5.4: control frames may come between the fragments of a message.
    raw = RawWebSocket(server.port, "/ws")
    raw.send(frame(OP_TEXT, b"frag", fin=False) + frame(OP_CLOSE, struct.pack("!H", 1000)))
    frames, code = raw.recv_until_close()
    raw.close()
    assert (frames, code) == ([], 1000)


def close_answer(server: ServerProcess, payload: bytes) -> tuple[bytes | None, bool]:
    """Send a close frame with ``payload`` on /ws: the payload of the server's close
    (None if none came) and whether the server then ended the TCP stream."""
    raw = RawWebSocket(server.port, "/ws")
    try:
        raw.send(frame(OP_CLOSE, payload))
        try:
            opcode, answer = raw.recv_frame()
        except EOFError:
            return None, True
        assert opcode == OP_CLOSE
        try:
            raw.recv_frame()
        except EOFError:
            return answer, True
        return answer, False
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        pytest.param(struct.pack("!H", 1000) + "au revoir ✓".encode(), None, id="echoed"),
        pytest.param(b"", b"", id="no-code"),
        pytest.param(struct.pack("!H", 4321), None, id="application-code"),
        pytest.param(struct.pack("!H", 1005), struct.pack("!H", 1002), id="reserved-code"),
        pytest.param(struct.pack("!H", 2999), struct.pack("!H", 1002), id="unassigned-code"),
        pytest.param(b"\x03", struct.pack("!H", 1002), id="one-byte"),
        pytest.param(struct.pack("!H", 1000) + b"\xc3\x28", struct.pack("!H", 1007), id="bad-utf8"),
    ],
)
def test_a_clients_close_is_echoed_or_failed_and_the_server_ends_the_stream(
    server: ServerProcess, sent: bytes, answer: bytes | None
) -> None:
    # RFC 6455 §5.5.1: the answer echoes the code; §7.1.1: the server closes TCP first.
    got, ended = close_answer(server, sent)
    assert got is not None and ended
    if answer is None:
        assert got == sent
    else:
        assert got[:2] == answer


def read_status(port: int, request: bytes) -> int:
    """Send ``request``; the status of the answer (a timeout if none comes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_an_upgrade_to_another_protocol_is_answered_as_http(server: ServerProcess) -> None:
    # What `curl --http2` sends: served as a plain request (found by fuzz/upgrade.py).
    request = b"GET /healthz HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nHost: x\r\n\r\n"
    assert read_status(server.port, request) == 200


def test_a_websocket_upgrade_named_twice_is_refused(server: ServerProcess) -> None:
    # uvicorn would read the last Upgrade header, Hubbub both: one answer, no bouncing.
    request = upgrade_request(Upgrade="websocket\r\nUpgrade: websocket")
    assert read_status(server.port, request) == 400
