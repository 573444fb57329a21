"""Fixtures for tests against real brokers."""

from __future__ import annotations

import pytest

BROKERS = ["redis", "postgres", "nats"]


@pytest.fixture(params=BROKERS)
def broker_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)
