"""PostgreSQL (``postgresql://user@host/db``) through an asyncpg pool: history shared by
every machine.

An append is one statement: it bumps the room's counter row and inserts the message.
The counter row stays locked until that statement commits, so appenders of one room
queue on it: ``seq`` has no holes (a SEQUENCE would leave some on rollback) and the
messages of a room commit in ``seq`` order, so whoever sees ``seq`` N can read N-1.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from hubbub.protocol import Message, timestamp
from hubbub.stores.base import Deployment, Retention, Store, read_window

MIGRATIONS = [
    # 1: rooms with their counters, and messages keyed by (room, seq)
    """
    CREATE TABLE hubbub_rooms (name text PRIMARY KEY, last_seq bigint NOT NULL);
    CREATE TABLE hubbub_messages (
        room text NOT NULL, seq bigint NOT NULL, sender text NOT NULL,
        text text NOT NULL, ts text NOT NULL, PRIMARY KEY (room, seq)
    );
    CREATE INDEX hubbub_messages_ts ON hubbub_messages (ts);
    """,
    # 2: the deployment's identity (epoch, guest-token secret), made once
    """
    CREATE TABLE hubbub_meta (key text PRIMARY KEY, value text NOT NULL);
    """,
]
MIGRATION_LOCK = 0x6875_6262  # pg_advisory_xact_lock key: one migrator at a time
PRUNE_EVERY = 100

APPEND = """
WITH counter AS (
    INSERT INTO hubbub_rooms (name, last_seq) VALUES ($1, 1)
    ON CONFLICT (name) DO UPDATE SET last_seq = hubbub_rooms.last_seq + 1
    RETURNING last_seq
)
INSERT INTO hubbub_messages (room, seq, sender, text, ts)
SELECT $1, last_seq, $2, $3, $4 FROM counter
RETURNING seq
"""


class PostgresStore(Store):
    """History in PostgreSQL (see the module doc)."""

    def __init__(self, url: str, retention: Retention | None = None) -> None:
        super().__init__(url, retention)
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store not started"
        return self._pool

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=10)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS hubbub_schema (version integer NOT NULL)"
            )
            version = await conn.fetchval("SELECT max(version) FROM hubbub_schema") or 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute("INSERT INTO hubbub_schema (version) VALUES ($1)", number)
            fresh = Deployment.new()
            await conn.execute(
                "INSERT INTO hubbub_meta (key, value) VALUES ('epoch', $1), ('secret', $2) "
                "ON CONFLICT (key) DO NOTHING",
                fresh.epoch,
                fresh.secret,
            )
            rows = await conn.fetch("SELECT key, value FROM hubbub_meta")
            meta = {row["key"]: row["value"] for row in rows}
        self._deployment = Deployment(epoch=meta["epoch"], secret=meta["secret"])

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def append(self, room: str, sender: str, text: str, ts: str) -> Message:
        seq = int(await self.pool.fetchval(APPEND, room, sender, text, ts))
        if seq % PRUNE_EVERY == 0 and (
            self.retention.max_messages or self.retention.max_age_seconds
        ):
            await self._prune(room, seq)
        return Message(room=room, seq=seq, sender=sender, text=text, ts=ts)

    async def _prune(self, room: str, seq: int) -> None:
        if self.retention.max_messages:
            await self.pool.execute(
                "DELETE FROM hubbub_messages WHERE room = $1 AND seq <= $2",
                room,
                seq - self.retention.max_messages,
            )
        if self.retention.max_age_seconds:
            cutoff = datetime.now(UTC) - timedelta(seconds=self.retention.max_age_seconds)
            await self.pool.execute(
                "DELETE FROM hubbub_messages WHERE room = $1 AND ts < $2", room, timestamp(cutoff)
            )

    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[Message]:
        low, high, backwards = read_window(after, before)
        order = "DESC" if backwards else "ASC"
        rows = await self.pool.fetch(
            "SELECT seq, sender, text, ts FROM hubbub_messages WHERE room = $1 AND seq > $2 "
            f"AND seq < $3 ORDER BY seq {order} LIMIT $4",
            room,
            low,
            high,
            limit,
        )
        if backwards:
            rows.reverse()
        return [
            Message(room=room, seq=r["seq"], sender=r["sender"], text=r["text"], ts=r["ts"])
            for r in rows
        ]

    async def last_seq(self, room: str) -> int:
        value = await self.pool.fetchval("SELECT last_seq FROM hubbub_rooms WHERE name = $1", room)
        return int(value or 0)

    async def rooms(self) -> list[tuple[str, int]]:
        rows = await self.pool.fetch("SELECT name, last_seq FROM hubbub_rooms ORDER BY name")
        return [(str(r["name"]), int(r["last_seq"])) for r in rows]
