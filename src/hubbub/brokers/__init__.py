"""Brokers, chosen by URL scheme."""

from __future__ import annotations

from importlib import import_module
from urllib.parse import urlsplit

from hubbub.brokers.base import Broker
from hubbub.errors import ConfigurationError

# scheme -> "module:Class"; imported lazily so that an extra is only needed when used.
BROKERS: dict[str, str] = {
    "memory": "hubbub.brokers.memory:MemoryBroker",
}


def broker_from_url(url: str) -> Broker:
    """Build the broker that ``url``'s scheme names."""
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
            f"pip install 'hubbub[{scheme}]' ({exc})"
        ) from exc
    broker: Broker = getattr(module, class_name)(url)
    return broker


__all__ = ["BROKERS", "Broker", "broker_from_url"]
