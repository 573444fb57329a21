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
from hubbub.auth import Identity
from hubbub.config import Settings
from hubbub.errors import BackendUnavailable, ErrorCode, ProtocolError, Unauthenticated
from hubbub.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, label, signature

logger = logging.getLogger("hubbub.hooks")

HOOK_HEADER = "Hubbub-Hook"
# The request headers a connect hook is shown: what a backend identifies a browser by.
PASSED_HEADERS = ("cookie", "authorization", "origin", "user-agent", "accept-language")
Pattern = Annotated[str, Meta(min_length=1, max_length=256)]


class HookIdentity(msgspec.Struct, forbid_unknown_fields=False):
    """A connect hook's 200 answer."""

    user: Annotated[str, Meta(min_length=1, max_length=256)]
    name: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    rooms: Annotated[list[Pattern], Meta(max_length=100)] = msgspec.field(
        default_factory=lambda: ["*"]
    )
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
        self._client: httpx2.AsyncClient | None = None

    @property
    def active(self) -> bool:
        return bool(self.connect_url or self.publish_url)

    async def start(self) -> None:
        if self.active:
            self._client = httpx2.AsyncClient(
                timeout=self.timeout, headers={"User-Agent": "hubbub-hooks"}
            )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _post(self, kind: str, url: str, payload: dict[str, Any]) -> httpx2.Response:
        assert self._client is not None, "hooks not started"
        body = msgspec.json.encode(payload)
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            HOOK_HEADER: kind,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature(self.secret, stamp, body),
        }
        return await self._client.post(url, content=body, headers=headers)

    # -- connect ---------------------------------------------------------------------

    async def connect(self, headers: Mapping[str, str], client: str | None) -> Identity | None:
        """The identity the backend gives the connection; None if it leaves it to the
        ``hello``. Raises :class:`Unauthenticated` (refused) or
        :class:`BackendUnavailable`."""
        assert self.connect_url is not None
        shown = {name: headers[name] for name in PASSED_HEADERS if name in headers}
        try:
            response = await self._post(
                "connect", self.connect_url, {"headers": shown, "client": client}
            )
        except httpx2.HTTPError as exc:
            logger.warning("connect hook %s: %s", label(self.connect_url), type(exc).__name__)
            raise BackendUnavailable("the backend could not be asked who you are") from None
        if response.status_code == 204:
            return None
        if response.status_code in (401, 403):
            raise Unauthenticated(ErrorCode.UNAUTHORIZED, "the backend refused the connection")
        if response.status_code != 200:
            logger.warning(
                "connect hook %s answered %d", label(self.connect_url), response.status_code
            )
            raise BackendUnavailable("the backend could not be asked who you are")
        try:
            given = msgspec.json.decode(response.content, type=HookIdentity)
        except msgspec.DecodeError as exc:  # ValidationError is one
            logger.warning("connect hook %s: not an identity: %s", label(self.connect_url), exc)
            raise BackendUnavailable("the backend could not be asked who you are") from None
        return Identity(
            user=given.user,
            name=given.name or given.user[:64],
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
            response = await self._post(
                "publish", self.publish_url, {**payload, "text": text, "data": data}
            )
        except httpx2.HTTPError as exc:
            return self._down(type(exc).__name__, text, data, ref)
        if response.status_code in (403, 422):
            try:
                reason = msgspec.json.decode(response.content or b"{}", type=Refusal).reason
            except msgspec.DecodeError:
                reason = Refusal().reason
            raise ProtocolError(ErrorCode.REFUSED, reason, ref)
        if response.status_code != 200:
            return self._down(f"answered {response.status_code}", text, data, ref)
        try:
            change = msgspec.json.decode(response.content or b"{}", type=Change)
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
