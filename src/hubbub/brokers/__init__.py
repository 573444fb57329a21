"""Brokers, chosen by URL scheme."""

from __future__ import annotations

from typing import Any

from hubbub.backends import backend_class
from hubbub.brokers.base import Broker

# scheme -> "module:Class"; imported lazily so that an extra is only needed when used.
BROKERS: dict[str, str] = {
    "memory": "hubbub.brokers.memory:MemoryBroker",
    "redis": "hubbub.brokers.redis:RedisBroker",
    "rediss": "hubbub.brokers.redis:RedisBroker",
    "postgresql": "hubbub.brokers.postgres:PostgresBroker",
    "postgres": "hubbub.brokers.postgres:PostgresBroker",
    "nats": "hubbub.brokers.nats:NatsBroker",
}


def broker_from_url(url: str, **options: Any) -> Broker:
    """Build the broker that ``url``'s scheme names; ``options`` go to its constructor."""
    broker: Broker = backend_class("broker", BROKERS, url)(url, **options)
    return broker


__all__ = ["BROKERS", "Broker", "broker_from_url"]
