"""routes/web.py over real sockets: the static files' CORS and HEAD, the page's relative URLs."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

from tests.servers import ServerProcess

TIMEOUT = 10
ALLOWED = "https://app.example"


def fetch(
    server: ServerProcess, path: str, method: str = "GET", origin: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {} if origin is None else {"Origin": origin}
    req = urllib.request.Request(server.http(path), method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as response:
            found = {k.lower(): v for k, v in response.headers.items()}
            return response.status, found, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_static_files_allow_the_configured_origins_only(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--cors-origins", f"{ALLOWED}, https://other.example")
    for name in ("hubbub.js", "app.js", "style.css"):
        status, headers, _ = fetch(server, f"/static/{name}", origin=ALLOWED)
        assert status == 200
        assert headers["access-control-allow-origin"] == ALLOWED
        assert headers["vary"] == "Origin"
    status, headers, _ = fetch(server, "/static/hubbub.js", origin="https://evil.example")
    assert status == 200  # the file itself is public; the browser keeps it from the page
    assert "access-control-allow-origin" not in headers
    assert headers["vary"] == "Origin"


def test_any_origin_with_a_star(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(env={"HUBBUB_CORS_ORIGINS": "*"})
    _, headers, _ = fetch(server, "/static/hubbub.js", origin="https://anyone.example")
    assert headers["access-control-allow-origin"] == "*"
    assert "vary" not in headers


def test_no_cors_by_default(server: ServerProcess) -> None:
    status, headers, _ = fetch(server, "/static/hubbub.js", origin=ALLOWED)
    assert status == 200
    assert "access-control-allow-origin" not in headers and "vary" not in headers


def test_head_answers_the_static_files(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--cors-origins", ALLOWED)
    _, _, body = fetch(server, "/static/hubbub.js")
    status, headers, head_body = fetch(server, "/static/hubbub.js", "HEAD", origin=ALLOWED)
    assert status == 200 and head_body == b""
    assert headers["content-length"] == str(len(body))
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["access-control-allow-origin"] == ALLOWED
    assert fetch(server, "/static/nothing.js", "HEAD")[0] == 404


def test_the_page_names_its_files_relatively(server: ServerProcess) -> None:
    _, _, page = fetch(server, "/")
    assert b'href="static/style.css"' in page and b'src="static/app.js"' in page
    assert b'"/static/' not in page
