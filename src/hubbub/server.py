"""How ``hubbub serve`` runs uvicorn: its config, with Hubbub's protocol and logging.

uvicorn runs the process (sockets, workers, lifespan, signals); every connection it
accepts starts as :class:`hubbub.transport.entry.HttpEntry`, Hubbub's own protocol,
which keeps WebSockets and hands plain HTTP to uvicorn's httptools protocol (see
``docs/architecture.md``, "The transport").
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from hubbub.config import Settings
from hubbub.transport.websocket import MESSAGES_PER_TURN

logger = logging.getLogger("hubbub.server")

ENTRY_PROTOCOL = "hubbub.transport.entry:HttpEntry"

__all__ = ["ENTRY_PROTOCOL", "MESSAGES_PER_TURN", "ServerConfig", "logging_config"]


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration, with Hubbub's loggers on uvicorn's handler; with
    ``log_format="json"`` every line (uvicorn's too) is one JSON object."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": "hubbub.logs.JsonFormatter"}
    # On every handler, so that no line of any logger shows a token from a URL.
    config.setdefault("filters", {})["redact"] = {"()": "hubbub.logs.RedactCredentials"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    config["loggers"]["hubbub"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    # websockets' core logs "connection closed" for every socket: not worth a line.
    config["loggers"]["hubbub.server.core"] = {"level": "WARNING"}
    return config


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus Hubbub's settings (picklable, for ``--workers``)."""

    def __init__(self, app: Any, settings: Settings, **kwargs: Any) -> None:
        self.hubbub = settings
        super().__init__(
            app,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            loop="uvloop",
            # Hubbub's own protocol for every connection: it reads each request head,
            # keeps WebSockets and hands plain HTTP to uvicorn's httptools protocol;
            # an upgrade on a kept-alive HTTP connection comes back to it as ``ws``.
            http=ENTRY_PROTOCOL,
            ws=ENTRY_PROTOCOL,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout + settings.close_timeout),
            access_log=False,
            fd=settings.fd,
            # Behind a proxy: uvicorn's proxy-headers middleware, from Hubbub's setting
            # only (not uvicorn's default of trusting loopback, nor FORWARDED_ALLOW_IPS).
            # WebSockets get it too: HttpEntry runs ``config.loaded_app``, and the
            # middleware rewrites the scope the session logs from (tests/test_forwarded.py).
            proxy_headers=bool(settings.forwarded_allow_ips),
            forwarded_allow_ips=settings.forwarded_allow_ips,
            log_config=logging_config(settings.log_level, settings.log_format),
            # TLS of uvicorn's: its SSL transport is under every protocol, HttpEntry's too
            # (which tells wss:// by the transport's "sslcontext").
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
            **kwargs,
        )
