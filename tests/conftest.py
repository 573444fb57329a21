"""Shared fixtures: real server processes on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.servers import ServerProcess

# No timing in the suite's verdicts: hypothesis must not fail a test because this
# 2-core machine was busy (per-example deadline, slow-generation health check).
settings.register_profile("hubbub", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("hubbub")


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
