"""One ``Settings`` object: defaults, then a configuration file (``hubbub.configfile``, for
the ``hubbub`` command), then ``HUBBUB_*`` environment variables, then CLI flags."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Everything Hubbub can be told. Each field is also ``HUBBUB_<FIELD>`` and ``--<field>``."""

    model_config = SettingsConfigDict(env_prefix="HUBBUB_", frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to bind (0 picks a free one).")
    workers: int = Field(1, ge=1, le=256, description="Server processes sharing the port.")
    fd: int | None = Field(
        None,
        ge=0,
        description="Serve on this inherited listening socket instead of --host/--port "
        "(systemd socket activation passes 3).",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Proxy addresses or networks (comma-separated; * for any) whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed: the client's address and "
        "scheme behind a reverse proxy; none by default.",
    )
    broker_url: str = Field(
        "memory://",
        description="Cross-process fan-out: memory://, redis://, rediss://, postgresql://, nats://",
    )
    namespace: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]{0,32}$",
        description="Puts this deployment's broker channels under a name of their own, for "
        "deployments that share one broker server.",
    )
    log_level: LogLevel = Field("info", description="Logging threshold.")
    log_format: LogFormat = Field(
        "text", description="Log lines as text, or as one JSON object per line."
    )
    broker_buffer_messages: int = Field(
        10_000, ge=1, description="Publishes kept while the broker is unreachable."
    )
    broker_buffer_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Bytes kept while the broker is unreachable."
    )
    broker_backoff_max: float = Field(
        1.0,
        gt=0,
        description="Longest wait between reconnection attempts; what was buffered during "
        "an outage is sent twice this long after reconnecting.",
    )

    store_url: str = Field(
        "sqlite:///data/hubbub.db",
        description="Room history: sqlite:///relative.db, sqlite:////abs.db, postgresql:// "
        "(unset: hubbub.db in --data-dir)",
    )
    data_dir: str = Field(
        "data",
        min_length=1,
        description="Directory of the default SQLite store (hubbub.db, created on first "
        "start), relative to the working directory; a --store-url given wins.",
    )
    history_max_messages: int = Field(
        100_000, ge=0, description="Messages kept per room (0: no limit)."
    )
    history_max_age: float = Field(
        0.0, ge=0, description="Seconds a message is kept (0: no limit)."
    )
    max_text_chars: int = Field(4000, ge=1, description="Longest message text on /v1/ws.")
    max_data_bytes: int = Field(
        2048, ge=2, description="Largest `data` of a message on /v1/ws, as JSON (bytes)."
    )
    rate_per_second: float = Field(
        20.0, gt=0, description="Sustained frames per second one /v1/ws client may send."
    )
    rate_burst: int = Field(
        50, ge=1, description="Frames one /v1/ws client may send at once above the rate."
    )
    max_rooms_per_connection: int = Field(
        100, ge=1, description="Rooms one /v1/ws connection may be in at once."
    )
    max_errors: int = Field(
        20,
        ge=1,
        description="Refused frames (beyond one per second) before a /v1/ws client is "
        "closed with 1008.",
    )
    jwt_secret: str | None = Field(
        None,
        min_length=32,
        description="HS256 secret (32+ characters) that signs /v1/ws tokens.",
    )
    jwt_public_key: str | None = Field(
        None, description="PEM file of the RS256/ES256 public key that verifies tokens."
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = Field(
        "HS256", description="The one JWT algorithm accepted."
    )
    guests: bool | None = Field(
        None,
        description="Let anyone in with a display name (default: yes unless a JWT secret or "
        "key is set).",
    )
    guest_rooms: str = Field("*", description="Room patterns guests may read and write.")
    allowed_origins: str = Field(
        "",
        description="Origins (comma-separated) allowed to open /v1/ws with a session cookie.",
    )
    cors_origins: str = Field(
        "",
        description="Origins (comma-separated; * for any) whose pages may load /static/* "
        "(hubbub.js) across origins (CORS); none by default.",
    )
    session_cookie: str = Field(
        "hubbub_session", description="Cookie that may carry a /v1/ws token."
    )
    hello_timeout: float = Field(
        5.0, gt=0, description="Seconds a /v1/ws client has to say hello when it must."
    )
    presence_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds between presence heartbeats; a silent process's members are "
        "dropped after three.",
    )
    api_key: str | None = Field(
        None, description="Bearer key of the HTTP API under /api/v1 (unset: API refused)."
    )
    max_body_bytes: int = Field(
        64 * 1024,
        ge=256,
        description="Largest HTTP API request body in bytes; a bigger one gets 413.",
    )
    max_frame_bytes: int = Field(
        64 * 1024, ge=125, description="Largest incoming message; bigger ones close with 1009."
    )
    outbox_max_bytes: int = Field(
        1024 * 1024, ge=1024, description="Bytes queued for a client before it is a slow consumer."
    )
    outbox_max_messages: int = Field(
        1024, ge=1, description="Frames queued for one client before it is a slow consumer."
    )
    max_connections: int = Field(
        20_000, ge=1, description="WebSockets per process; more are closed with 1013."
    )
    ping_interval: float = Field(20.0, gt=0, description="Seconds between keepalive pings.")
    ping_timeout: float = Field(20.0, gt=0, description="Seconds to wait for a pong.")
    close_timeout: float = Field(
        5.0, gt=0, description="Seconds a close frame may take before the socket is aborted."
    )
    handshake_timeout: float = Field(
        10.0, gt=0, description="Seconds a new TCP connection may take to send its request."
    )
    shutdown_timeout: float = Field(
        5.0, gt=0, description="Seconds to flush clients on SIGTERM before aborting them."
    )
    compression: bool = Field(
        False,
        description="Offer permessage-deflate (RFC 7692) to clients that ask for it; each "
        "broadcast is compressed once, without context between messages.",
    )
    compression_min_bytes: int = Field(
        256, ge=0, description="Messages shorter than this go out uncompressed."
    )
    compression_window_bits: int = Field(
        12,
        ge=9,
        le=15,
        description="Largest LZ77 window (2^N bytes) asked of clients that let the server "
        "choose, bounding the memory that inflating their messages takes.",
    )

    webhook_urls: str = Field(
        "",
        description="URLs (comma-separated) that get every event as a signed POST, from a "
        "durable outbox in the store (docs/webhooks.md); none by default.",
    )
    webhook_secret: str | None = Field(
        None, description="Key of the webhooks' HMAC-SHA256 signature (needed with URLs)."
    )
    webhook_timeout: float = Field(
        10.0, gt=0, description="Seconds a webhook receiver may take to answer."
    )
    webhook_backoff_max: float = Field(
        60.0, gt=0, description="Longest wait, in seconds, between tries of a failed webhook."
    )

    ssl_certfile: str | None = Field(
        None,
        description="PEM file of the certificate (chain) to serve HTTPS and wss:// with "
        "(unset: plain HTTP and ws://).",
    )
    ssl_keyfile: str | None = Field(
        None,
        description="PEM file of the certificate's private key (unset: it is in --ssl-certfile).",
    )

    connect_hook_url: str | None = Field(
        None,
        description="Backend URL asked who a /v1/ws connection without credentials of "
        "Hubbub's own is (docs/hooks.md).",
    )
    publish_hook_url: str | None = Field(
        None, description="Backend URL asked to approve, change or refuse each send and edit."
    )
    hook_timeout: float = Field(2.0, gt=0, description="Seconds a hook may take to answer.")
    publish_hook_fallback: Literal["refuse", "allow"] = Field(
        "refuse", description="What a send gets when the publish hook cannot be asked."
    )

    @property
    def webhook_targets(self) -> tuple[str, ...]:
        """The webhook URLs, one each."""
        urls = (url.strip() for url in self.webhook_urls.split(","))
        return tuple(dict.fromkeys(url for url in urls if url))  # one outbox per URL

    @field_validator("api_key", "webhook_secret", "connect_hook_url", "publish_hook_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # HUBBUB_API_KEY= (empty, as compose files leave it) must not open the API.
        return value or None

    @model_validator(mode="before")
    @classmethod
    def _store_in_data_dir(cls, values: Any) -> Any:
        # The default store lives in --data-dir; a --store-url given anywhere wins.
        if isinstance(values, dict) and values.get("store_url") is None:
            data_dir = values.get("data_dir")
            if isinstance(data_dir, str) and data_dir:
                path = os.path.join(os.path.expanduser(data_dir), "hubbub.db")
                return {**values, "store_url": f"sqlite:///{path}"}
        return values

    @field_validator("broker_url")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("a broker URL looks like scheme://..., e.g. memory://")
        return value

    def to_env(self) -> dict[str, str]:
        """These settings as ``HUBBUB_*`` variables, so that worker processes rebuild them
        (unset optional ones are left out: ``"None"`` would not read back as None)."""
        return {
            f"HUBBUB_{name.upper()}": str(value)
            for name, value in self.model_dump(exclude_none=True).items()
        }
