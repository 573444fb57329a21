"""Shared fixtures: real server processes on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.servers import ServerProcess


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start ``hubbub serve`` with extra flags; every one started is stopped afterwards."""
    started: list[ServerProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> ServerProcess:
        server = ServerProcess(*args, env=env, command=command).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        assert "Traceback" not in server.log, server.log


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server on the embedded defaults."""
    return start_server()
