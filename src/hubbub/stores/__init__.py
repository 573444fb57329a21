"""Stores, chosen by URL scheme."""

from __future__ import annotations

from hubbub.backends import backend_class
from hubbub.stores.base import Retention, Store

STORES: dict[str, str] = {
    "sqlite": "hubbub.stores.sqlite:SqliteStore",
    "postgresql": "hubbub.stores.postgres:PostgresStore",
    "postgres": "hubbub.stores.postgres:PostgresStore",
}


def store_from_url(url: str, retention: Retention | None = None) -> Store:
    """Build the store that ``url``'s scheme names."""
    store: Store = backend_class("store", STORES, url)(url, retention)
    return store


__all__ = ["STORES", "Retention", "Store", "store_from_url"]
