"""The real services the broker tests talk to, and what to do when one is missing."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

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
