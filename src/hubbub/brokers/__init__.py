"""Brokers, chosen by URL scheme."""

from __future__ import annotations

from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from hubbub.brokers.base import Broker
from hubbub.errors import ConfigurationError

# scheme -> "module:Class"; imported lazily so that an extra is only needed when used.
BROKERS: dict[str, str] = {
    "memory": "hubbub.brokers.memory:MemoryBroker",
    "redis": "hubbub.brokers.redis:RedisBroker",
    "rediss": "hubbub.brokers.redis:RedisBroker",
    "postgresql": "hubbub.brokers.postgres:PostgresBroker",
    "postgres": "hubbub.brokers.postgres:PostgresBroker",
    "nats": "hubbub.brokers.nats:NatsBroker",
}
# The extra that provides each backend's client library.
EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
    "nats": "nats",
}


def broker_from_url(url: str, **options: Any) -> Broker:
    """Build the broker that ``url``'s scheme names; ``options`` go to its constructor."""
    scheme = urlsplit(url).scheme
    target = BROKERS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(BROKERS))
        raise ConfigurationError(f"unknown broker URL scheme {scheme!r}; known: {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"broker {scheme}:// needs an optional dependency: "
            f"pip install 'hubbub[{EXTRAS.get(scheme, scheme)}]' ({exc})"
        ) from exc
    broker: Broker = getattr(module, class_name)(url, **options)
    return broker


__all__ = ["BROKERS", "Broker", "broker_from_url"]
