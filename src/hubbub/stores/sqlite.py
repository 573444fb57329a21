"""SQLite (``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``): the default.

One file, WAL mode, created with its folder on first start. Every statement runs on
one thread of this store's own, so an append is one hand-off from the event loop
(the standard library's ``sqlite3`` is blocking). Several processes on one machine can
share the file: ``BEGIN IMMEDIATE`` takes SQLite's single write lock, which makes the
per-room counter and the insert one atomic step; ``busy_timeout`` lets writers queue
for it. SQLite cannot be shared between machines: use PostgreSQL for that.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from hubbub.protocol import Message, timestamp
from hubbub.stores.base import Deployment, Retention, Store, read_window

T = TypeVar("T")

MIGRATIONS = [
    # 1: rooms with their counters, and messages keyed by (room, seq)
    """
    CREATE TABLE rooms (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
    CREATE TABLE messages (
        room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
        text TEXT NOT NULL, ts TEXT NOT NULL, PRIMARY KEY (room, seq)
    ) WITHOUT ROWID;
    CREATE INDEX messages_ts ON messages (ts);
    """,
    # 2: the deployment's identity (epoch, guest-token secret), made once
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    """,
]
PRUNE_EVERY = 100  # appends per room between retention passes


def path_of(url: str) -> Path:
    """The file a ``sqlite://`` URL names (three slashes relative, four absolute)."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ValueError(f"no file in {url!r}; e.g. sqlite:///data/hubbub.db")
    return Path(path)


class SqliteStore(Store):
    """The embedded store (see the module doc)."""

    def __init__(self, url: str, retention: Retention | None = None) -> None:
        super().__init__(url, retention)
        self.path = path_of(url)
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._thread is not None and self._db is not None, "store not started"
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, db)

    async def start(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubbub-sqlite")
        self._db, self._deployment = await asyncio.get_running_loop().run_in_executor(
            self._thread, self._open
        )

    def _open(self) -> tuple[sqlite3.Connection, Deployment]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            fresh = Deployment.new()
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?), ('secret', ?)",
                (fresh.epoch, fresh.secret),
            )
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
        return db, Deployment(epoch=meta["epoch"], secret=meta["secret"])

    async def stop(self) -> None:
        thread, db = self._thread, self._db
        self._thread = self._db = None
        if thread is not None and db is not None:
            await asyncio.get_running_loop().run_in_executor(thread, db.close)
        if thread is not None:
            thread.shutdown(wait=True)

    async def append(self, room: str, sender: str, text: str, ts: str) -> Message:
        retention = self.retention

        def append(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                (seq,) = db.execute(
                    "INSERT INTO rooms (name, last_seq) VALUES (?, 1) ON CONFLICT (name) "
                    "DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
                    (room,),
                ).fetchone()
                db.execute(
                    "INSERT INTO messages (room, seq, sender, text, ts) VALUES (?, ?, ?, ?, ?)",
                    (room, seq, sender, text, ts),
                )
                if seq % PRUNE_EVERY == 0:
                    _prune(db, room, seq, retention)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return int(seq)

        seq = await self._run(append)
        return Message(room=room, seq=seq, sender=sender, text=text, ts=ts)

    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[Message]:
        low, high, backwards = read_window(after, before)

        def read(db: sqlite3.Connection) -> list[tuple[int, str, str, str]]:
            order = "DESC" if backwards else "ASC"
            rows = db.execute(
                "SELECT seq, sender, text, ts FROM messages WHERE room = ? AND seq > ? "
                f"AND seq < ? ORDER BY seq {order} LIMIT ?",
                (room, low, high, limit),
            ).fetchall()
            return rows[::-1] if backwards else rows

        rows = await self._run(read)
        return [Message(room=room, seq=s, sender=f, text=t, ts=ts) for s, f, t, ts in rows]

    async def last_seq(self, room: str) -> int:
        def last(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT last_seq FROM rooms WHERE name = ?", (room,)).fetchone()
            return int(row[0]) if row else 0

        return await self._run(last)

    async def rooms(self) -> list[tuple[str, int]]:
        def rooms(db: sqlite3.Connection) -> list[tuple[str, int]]:
            rows = db.execute("SELECT name, last_seq FROM rooms ORDER BY name").fetchall()
            return [(str(name), int(seq)) for name, seq in rows]

        return await self._run(rooms)


def _prune(db: sqlite3.Connection, room: str, seq: int, retention: Retention) -> None:
    if retention.max_messages:
        db.execute(
            "DELETE FROM messages WHERE room = ? AND seq <= ?",
            (room, seq - retention.max_messages),
        )
    if retention.max_age_seconds:
        cutoff = datetime.now(UTC) - timedelta(seconds=retention.max_age_seconds)
        db.execute("DELETE FROM messages WHERE room = ? AND ts < ?", (room, timestamp(cutoff)))
