"""Proxy hooks (``docs/hooks.md``): the backend is asked, synchronously and with a
timeout, who a connection is (connect) and whether a message may be stored (publish).

Calls are signed like webhooks. What an answer means, and what a failure does, is
decided here; the session acts on the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

import httpx2
import msgspec
from msgspec import Meta

from hubbub import protocol
from hubbub.auth import GUEST_PREFIX, AuthError, Identity, token_name
from hubbub.config import Settings
from hubbub.errors import (
    BackendUnavailable,
    ConfigurationError,
    ErrorCode,
    ProtocolError,
    Unauthenticated,
)
from hubbub.webhooks import FAILURES, SIGNATURE_HEADER, TIMESTAMP_HEADER, label, post, signature

logger = logging.getLogger("hubbub.hooks")

HOOK_HEADER = "Hubbub-Hook"
# The request headers a connect hook is shown: what a backend identifies a browser by.
PASSED_HEADERS = ("cookie", "authorization", "origin", "user-agent", "accept-language")
Pattern = Annotated[str, Meta(min_length=1, max_length=256)]


class HookIdentity(msgspec.Struct, forbid_unknown_fields=False):
    """A connect hook's 200 answer."""

    user: Annotated[str, Meta(min_length=1, max_length=256)]
    name: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    # None unless said, as in a token: a backend that forgets the field opens nothing.
    rooms: Annotated[list[Pattern], Meta(max_length=100)] = msgspec.field(default_factory=list)
    write: Annotated[list[Pattern], Meta(max_length=100)] | None = None
    moderate: Annotated[list[Pattern], Meta(max_length=100)] = msgspec.field(default_factory=list)
    expires: float | None = None


class Change(msgspec.Struct):
    """A publish hook's 200 answer: what to store instead (each optional)."""

    text: str | None = None
    data: dict[str, Any] | None = None


class Refusal(msgspec.Struct):
    """A publish hook's 403/422 answer."""

    reason: Annotated[str, Meta(max_length=500)] = "refused by the backend"


class Hooks:
    """The configured hooks and the HTTP client that calls them (started with the hub)."""

    def __init__(self, settings: Settings) -> None:
        self.connect_url = settings.connect_hook_url
        self.publish_url = settings.publish_hook_url
        self.secret = settings.webhook_secret or ""
        self.allow_when_down = settings.publish_hook_fallback == "allow"
        self.max_text = settings.max_text_chars
        self.max_data = settings.max_data_bytes
        self.timeout = settings.hook_timeout
        if self.active and not self.secret:
            raise ConfigurationError("the hooks need webhook_secret: their calls are signed")
        # Two pools: anonymous connections (each one a connect call) must not take the
        # publish hook's connections.
        self._client: httpx2.AsyncClient | None = None
        self._connect_client: httpx2.AsyncClient | None = None

    @property
    def active(self) -> bool:
        return bool(self.connect_url or self.publish_url)

    async def start(self) -> None:
        if self.active:
            agent = {"User-Agent": "hubbub-hooks"}
            self._client = httpx2.AsyncClient(timeout=self.timeout, headers=agent)
            self._connect_client = httpx2.AsyncClient(timeout=self.timeout, headers=agent)

    async def stop(self) -> None:
        for client in (self._client, self._connect_client):
            if client is not None:
                await client.aclose()
        self._client = self._connect_client = None

    async def _post(self, kind: str, url: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        client = self._connect_client if kind == "connect" else self._client
        assert client is not None, "hooks not started"
        body = msgspec.json.encode(payload)
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            HOOK_HEADER: kind,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature(self.secret, stamp, body),
        }
        return await post(client, url, body, headers, self.timeout)

    # -- connect ---------------------------------------------------------------------

    async def connect(self, headers: Mapping[str, str], client: str | None) -> Identity | None:
        """The identity the backend gives the connection; None if it leaves it to the
        ``hello``. Raises :class:`Unauthenticated` (refused) or
        :class:`BackendUnavailable`."""
        assert self.connect_url is not None
        shown = {name: headers[name] for name in PASSED_HEADERS if name in headers}
        try:
            status, answer = await self._post(
                "connect", self.connect_url, {"headers": shown, "client": client}
            )
        except FAILURES as exc:
            logger.warning("connect hook %s: %s", label(self.connect_url), type(exc).__name__)
            raise BackendUnavailable("the backend could not be asked who you are") from None
        if status == 204:
            return None
        if status in (401, 403):
            raise Unauthenticated(ErrorCode.UNAUTHORIZED, "the backend refused the connection")
        if status != 200:
            logger.warning("connect hook %s answered %d", label(self.connect_url), status)
            raise BackendUnavailable("the backend could not be asked who you are")
        try:
            given = msgspec.json.decode(answer, type=HookIdentity)
            # The rules of a token's claims: no guest's id (whose DMs it would read), a
            # name that shows what it says.
            if given.user.startswith(GUEST_PREFIX):
                raise AuthError("unauthorized", f"a user id may not start with {GUEST_PREFIX!r}")
            name = token_name(given.name or given.user[:64])
        except (msgspec.DecodeError, AuthError) as exc:  # ValidationError is a DecodeError
            logger.warning("connect hook %s: not an identity: %s", label(self.connect_url), exc)
            raise BackendUnavailable("the backend could not be asked who you are") from None
        return Identity(
            user=given.user,
            name=name,
            read=tuple(given.rooms),
            write=tuple(given.rooms if given.write is None else given.write),
            expires_at=given.expires,
            moderate=tuple(given.moderate),
        )

    # -- publish ---------------------------------------------------------------------

    async def publish(
        self, payload: dict[str, Any], text: str, data: dict[str, Any] | None, ref: Any
    ) -> tuple[str, dict[str, Any] | None]:
        """What to store of a send or edit (``payload`` says which): its ``text`` and
        ``data``, as sent or as the backend changed them. Raises
        ``ProtocolError(refused)``, or ``ProtocolError(unavailable)`` when the backend
        cannot be asked and the fallback is to refuse."""
        if self.publish_url is None:
            return text, data
        try:
            status, answer = await self._post(
                "publish", self.publish_url, {**payload, "text": text, "data": data}
            )
        except httpx2.PoolTimeout:
            # Every connection to the backend is busy: this process is overloaded, not
            # the backend down; letting the message through unchecked would reward it.
            raise ProtocolError(ErrorCode.UNAVAILABLE, "too busy to ask; send again", ref) from None
        except FAILURES as exc:
            return self._down(type(exc).__name__, text, data, ref)
        if status in (403, 422):
            try:
                reason = msgspec.json.decode(answer or b"{}", type=Refusal).reason
            except msgspec.DecodeError:
                reason = Refusal().reason
            raise ProtocolError(ErrorCode.REFUSED, reason, ref)
        if status != 200:
            return self._down(f"answered {status}", text, data, ref)
        try:
            change = msgspec.json.decode(answer or b"{}", type=Change)
        except msgspec.DecodeError as exc:
            return self._down(f"not a change: {exc}", text, data, ref)
        if change.text is not None:
            protocol.check_text(change.text, self.max_text, ref)
            text = change.text
        if change.data is not None:
            protocol.check_data(change.data, self.max_data, ref)
            data = change.data
        return text, data

    def _down(
        self, why: str, text: str, data: dict[str, Any] | None, ref: Any
    ) -> tuple[str, dict[str, Any] | None]:
        assert self.publish_url is not None
        if self.allow_when_down:
            logger.warning("publish hook %s: %s; stored unchecked", label(self.publish_url), why)
            return text, data
        logger.warning("publish hook %s: %s; refused", label(self.publish_url), why)
        raise ProtocolError(
            ErrorCode.UNAVAILABLE, "the backend could not be asked; send again", ref
        )
