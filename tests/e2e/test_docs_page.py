"""``/docs`` in a real browser: Swagger UI renders the API from this server alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from tests.servers import ServerProcess


def test_docs_render_with_no_request_off_this_host(
    start_server: Callable[..., ServerProcess], new_page: Callable[[], Any]
) -> None:
    server = start_server("--api-key", "k")
    page = new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.http("/docs"))
    page.get_by_text("/api/v1/rooms/{room}/presence").first.wait_for(timeout=30_000)
    page.wait_for_load_state("networkidle", timeout=30_000)
    origin = f"127.0.0.1:{server.port}"
    assert requested and all(urlsplit(url).netloc == origin for url in requested), requested
