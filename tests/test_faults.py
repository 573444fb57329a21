"""Misbehaving peers over raw sockets: each gets its defined answer, nobody else notices."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections.abc import Callable

from websockets.sync.client import connect

from tests.rawws import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWebSocket, frame
from tests.servers import ServerProcess

TIMEOUT = 10


def assert_serving(server: ServerProcess) -> None:
    """A fresh client still gets its echo."""
    with connect(server.ws("/ws"), open_timeout=TIMEOUT) as ws:
        ws.send("still there?")
        assert ws.recv(TIMEOUT) == "Message text was: still there?"


def test_invalid_utf8_closes_with_1007_without_a_traceback(server: ServerProcess) -> None:
    raw = RawWebSocket(server.port, "/ws")
    raw.send(frame(OP_TEXT, b"\xff\xfe not utf-8"))
    frames, code = raw.recv_until_close()
    raw.close()
    assert (frames, code) == ([], 1007)
    server.wait_for_log("text frame is not valid UTF-8")
    assert_serving(server)


def test_invalid_utf8_split_across_fragments_closes_with_1007(server: ServerProcess) -> None:
    raw = RawWebSocket(server.port, "/ws/3")
    raw.send(frame(OP_TEXT, b"caf\xc3", fin=False) + frame(0x0, b"\x28", fin=True))
    _, code = raw.recv_until_close()
    raw.close()
    assert code == 1007
    assert_serving(server)


def test_fragmented_text_is_reassembled(server: ServerProcess) -> None:
    raw = RawWebSocket(server.port, "/ws")
    raw.send(frame(OP_TEXT, "caf\xc3".encode("latin-1"), fin=False) + frame(0x0, b"\xa9"))
    assert raw.recv_frame() == (OP_TEXT, "Message text was: café".encode())
    raw.close()


def test_tcp_reset_mid_frame_leaves_chat_and_logs_no_traceback(server: ServerProcess) -> None:
    with connect(server.ws("/ws/1"), open_timeout=TIMEOUT) as survivor:
        raw = RawWebSocket(server.port, "/ws/2")
        raw.send(frame(OP_TEXT, b"x" * 1000)[:300])  # a frame cut off in the middle
        # RST instead of FIN: SO_LINGER with a zero timeout.
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        assert survivor.recv(TIMEOUT) == "Client #2 left the chat"
    assert_serving(server)


def test_connection_that_never_completes_its_handshake_is_dropped(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--handshake-timeout", "0.5")
    for partial in (b"", b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(partial)
            assert_serving(server)  # others are served meanwhile
            with contextlib.suppress(ConnectionResetError):  # an abort is a reset
                assert sock.recv(1024) == b""  # the server hung up on us
    server.wait_for_log("sent no complete request within 0.5s")


def test_garbage_instead_of_a_handshake_gets_400(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    assert_serving(server)


def test_unmasked_client_frame_is_a_protocol_error(server: ServerProcess) -> None:
    raw = RawWebSocket(server.port, "/ws")
    raw.send(b"\x81\x02hi")  # clients must mask (RFC 6455 §5.1)
    _, code = raw.recv_until_close()
    raw.close()
    assert code == 1002
    assert_serving(server)


def test_peer_that_ignores_pings_is_dropped_and_announced(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--ping-interval", "0.2", "--ping-timeout", "0.3")
    with connect(server.ws("/ws/1"), open_timeout=TIMEOUT) as survivor:
        mute = RawWebSocket(server.port, "/ws/2")
        frames, code = mute.recv_until_close()  # reads everything, answers nothing
        mute.close()
        assert any(opcode == OP_PING for opcode, _ in frames)
        assert code == 1011
        # The websockets client answers pings, so it stays; it learns that #2 left.
        assert survivor.recv(TIMEOUT) == "Client #2 left the chat"
    server.wait_for_log("no pong within")


def test_binary_on_raw_socket_gets_1003_close_frame(server: ServerProcess) -> None:
    raw = RawWebSocket(server.port, "/ws")
    raw.send(frame(OP_BINARY, b"\x00"))
    frames, code = raw.recv_until_close()
    raw.close()
    assert frames == [] and code == 1003


def test_a_burst_in_one_write_is_answered_in_full_and_in_order(server: ServerProcess) -> None:
    # More messages in one TCP write than the server handles per turn of its loop.
    listener = RawWebSocket(server.port, "/ws/2")
    flooder = RawWebSocket(server.port, "/ws/1")
    count = 1000
    flooder.send(b"".join(frame(OP_TEXT, f"m{i}".encode()) for i in range(count)))
    assert_serving(server)  # meanwhile, others are served
    got = [listener.recv_frame() for _ in range(count)]
    assert got == [(OP_TEXT, f"Client #1 says: m{i}".encode()) for i in range(count)]
    replies = [flooder.recv_frame() for _ in range(2 * count)]
    assert [p for _, p in replies if p.startswith(b"You wrote")] == [
        f"You wrote: m{i}".encode() for i in range(count)
    ]
    listener.close()
    flooder.close()


def test_frames_sent_right_behind_the_handshake_are_not_lost(server: ServerProcess) -> None:
    # In the same TCP write as the upgrade request (uvicorn itself drops these bytes).
    raw = RawWebSocket(server.port, "/ws", early=frame(OP_TEXT, b"one") + frame(OP_TEXT, b"two"))
    assert raw.recv_frame() == (OP_TEXT, b"Message text was: one")
    assert raw.recv_frame() == (OP_TEXT, b"Message text was: two")
    raw.close()
    raw = RawWebSocket(
        server.port, "/v1/ws?name=early", early=frame(OP_TEXT, b'{"type":"ping","ref":1}')
    )
    assert b'"welcome"' in raw.recv_frame()[1]
    assert json.loads(raw.recv_frame()[1]) == {"type": "pong", "ref": 1}
    raw.close()


def test_a_close_right_behind_a_refused_frame_is_answered_without_an_error(
    server: ServerProcess,
) -> None:
    # The binary frame makes the server close (1003) while websockets is already
    # answering the client's close from the same read.
    raw = RawWebSocket(server.port, "/ws")
    raw.send(frame(OP_BINARY, b"\x00") + frame(OP_CLOSE, struct.pack("!H", 1000)))
    _, code = raw.recv_until_close()
    raw.close()
    assert code in (1000, 1003)
    assert_serving(server)
    assert "Traceback" not in server.log
    assert "endpoint failed" not in server.log


def test_a_ping_right_behind_the_handshake_is_answered_after_the_101(
    server: ServerProcess,
) -> None:
    raw = RawWebSocket(server.port, "/ws", early=frame(OP_PING, b"early"))  # checks the 101
    assert raw.recv_frame() == (OP_PONG, b"early")
    raw.close()


def test_a_client_gone_before_its_hello_is_forgotten(server: ServerProcess) -> None:
    for _ in range(3):
        raw = RawWebSocket(server.port, "/v1/ws")  # no credentials yet: hello expected
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # TCP reset, no close frame
    deadline = time.monotonic() + 20
    while (connections := server.readyz()["connections"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connections == 0
