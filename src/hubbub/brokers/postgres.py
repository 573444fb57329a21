"""PostgreSQL LISTEN/NOTIFY (``postgresql://``, ``postgres://``) through asyncpg.

Each process holds three connections: one that LISTENs (once per Hubbub channel, on
``hubbub:<name>``, or ``hubbub#<sha256 prefix>`` when that would not be a printable ASCII
identifier of at most 63 bytes), one that publishes, and one that fetches stored payloads.

A NOTIFY payload is text shorter than 8000 bytes, without NUL. So each message is sent
as a marker, the sender's node id and an 8-digit counter (PostgreSQL folds identical
notifications of one transaction into one; the counter keeps them apart), then either:

- ``=`` the payload itself, when it is valid UTF-8 without NUL and fits; or
- ``@`` the id of a row of ``hubbub_broker_payloads`` (a ``bytea``) that the same
  statement INSERTs. The listener fetches such rows, several per query, on the fetch
  connection before handing the batch on, so messages still reach the hub in NOTIFY
  order; it never fetches its own process's rows.

A batch is one ``executemany``: one round trip and one implicit transaction, whose
NOTIFYs are delivered together, in order, at commit. Before a batch that stores rows,
at most once per ``purge_interval``, the publisher deletes rows older than
``payload_ttl`` (5 minutes); a listener that lags further behind loses those messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from hubbub.brokers.remote import NODE_ID_BYTES, RemoteBroker

logger = logging.getLogger("hubbub.broker")

PREFIX = "hubbub:"
HASHED_PREFIX = "hubbub#"  # unlike PREFIX, so a hash never equals a plain name
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1
NOTIFY_MAX_BYTES = 7999  # pg_notify refuses payloads of 8000 bytes or more

INLINE = "="
STORED = "@"
COUNTER_DIGITS = 8
HEADER = 1 + NODE_ID_BYTES + COUNTER_DIGITS  # marker, node id, counter
FETCH_MAX = 32  # stored payloads fetched per query, to bound the memory of one batch

TABLE = "hubbub_broker_payloads"
# Serialises the creation of the table: concurrent CREATE TABLE IF NOT EXISTS can fail
# on the unique index of pg_type. The digits spell "hubbub" and a version.
TABLE_LOCK = 0x6875_6262_7562_0001
CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
# $3 is NULL for an inline message; the INSERT then adds nothing and the NOTIFY carries
# $2 alone. One statement for both kinds keeps a batch in a single executemany.
SEND = f"""
WITH stored AS (
    INSERT INTO {TABLE} (payload) SELECT $3::bytea WHERE $3::bytea IS NOT NULL RETURNING id
)
SELECT pg_notify($1::text, $2::text || coalesce((SELECT id FROM stored)::text, ''))"""
FETCH = f"SELECT id, payload FROM {TABLE} WHERE id = ANY($1::bigint[])"
PURGE = f"DELETE FROM {TABLE} WHERE created_at < now() - make_interval(secs => $1::float8)"

Note = tuple[str, str]
"""A notification: the Hubbub channel and the NOTIFY text."""


def pg_channel(channel: str) -> str:
    """The PostgreSQL channel that carries Hubbub ``channel``.

    A name that would not fit an identifier, or is not printable ASCII, is replaced by a
    hash: so no name can hold a NUL, a lone surrogate (from a JSON escape) or a character
    that a database in another encoding than UTF8 would refuse.
    """
    name = PREFIX + channel
    if len(name) <= MAX_IDENTIFIER_BYTES and name.isascii() and name.isprintable():
        return name
    digest = hashlib.sha256(channel.encode("utf-8", "surrogatepass")).hexdigest()
    return HASHED_PREFIX + digest[: MAX_IDENTIFIER_BYTES - len(HASHED_PREFIX)]


class PostgresBroker(RemoteBroker):
    """Listens on one connection, publishes on a second and fetches stored payloads on
    a third (see the module doc)."""

    connect_timeout = 5.0
    command_timeout = 30.0  # bounds every query, so a silent server cannot hang a task
    health_interval = 5.0  # an idle listener checks its connection this often
    health_timeout = 5.0
    close_timeout = 2.0
    payload_ttl = 300.0
    purge_interval = 60.0

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._listener: Any = None  # asyncpg.Connection
        self._publisher: Any = None
        self._fetcher: Any = None
        # Every use of the listen connection (LISTEN, UNLISTEN, health check) holds this:
        # asyncpg refuses a second operation while one is in progress.
        self._listen_lock = asyncio.Lock()
        self._inbox: asyncio.Queue[Note | None] | None = None
        self._names: dict[str, str] = {}  # PostgreSQL channel -> Hubbub channel
        self._on_notify: Callable[[Any, int, str, str], None] | None = None
        self._inline_encoding = "utf-8"
        # Keeps identical NOTIFYs of one transaction apart; not RemoteBroker's _counter
        # (the de-duplication counter), which must never wrap.
        self._notify_counter = 0
        self._purged_at = float("-inf")

    # -- connections -----------------------------------------------------------------

    async def _connect(self) -> None:
        # Each connection gets a fresh inbox, so nothing from an old one leaks into it.
        inbox: asyncio.Queue[Note | None] = asyncio.Queue()
        names: dict[str, str] = {}

        def on_notify(_connection: Any, _pid: int, name: str, text: str) -> None:
            channel = names.get(name)
            if channel is not None:
                inbox.put_nowait((channel, text))

        def on_closed(_connection: Any) -> None:
            inbox.put_nowait(None)  # the listener raises when it reaches this

        self._inbox, self._names, self._on_notify = inbox, names, on_notify
        self._listen_lock = asyncio.Lock()
        self._listener = await self._open(on_closed)
        self._publisher = await self._open(on_closed)
        self._fetcher = await self._open(on_closed)
        await self._create_table(self._publisher)
        # Outside UTF8 databases the server would convert inline text; keep it ASCII there.
        encoding = self._publisher.get_settings().server_encoding
        self._inline_encoding = "utf-8" if encoding == "UTF8" else "ascii"

    async def _open(self, on_closed: Callable[[Any], None]) -> Any:
        connection = await asyncpg.connect(
            self.url, timeout=self.connect_timeout, command_timeout=self.command_timeout
        )
        connection.add_termination_listener(on_closed)
        return connection

    async def _create_table(self, connection: Any) -> None:
        # Checking first spares a role that may use the table, but not create one, an error.
        if await connection.fetchval("SELECT to_regclass($1)", TABLE) is not None:
            return
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", TABLE_LOCK)
            await connection.execute(CREATE_TABLE)

    async def _disconnect(self) -> None:
        connections = [c for c in (self._listener, self._publisher, self._fetcher) if c is not None]
        self._listener = self._publisher = self._fetcher = None
        self._inbox = self._on_notify = None
        try:
            await asyncio.gather(*(self._close(c) for c in connections))
        finally:
            # Reached also when cancelled mid-close: abort what did not close gracefully.
            for connection in connections:
                if not connection.is_closed():
                    connection.terminate()

    async def _close(self, connection: Any) -> None:
        with contextlib.suppress(Exception):  # close() aborts the connection on failure
            await connection.close(timeout=self.close_timeout)

    # -- channels --------------------------------------------------------------------

    async def _subscribe_remote(self, channel: str) -> None:
        listener, on_notify, lock = self._listener, self._on_notify, self._listen_lock
        if listener is None or on_notify is None:
            raise ConnectionError("not connected")
        name = pg_channel(channel)
        self._names[name] = channel
        async with lock:
            # LISTEN has taken effect when it returns: deliveries flow from here on.
            await listener.add_listener(name, on_notify)

    async def _unsubscribe_remote(self, channel: str) -> None:
        listener, on_notify, lock = self._listener, self._on_notify, self._listen_lock
        if listener is None or on_notify is None:
            raise ConnectionError("not connected")
        name = pg_channel(channel)
        self._names.pop(name, None)
        async with lock:
            await listener.remove_listener(name, on_notify)

    # -- publishing ------------------------------------------------------------------

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        publisher = self._publisher
        if publisher is None:
            raise ConnectionError("not connected")
        rows = [self._encode(channel, data) for channel, data in batch]
        now = time.monotonic()
        if now - self._purged_at >= self.purge_interval and any(r[2] is not None for r in rows):
            # Before the batch, on the same connection: committed before its NOTIFYs.
            await publisher.execute(PURGE, self.payload_ttl)
            self._purged_at = now
        await publisher.executemany(SEND, rows)

    def _encode(self, channel: str, data: bytes) -> tuple[str, str, bytes | None]:
        """The arguments of ``SEND`` for one message: channel, NOTIFY text, stored bytes."""
        self._notify_counter = (self._notify_counter + 1) % 16**COUNTER_DIGITS
        count = self._notify_counter
        head = data[:NODE_ID_BYTES].decode("ascii") + f"{count:0{COUNTER_DIGITS}x}"
        payload = data[NODE_ID_BYTES:]
        if HEADER + len(payload) <= NOTIFY_MAX_BYTES and b"\x00" not in payload:
            try:
                text = payload.decode(self._inline_encoding)
            except UnicodeDecodeError:
                pass
            else:
                return pg_channel(channel), INLINE + head + text, None
        return pg_channel(channel), STORED + head, payload

    # -- listening -------------------------------------------------------------------

    async def _listen(self) -> None:
        inbox, fetcher = self._inbox, self._fetcher
        if inbox is None or fetcher is None:
            raise ConnectionError("not connected")
        while True:
            if inbox.empty():
                try:
                    first = await asyncio.wait_for(inbox.get(), self.health_interval)
                except TimeoutError:
                    await self._check_listener()
                    continue
            else:
                first = inbox.get_nowait()
            notes: list[Note] = []
            stored = 0
            item = first
            # Take what has arrived, up to FETCH_MAX stored payloads, to fetch them at once.
            while item is not None:
                notes.append(item)
                stored += item[1][:1] == STORED
                if stored >= FETCH_MAX or inbox.empty():
                    break
                item = inbox.get_nowait()
            await self._hand_on(notes, fetcher)
            if item is None:
                raise ConnectionError("connection to PostgreSQL closed")

    async def _check_listener(self) -> None:
        """Raise unless the listen connection answers: a silent peer sends no FIN."""
        listener = self._listener
        if listener is None:
            raise ConnectionError("not connected")
        async with asyncio.timeout(self.health_timeout), self._listen_lock:
            await listener.fetchval("SELECT 1")

    async def _hand_on(self, notes: list[Note], fetcher: Any) -> None:
        """Pass ``notes`` to ``_received`` in order, stored payloads fetched first."""
        own = self.node.decode("ascii")
        wanted: set[int] = set()
        for channel, text in notes:
            row = _row_id(text)
            # Own messages and unsubscribed channels would be dropped by _received anyway.
            if row is not None and text[1 : 1 + NODE_ID_BYTES] != own and channel in self._channels:
                wanted.add(row)
        stored: dict[int, bytes] = {}
        if wanted:
            stored = {row[0]: row[1] for row in await fetcher.fetch(FETCH, list(wanted))}
        lost = 0
        for channel, text in notes:
            node = text[1 : 1 + NODE_ID_BYTES].encode()
            row = _row_id(text)
            if len(text) >= HEADER and text[:1] == INLINE:
                self._received(channel, node + text[HEADER:].encode())
            elif row in stored:
                self._received(channel, node + stored[row])
            elif row in wanted:
                lost += 1
            elif row is None:
                logger.debug("%s: ignoring a foreign notification on %r", self._name, channel)
        if lost:
            logger.warning(
                "%s: %d stored payloads were deleted before they were read (listener more "
                "than %gs behind); dropped",
                self._name,
                lost,
                self.payload_ttl,
            )


def _row_id(text: str) -> int | None:
    """The row a stored message's NOTIFY text refers to; None for any other text."""
    rest = text[HEADER:]
    if text[:1] == STORED and len(text) > HEADER and rest.isascii() and rest.isdigit():
        return int(rest)
    return None
