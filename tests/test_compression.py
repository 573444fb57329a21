"""permessage-deflate (``--compression``) over real sockets: negotiated only when on,
frames compressed both ways and the same compressed bytes for every client, and
hostile compressed input (a deflate bomb, bad data, RSV1 where it is not allowed)
answered with its close code."""

from __future__ import annotations

import base64
import os
import socket
import struct
import zlib
from collections.abc import Callable

import pytest
from websockets.sync.client import connect

from hubbub.outgoing import OutFrame
from tests.rawws import frame
from tests.servers import ServerProcess

TIMEOUT = 10
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"  # what Chromium sends


class DeflateClient:
    """A bare client on a socket that offers permessage-deflate and shows raw frames."""

    def __init__(self, port: int, path: str, offer: str = BROWSER_OFFER) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), head
        self.headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._more()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv(self) -> tuple[int, bytes]:
        """The next frame: its first byte and its payload (as sent, not inflated)."""
        first, second = self._take(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(8))
        return first, self._take(n)

    def send_deflated(self, text: str, bits: int = 12, first: int = 0xC1) -> None:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -bits)
        data = compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(raw_masked(first, data[:-4]))

    def close(self) -> None:
        self.sock.close()


def raw_masked(first: int, payload: bytes) -> bytes:
    """A masked client frame with any first byte (RSV bits included)."""
    return bytes([first]) + frame(0x1, payload)[1:]


def inflate(payload: bytes, bits: int = 15) -> str:
    return zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff").decode()


def close_code(client: DeflateClient) -> int | None:
    try:
        while True:
            first, payload = client.recv()
            if first & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0]
    except (EOFError, ConnectionResetError):
        return None


@pytest.fixture
def deflating(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server("--compression", "--max-frame-bytes", "65536")


def test_off_by_default_an_offer_gets_no_extension(server: ServerProcess) -> None:
    client = DeflateClient(server.port, "/ws")
    try:
        assert "sec-websocket-extensions" not in client.headers
    finally:
        client.close()


def test_on_it_is_negotiated_without_context_both_ways_and_a_bounded_client_window(
    deflating: ServerProcess,
) -> None:
    client = DeflateClient(deflating.port, "/ws")
    try:
        assert client.headers["sec-websocket-extensions"] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "client_max_window_bits=12"
        )
    finally:
        client.close()


def test_compressed_messages_in_and_out_and_short_ones_plain(deflating: ServerProcess) -> None:
    client = DeflateClient(deflating.port, "/ws")
    try:
        long_text = "hello " * 100
        client.send_deflated(long_text)
        first, payload = client.recv()
        assert first == 0xC1  # FIN, RSV1, text
        assert inflate(payload) == f"Message text was: {long_text}"
        client.send_deflated("hi")
        first, payload = client.recv()
        assert (first, payload) == (0x81, b"Message text was: hi")  # under 256 bytes
    finally:
        client.close()


def test_every_member_gets_the_same_compressed_bytes(deflating: ServerProcess) -> None:
    one, two = DeflateClient(deflating.port, "/ws/1"), DeflateClient(deflating.port, "/ws/2")
    try:
        text = "broadcast " * 60
        one.send_deflated(text)
        assert inflate(one.recv()[1]) == f"You wrote: {text}"
        got_one, got_two = one.recv(), two.recv()
        assert got_one == got_two and got_one[0] == 0xC1
        assert inflate(got_one[1]) == f"Client #1 says: {text}"
    finally:
        one.close()
        two.close()


def test_a_library_client_talks_to_it(deflating: ServerProcess) -> None:
    # websockets' client offers permessage-deflate by default and inflates by itself.
    with connect(deflating.ws("/ws"), open_timeout=TIMEOUT) as ws:
        ws.send("x" * 1000)
        assert ws.recv(TIMEOUT) == "Message text was: " + "x" * 1000


def test_a_deflate_bomb_is_refused_with_1009(deflating: ServerProcess) -> None:
    client = DeflateClient(deflating.port, "/ws")
    try:
        client.send_deflated("a" * 10_000_000)  # ~10 KB on the wire, 10 MB inflated
        assert close_code(client) == 1009
    finally:
        client.close()
    with connect(deflating.ws("/ws"), open_timeout=TIMEOUT) as ws:
        ws.send("still there?")
        assert ws.recv(TIMEOUT) == "Message text was: still there?"


def test_bad_deflate_data_closes_with_1007(deflating: ServerProcess) -> None:
    client = DeflateClient(deflating.port, "/ws")
    try:
        client.sock.sendall(raw_masked(0xC1, b"\xff\xff\xff\xff not deflate"))
        assert close_code(client) == 1007
    finally:
        client.close()


@pytest.mark.parametrize(
    ("first", "negotiated"),
    [
        pytest.param(0xC1, False, id="rsv1-without-compression"),
        pytest.param(0xC0, True, id="rsv1-on-a-continuation"),
        pytest.param(0xA1, True, id="rsv2"),
    ],
)
def test_rsv_bits_where_they_are_not_allowed_close_with_1002(
    start_server: Callable[..., ServerProcess], first: int, negotiated: bool
) -> None:
    server = start_server(*(["--compression"] if negotiated else []))
    client = DeflateClient(server.port, "/ws")
    try:
        if first == 0xC0:
            client.sock.sendall(frame(0x1, b"start", fin=False))
        client.sock.sendall(raw_masked(first, b"payload"))
        assert close_code(client) == 1002
    finally:
        client.close()


def test_a_broadcast_is_compressed_once_per_window() -> None:
    frame_ = OutFrame.from_text("z" * 1000)
    assert frame_.deflated(15, 256) is frame_.deflated(15, 256)
    assert frame_.deflated(12, 256) is not frame_.deflated(15, 256)
    assert OutFrame.from_text("short").deflated(15, 256) == OutFrame.from_text("short").wire
