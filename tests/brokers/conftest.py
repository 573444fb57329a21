"""Broker pairs standing in for two processes that share one broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hubbub.brokers import Broker, broker_from_url
from hubbub.brokers.memory import MemoryBroker, MemoryBus
from tests.services import service_url

BACKENDS = ["memory", "redis", "postgres", "nats"]

Pair = tuple[Broker, Broker]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_pair(backend: str) -> AsyncIterator[Callable[[], Awaitable[Pair]]]:
    """Start two brokers on the same server (for memory: the same bus)."""
    started: list[Broker] = []
    url = None if backend == "memory" else service_url(backend)

    async def make() -> Pair:
        if url is None:
            bus = MemoryBus()
            pair: Pair = (MemoryBroker(bus=bus), MemoryBroker(bus=bus))
        else:
            pair = (broker_from_url(url), broker_from_url(url))
        for broker in pair:
            await broker.start()
            started.append(broker)
            assert broker.ready
        return pair

    yield make
    for broker in started:
        await broker.stop()
