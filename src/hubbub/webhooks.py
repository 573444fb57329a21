"""Webhooks (``docs/webhooks.md``): signing and checking a request, and the delivery of
one URL's outbox, in order, by whichever process holds its lease.

The events are written into the outbox by the store (a room's events in the transaction
that stores them) and by the hub (``member.joined`` …); :class:`Delivery` only reads,
POSTs and deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2
import msgspec

from hubbub.metrics import Metrics
from hubbub.stores.base import OutboxEvent, Store

logger = logging.getLogger("hubbub.webhooks")

ID_HEADER = "Hubbub-Webhook-Id"
TIMESTAMP_HEADER = "Hubbub-Webhook-Timestamp"
SIGNATURE_HEADER = "Hubbub-Webhook-Signature"
TOLERANCE = 300.0  # seconds a receiver accepts between a request's timestamp and its clock
LEASE_SECONDS = 30.0
POLL_SECONDS = 1.0  # how often a process looks for events other processes wrote
BATCH = 100


MAX_ANSWER = 64 * 1024  # bytes of an answer read; a longer one is a failure


class AnswerTooLarge(Exception):
    """A receiver or backend answered with more than :data:`MAX_ANSWER` bytes."""


async def post(
    client: httpx2.AsyncClient, url: str, body: bytes, headers: dict[str, str], within: float
) -> tuple[int, bytes]:
    """POST ``body``; the status and the answer's body, all within ``within`` seconds
    (else ``TimeoutError``), at most :data:`MAX_ANSWER` bytes of it, never compressed
    (else :class:`AnswerTooLarge`)."""
    async with asyncio.timeout(within):
        async with client.stream(
            "POST", url, content=body, headers={**headers, "Accept-Encoding": "identity"}
        ) as response:
            answer = bytearray()
            async for chunk in response.aiter_raw():
                answer += chunk
                if len(answer) > MAX_ANSWER:
                    raise AnswerTooLarge(f"over {MAX_ANSWER} bytes")
            return response.status_code, bytes(answer)


FAILURES = (httpx2.HTTPError, TimeoutError, AnswerTooLarge)  # what a call may end in


class InvalidSignature(Exception):
    """A webhook request that does not carry a valid, recent signature."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``Hubbub-Webhook-Signature`` header's value: ``v1=`` and the hex HMAC-SHA256,
    keyed with ``secret``, of ``"{timestamp}.{body}"``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The event a webhook request carries, once its signature and timestamp are checked;
    :class:`InvalidSignature` otherwise. ``headers`` is looked up case-insensitively."""
    lowered = {name.lower(): value for name, value in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    # ASCII digits only, and few: "²" is a digit to str.isdigit, and int() of thousands
    # of digits raises; a signature that is not ASCII would make compare_digest raise.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or not given.isascii():
        raise InvalidSignature("no timestamp or no signature")
    if not given:
        raise InvalidSignature("no timestamp or no signature")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise InvalidSignature("the timestamp is too far from now (a replay?)")
    if not hmac.compare_digest(signature(secret, stamp, body), given):
        raise InvalidSignature("the signature does not match")
    event: Any = msgspec.json.decode(body)
    if not isinstance(event, dict):
        raise InvalidSignature("the body is not a JSON object")
    return event


def label(url: str) -> str:
    """``url`` as metrics and logs show it: scheme, host, port and path only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Delivery:
    """Delivers one URL's outbox while this process holds its lease; else waits."""

    def __init__(
        self,
        store: Store,
        url: str,
        secret: str,
        epoch: str,
        metrics: Metrics,
        *,
        timeout: float,
        backoff_max: float,
    ) -> None:
        self.store = store
        self.url = url
        self.secret = secret
        self.epoch = epoch
        self.timeout = timeout
        self.backoff_max = backoff_max
        self.owner = secrets.token_hex(8)  # this process, as the lease knows it
        self.name = label(url)
        self._delivered = metrics.webhook_delivered.labels(url=self.name)
        self._failed = metrics.webhook_failed.labels(url=self.name)
        self._queued = metrics.webhook_queued.labels(url=self.name)
        self._oldest = metrics.webhook_oldest.labels(url=self.name)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was written to the outbox here: look now, not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        async with httpx2.AsyncClient(
            timeout=self.timeout, headers={"User-Agent": "hubbub-webhooks"}
        ) as client:
            while True:
                if await self.store.outbox_lease(self.url, self.owner, LEASE_SECONDS):
                    await self._deliver_batch(client)
                else:
                    self._queued.set(0)  # someone else delivers and counts
                    self._oldest.set(0)
                    self._wake.clear()
                    await self._idle()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def _deliver_batch(self, client: httpx2.AsyncClient) -> None:
        self._wake.clear()  # before reading: a wake from here on is not lost
        await self._count()
        batch = await self.store.outbox_batch(self.url, BATCH)
        if not batch:
            await self._idle()
            return
        lease_until = time.monotonic() + LEASE_SECONDS / 3
        for event in batch:
            await self._deliver(client, event)
            if time.monotonic() > lease_until:
                return  # renew the lease (and count) before going on

    async def _deliver(self, client: httpx2.AsyncClient, event: OutboxEvent) -> None:
        """POST ``event`` until a receiver takes it: the ones after it wait."""
        event_id = f"{self.epoch}-{event.number}"
        body = b'{"id":' + msgspec.json.encode(event_id) + b"," + event.body[1:]
        wait = 1.0
        while True:
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                ID_HEADER: event_id,
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: signature(self.secret, stamp, body),
            }
            try:
                status, _ = await post(client, self.url, body, headers, self.timeout)
                if 200 <= status < 300:
                    break
                reason = f"answered {status}"
            except FAILURES as exc:
                reason = type(exc).__name__
            self._failed.inc()
            await self._count()  # what waits behind it, while the receiver fails
            logger.warning(
                "webhook %s: event %s not delivered (%s); again in %.0f s",
                self.name,
                event_id,
                reason,
                wait,
            )
            # Wait, keeping the lease (a wait longer than it would hand the URL to another
            # process, which would start its backoff over).
            pause = wait * random.uniform(0.8, 1.2)
            wait = min(wait * 2, self.backoff_max)
            while pause > 0:
                await asyncio.sleep(min(pause, LEASE_SECONDS / 3))
                pause -= LEASE_SECONDS / 3
                # Still ours? It could have run out while this process was stalled.
                if not await self.store.outbox_lease(self.url, self.owner, LEASE_SECONDS):
                    return
        await self.store.outbox_done(self.url, event.number)
        self._delivered.inc()

    async def _count(self) -> None:
        waiting, oldest = await self.store.outbox_depth(self.url)
        self._queued.set(waiting)
        if oldest is None:
            self._oldest.set(0)
        else:
            made = datetime.fromisoformat(oldest.replace("Z", "+00:00"))
            self._oldest.set(max(0.0, (datetime.now(UTC) - made).total_seconds()))
