"""A fresh, empty store of each kind per test: a SQLite file, or a throw-away database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hubbub.stores import Retention, Store, store_from_url
from tests.services import temporary_database

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hubbub.db"
        return
    async with temporary_database() as url:
        yield url


@pytest.fixture
async def open_store(store_url: str) -> AsyncIterator[Callable[..., Awaitable[Store]]]:
    """Open stores on the test's URL (several stand for several processes)."""
    opened: list[Store] = []

    async def open_one(retention: Retention | None = None) -> Store:
        store = store_from_url(store_url, retention)
        await store.start()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.stop()
