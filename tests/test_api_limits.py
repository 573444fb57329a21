"""The HTTP API's limits on a real server: the key before the body, the body limit, the
bounds of every field, and ``/docs`` served without the internet."""

from __future__ import annotations

import json
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from tests.servers import ServerProcess

KEY = "api-key-for-limit-tests"
TIMEOUT = 20.0
DECLARED = 64 * 1024 * 1024  # what the hostile request says it will send
SENT = 16 * 1024 * 1024  # what it sends: far more than the limit, little for the machine
PIECE = b"x" * 65536
MARGIN_KIB = 4096  # allocator noise of one request; the unfixed server grew by SENT


@pytest.fixture
def api_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server("--api-key", KEY)


def api(
    server: ServerProcess, method: str, path: str, body: bytes | None = None, key: str | None = KEY
) -> tuple[int, Any]:
    """One call through urllib (a real socket); the status and the decoded JSON answer."""
    request = urllib.request.Request(server.http(path), data=body, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post(server: ServerProcess, text: str, **extra: Any) -> tuple[int, Any]:
    body = json.dumps({"text": text, **extra}).encode()
    return api(server, "POST", "/api/v1/rooms/lobby/messages", body)


class Answer:
    """An HTTP response read off a raw socket by a thread of its own, so that the
    request may go on sending while (or after) the server answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.status: int | None = None
        self.body = b""
        self.error: str | None = None
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed before an answer: {data!r}")
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            self.status = int(head.split(b" ", 2)[1])
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            need = int(length.group(1)) if length else 0
            while len(rest) < need:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            self.body = rest[:need]
        except OSError as exc:  # socket.timeout included: the server never answered
            self.error = repr(exc)
        finally:
            self.done.set()


def raw_request(
    server: ServerProcess, head: str, pieces: Iterable[bytes]
) -> tuple[Answer, int, socket.socket]:
    """Send ``head`` then ``pieces`` over a fresh socket while reading the answer; return
    the answer, how far the server's RSS grew meanwhile (KiB), and the still open socket
    (measured before closing it: an unfixed server still holds what it buffered)."""
    before = server.rss_kib()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    answer = Answer(sock)
    try:
        sock.sendall(head.encode())
        for piece in pieces:
            sock.sendall(piece)
    except OSError:
        pass  # the server may close once it has answered; the answer is what counts
    answer.done.wait(TIMEOUT + 5)
    return answer, server.rss_kib() - before, sock


def post_head(server: ServerProcess, framing: str, key: str | None = KEY) -> str:
    auth = f"Authorization: Bearer {key}\r\n" if key is not None else ""
    return (
        f"POST /api/v1/rooms/lobby/messages HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\n{auth}{framing}\r\n"
    )


def warm_up(server: ServerProcess) -> None:
    """One accepted and one refused call, so that first-use allocations are not counted."""
    assert post(server, "warm")[0] == 201
    assert api(server, "GET", "/api/v1/rooms", key=None)[0] == 401


def chunked(pieces: Iterable[bytes]) -> Iterable[bytes]:
    """Chunked transfer coding of ``pieces``, without the final zero-length chunk."""
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)


def flood() -> Iterable[bytes]:
    return (PIECE for _ in range(SENT // len(PIECE)))


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_request_without_the_key_is_refused_before_its_body_is_read(
    api_server: ServerProcess, key: str | None
) -> None:
    warm_up(api_server)
    head = post_head(api_server, f"Content-Length: {DECLARED}\r\n", key)
    answer, grown_kib, sock = raw_request(api_server, head, flood())
    try:
        assert (answer.status, answer.error) == (401, None), f"grew {grown_kib} KiB"
        assert json.loads(answer.body)["detail"] == "missing or wrong API key"
        assert grown_kib < 64 + MARGIN_KIB
    finally:
        sock.close()


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    api_server: ServerProcess,
) -> None:
    warm_up(api_server)
    head = post_head(api_server, f"Content-Length: {DECLARED}\r\n")
    answer, grown_kib, sock = raw_request(api_server, head, flood())
    try:
        assert (answer.status, answer.error) == (413, None), f"grew {grown_kib} KiB"
        assert json.loads(answer.body) == {"detail": "Content Too Large"}
        assert grown_kib < 64 + MARGIN_KIB
    finally:
        sock.close()


def test_a_chunked_body_is_cut_off_at_the_limit(api_server: ServerProcess) -> None:
    warm_up(api_server)
    head = post_head(api_server, "Transfer-Encoding: chunked\r\n")
    answer, grown_kib, sock = raw_request(api_server, head, chunked(flood()))
    try:
        assert (answer.status, answer.error) == (413, None), f"grew {grown_kib} KiB"
        assert json.loads(answer.body) == {"detail": "Content Too Large"}
        assert grown_kib < 64 + MARGIN_KIB
    finally:
        sock.close()


def test_the_limit_is_exact_and_a_setting(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--api-key", KEY, "--max-body-bytes", "1000")
    body = json.dumps({"text": "x"}).encode()
    exact = body[:-1] + b" " * (1000 - len(body)) + b"}"
    assert len(exact) == 1000
    assert api(server, "POST", "/api/v1/rooms/lobby/messages", exact)[0] == 201
    status, answer = api(server, "POST", "/api/v1/rooms/lobby/messages", b" " + exact)
    assert (status, answer) == (413, {"detail": "Content Too Large"})
    # Chunked: no length to refuse by; the bytes are counted as they come.
    head = post_head(server, "Transfer-Encoding: chunked\r\n")
    over = chunked([b" " + exact[:500], exact[500:]])
    answer_, _, sock = raw_request(server, head, [*over, b"0\r\n\r\n"])
    sock.close()
    assert (answer_.status, answer_.error) == (413, None)
    head = post_head(server, "Transfer-Encoding: chunked\r\n")
    answer_, _, sock = raw_request(server, head, [*chunked([exact[:10], exact[10:]]), b"0\r\n\r\n"])
    sock.close()
    assert (answer_.status, answer_.error) == (201, None)


def test_the_longest_text_fits_the_default_limit_in_its_widest_encoding(
    api_server: ServerProcess,
) -> None:
    # 4000 astral characters escaped as surrogate pairs: 12 bytes each, 48 000 in all.
    body = json.dumps({"text": "\U0001f600" * 4000, "from": "\U0001f600" * 64}).encode()
    assert 48_000 < len(body) <= 65536
    assert api(api_server, "POST", "/api/v1/rooms/lobby/messages", body)[0] == 201


@pytest.mark.parametrize(("depth", "limit"), [(30_000, "65536"), (100_000, "1048576")])
def test_deeply_nested_json_is_a_client_error(
    start_server: Callable[..., ServerProcess], depth: int, limit: str
) -> None:
    server = start_server("--api-key", KEY, "--max-body-bytes", limit)
    status, answer = api(server, "POST", "/api/v1/rooms/lobby/messages", b"[" * depth)
    assert 400 <= status < 500 and answer["detail"]
    nested = b'{"text": ' + b"[" * depth + b"]" * depth + b"}"
    status, answer = api(server, "POST", "/api/v1/rooms/lobby/messages", nested)
    assert 400 <= status < 500 and answer["detail"]
    assert post(server, "still serving")[0] == 201


@pytest.mark.parametrize(
    ("before", "expected"), [(2**70, 422), (2**53 + 1, 422), (2**53, 200), (1, 200), (0, 422)]
)
def test_before_is_bounded(api_server: ServerProcess, before: int, expected: int) -> None:
    status, answer = api(api_server, "GET", f"/api/v1/rooms/lobby/messages?before={before}")
    assert status == expected, answer
    if expected == 200:
        assert answer == {"room": "lobby", "messages": []}


def test_the_text_rule_is_the_one_of_v1_ws(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--api-key", KEY, "--max-text-chars", "10")
    assert post(server, "x" * 10)[0] == 201
    for text in ["", "x" * 11, "a\x00b"]:
        status, answer = post(server, text)
        assert status == 422 and answer["detail"], text
    status, page = api(server, "GET", "/api/v1/rooms/lobby/messages")
    assert [m["text"] for m in page["messages"]] == ["x" * 10]


def test_the_default_text_limit_is_4000(api_server: ServerProcess) -> None:
    assert post(api_server, "x" * 4000)[0] == 201
    assert post(api_server, "x" * 4001)[0] == 422


def test_a_history_page_is_bounded_in_bytes(start_server: Callable[..., ServerProcess]) -> None:
    outbox = 64 * 1024
    server = start_server("--api-key", KEY, "--outbox-max-bytes", str(outbox))
    for _ in range(40):
        assert post(server, "\x01" * 4000)[0] == 201  # 24 000 bytes each, escaped
    seqs: list[int] = []
    before = ""
    while True:
        status, page = api(server, "GET", f"/api/v1/rooms/lobby/messages?limit=1000{before}")
        assert status == 200
        if not page["messages"]:
            break
        assert len(json.dumps(page)) <= outbox + 2000 or len(page["messages"]) == 1
        seqs[:0] = [m["seq"] for m in page["messages"]]
        before = f"&before={page['messages'][0]['seq']}"
    assert seqs == list(range(1, 41))


def test_docs_are_served_without_the_internet(api_server: ServerProcess) -> None:
    with urllib.request.urlopen(api_server.http("/docs"), timeout=TIMEOUT) as response:
        html = response.read().decode()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    urls += re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)  # the OpenAPI document
    assert len(urls) >= 4, html  # style, icon, script, openapi.json
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is off this host"
        with urllib.request.urlopen(api_server.http(url), timeout=TIMEOUT) as response:
            assert response.status == 200, url
            assert response.read(), url
    with pytest.raises(urllib.error.HTTPError) as redoc:  # ReDoc fetches from a CDN: off
        urllib.request.urlopen(api_server.http("/redoc"), timeout=TIMEOUT)
    redoc.value.close()
    assert redoc.value.code == 404


def test_an_empty_api_key_leaves_the_api_off(start_server: Callable[..., ServerProcess]) -> None:
    # HUBBUB_API_KEY= (empty, as a compose file leaves it) once let "Bearer " in.
    server = start_server(env={"HUBBUB_API_KEY": ""})
    for key in ("", " "):
        status, answer = api(server, "GET", "/api/v1/rooms", key=key)
        assert status == 401, (key, answer)
