"""Stores, chosen by URL scheme."""

from __future__ import annotations

from importlib import import_module
from urllib.parse import urlsplit

from hubbub.errors import ConfigurationError
from hubbub.stores.base import Retention, Store

STORES: dict[str, str] = {
    "sqlite": "hubbub.stores.sqlite:SqliteStore",
    "postgresql": "hubbub.stores.postgres:PostgresStore",
    "postgres": "hubbub.stores.postgres:PostgresStore",
}


def store_from_url(url: str, retention: Retention | None = None) -> Store:
    """Build the store that ``url``'s scheme names."""
    scheme = urlsplit(url).scheme
    target = STORES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(STORES))
        raise ConfigurationError(f"unknown store URL scheme {scheme!r}; known: {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"store {scheme}:// needs an optional dependency: pip install 'hubbub[postgres]' "
            f"({exc})"
        ) from exc
    store: Store = getattr(module, class_name)(url, retention)
    return store


__all__ = ["STORES", "Retention", "Store", "store_from_url"]
