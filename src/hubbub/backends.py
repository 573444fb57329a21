"""Choosing a backend class by URL scheme: the one registry lookup brokers and stores use."""

from __future__ import annotations

from importlib import import_module
from urllib.parse import urlsplit

from hubbub.errors import ConfigurationError

# The extra that provides each scheme's client library.
EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
    "nats": "nats",
}


def backend_class(kind: str, registry: dict[str, str], url: str) -> type:
    """The class that ``registry`` (scheme → ``"module:Class"``) names for ``url``,
    imported only now, so that an extra is needed only when its backend is used."""
    scheme = urlsplit(url).scheme
    target = registry.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(registry))
        raise ConfigurationError(f"unknown {kind} URL scheme {scheme!r}; known: {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{kind} {scheme}:// needs an optional dependency: "
            f"pip install 'hubbub[{EXTRAS.get(scheme, scheme)}]' ({exc})"
        ) from exc
    cls: type = getattr(module, class_name)
    return cls
