"""A store made by the previous version (schema 1) is upgraded in place, nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from hubbub.stores import store_from_url
from tests.services import temporary_database

# The schema exactly as version 1 (commit 88a16ce) made it, and rows as it wrote them.
SQLITE_V1 = """
CREATE TABLE rooms (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
    text TEXT NOT NULL, ts TEXT NOT NULL, PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE INDEX messages_ts ON messages (ts);
INSERT INTO rooms VALUES ('lobby', 2), ('other', 1);
INSERT INTO messages VALUES ('lobby', 1, 'ann', 'one', '2026-11-25T09:30:00.000Z');
INSERT INTO messages VALUES ('lobby', 2, 'bob', 'two', '2026-11-25T09:30:01.000Z');
INSERT INTO messages VALUES ('other', 1, 'ann', 'elsewhere', '2026-11-25T09:30:02.000Z');
PRAGMA user_version = 1;
"""

POSTGRES_V1 = [
    "CREATE TABLE hubbub_schema (version integer NOT NULL)",
    """CREATE TABLE hubbub_rooms (name text PRIMARY KEY, last_seq bigint NOT NULL);
    CREATE TABLE hubbub_messages (
        room text NOT NULL, seq bigint NOT NULL, sender text NOT NULL,
        text text NOT NULL, ts text NOT NULL, PRIMARY KEY (room, seq)
    );
    CREATE INDEX hubbub_messages_ts ON hubbub_messages (ts);""",
    "INSERT INTO hubbub_schema VALUES (1)",
    "INSERT INTO hubbub_rooms VALUES ('lobby', 2), ('other', 1)",
    """INSERT INTO hubbub_messages VALUES
        ('lobby', 1, 'ann', 'one', '2026-11-25T09:30:00.000Z'),
        ('lobby', 2, 'bob', 'two', '2026-11-25T09:30:01.000Z'),
        ('other', 1, 'ann', 'elsewhere', '2026-11-25T09:30:02.000Z')""",
]


async def check_upgraded(url: str) -> None:
    store = store_from_url(url)
    await store.start()
    try:
        assert [(m.seq, m.sender, m.text) for m in await store.read("lobby")] == [
            (1, "ann", "one"),
            (2, "bob", "two"),
        ]
        assert await store.rooms() == [("lobby", 2), ("other", 1)]
        assert (await store.append("lobby", "cy", "three", "2026-12-01T00:00:00.000Z")).seq == 3
        epoch = store.deployment.epoch
    finally:
        await store.stop()
    again = store_from_url(url)
    await again.start()
    try:
        assert again.deployment.epoch == epoch  # made once, at the upgrade
        assert [m.text for m in await again.read("lobby")] == ["one", "two", "three"]
    finally:
        await again.stop()


async def test_sqlite_store_of_version_1_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "hubbub.db"
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_V1)
    await check_upgraded(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


async def test_postgres_store_of_version_1_is_upgraded_in_place() -> None:
    async with temporary_database() as url:
        conn = await asyncpg.connect(url)
        try:
            for statement in POSTGRES_V1:
                await conn.execute(statement)
        finally:
            await conn.close()
        await check_upgraded(url)
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT max(version) FROM hubbub_schema") == 2
        finally:
            await conn.close()
