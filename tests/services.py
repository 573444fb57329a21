"""The real services the broker tests talk to, and what to do when one is missing."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

# The machine's shared services; override with HUBBUB_TEST_<NAME>_URL.
DEFAULT_URLS = {
    "redis": "redis://127.0.0.1:6379/0",
    "postgres": "postgresql://postgres@127.0.0.1:5432/postgres",
    "nats": "nats://127.0.0.1:4222",
}


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(reason: str) -> None:
    """Skip with ``reason`` on a developer's machine; fail in CI, where nothing may skip."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: service tests never skip)")
    pytest.skip(reason)


def service_url(name: str) -> str:
    """The URL of service ``name`` if something answers there; else skip (or fail in CI)."""
    url = os.environ.get(f"HUBBUB_TEST_{name.upper()}_URL", DEFAULT_URLS[name])
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            pass
    except OSError as exc:
        missing(f"{name} is not reachable at {url} ({exc}); scripts/services starts it")
    return url


async def create_database() -> tuple[str, str]:
    """A fresh PostgreSQL database on the test server: its URL and name."""
    server = service_url("postgres")
    name = f"hubbub_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}")), name


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(service_url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def temporary_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; its URL."""
    url, name = await create_database()
    try:
        yield url
    finally:
        await drop_database(name)


@contextmanager
def temporary_database_sync() -> Iterator[str]:
    """:func:`temporary_database` for code that runs no event loop."""
    url, name = asyncio.run(create_database())
    try:
        yield url
    finally:
        asyncio.run(drop_database(name))
