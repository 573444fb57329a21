"""A store made by an earlier version (schema 1, 2 or 3) is upgraded in place, nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from hubbub.errors import ErrorCode, ProtocolError
from hubbub.protocol import Delete, Message, Person, Reaction, RoomEvent
from hubbub.stores import store_from_url
from hubbub.stores.base import AlreadySent
from hubbub.stores.chat import DeleteChange, EditChange, Membership, ReactChange
from tests.services import temporary_database

VERSION = 5  # the schema this code makes

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

# The schema exactly as version 2 (commit 100c0bd: migrations 1 and 2) made it, with its
# deployment's identity and rows as it wrote them.
EPOCH = "0123456789abcdef"
SECRET = "ab" * 32
SQLITE_V2 = f"""
CREATE TABLE rooms (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
    text TEXT NOT NULL, ts TEXT NOT NULL, PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE INDEX messages_ts ON messages (ts);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('epoch', '{EPOCH}'), ('secret', '{SECRET}');
INSERT INTO rooms VALUES ('lobby', 3), ('other', 1);
INSERT INTO messages VALUES ('lobby', 1, 'ann', 'one', '2026-11-25T09:30:00.000Z');
INSERT INTO messages VALUES ('lobby', 2, 'bob', 'two 🎉', '2026-11-25T09:30:01.000Z');
INSERT INTO messages VALUES ('lobby', 3, 'ann', 'three', '2026-11-25T09:30:02.000Z');
INSERT INTO messages VALUES ('other', 1, 'ann', 'elsewhere', '2026-11-25T09:30:03.000Z');
PRAGMA user_version = 2;
"""

POSTGRES_V2 = [
    "CREATE TABLE hubbub_schema (version integer NOT NULL)",
    """CREATE TABLE hubbub_rooms (name text PRIMARY KEY, last_seq bigint NOT NULL);
    CREATE TABLE hubbub_messages (
        room text NOT NULL, seq bigint NOT NULL, sender text NOT NULL,
        text text NOT NULL, ts text NOT NULL, PRIMARY KEY (room, seq)
    );
    CREATE INDEX hubbub_messages_ts ON hubbub_messages (ts);""",
    "INSERT INTO hubbub_schema (version) VALUES (1)",
    "CREATE TABLE hubbub_meta (key text PRIMARY KEY, value text NOT NULL);",
    "INSERT INTO hubbub_schema (version) VALUES (2)",
    f"INSERT INTO hubbub_meta VALUES ('epoch', '{EPOCH}'), ('secret', '{SECRET}')",
    "INSERT INTO hubbub_rooms VALUES ('lobby', 3), ('other', 1)",
    """INSERT INTO hubbub_messages VALUES
        ('lobby', 1, 'ann', 'one', '2026-11-25T09:30:00.000Z'),
        ('lobby', 2, 'bob', 'two 🎉', '2026-11-25T09:30:01.000Z'),
        ('lobby', 3, 'ann', 'three', '2026-11-25T09:30:02.000Z'),
        ('other', 1, 'ann', 'elsewhere', '2026-11-25T09:30:03.000Z')""",
]
TS = "2026-12-01T00:00:00.000Z"

# The schema exactly as version 3 (commit cf44955: migrations 1 to 3) made it, and the
# rows its store wrote for: two members' messages, a reply with data, an edit, a
# reaction, a deleted message, a role, a ban, a read mark, a forgotten room, a direct
# message and read receipts (made by running that commit's SQLiteStore).
DM = "dm:97049da546495606"
V3_EPOCH, V3_SECRET = (
    "faa49360cfae83be",
    "4181b20097f6a6bc362488c1d1085c1eba1edf50c95001273857bf28b2e86596",
)
SQLITE_V3_SCHEMA = """
CREATE TABLE messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
    text TEXT NOT NULL, ts TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'message', user_id TEXT,
    target INTEGER, extra TEXT, PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE room_members (
    room TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'member', banned INTEGER NOT NULL DEFAULT 0,
    muted INTEGER NOT NULL DEFAULT 0, read_seq INTEGER NOT NULL DEFAULT 0,
    forgotten INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (room, user_id)
) WITHOUT ROWID;
CREATE TABLE rooms (
    name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, dm TEXT,
    receipts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_ts ON messages (ts);
CREATE INDEX messages_kind ON messages (room, kind, seq);
CREATE INDEX messages_target ON messages (room, target) WHERE target IS NOT NULL;
CREATE INDEX room_members_user ON room_members (user_id);
PRAGMA user_version = 3;
"""
POSTGRES_V3_SCHEMA = [
    "CREATE TABLE hubbub_schema (version integer NOT NULL)",
    """CREATE TABLE hubbub_rooms (name text PRIMARY KEY, last_seq bigint NOT NULL);
    CREATE TABLE hubbub_messages (
        room text NOT NULL, seq bigint NOT NULL, sender text NOT NULL,
        text text NOT NULL, ts text NOT NULL, PRIMARY KEY (room, seq)
    );
    CREATE INDEX hubbub_messages_ts ON hubbub_messages (ts);""",
    "CREATE TABLE hubbub_meta (key text PRIMARY KEY, value text NOT NULL);",
    """ALTER TABLE hubbub_messages
        ADD COLUMN kind text NOT NULL DEFAULT 'message',
        ADD COLUMN user_id text,
        ADD COLUMN target bigint,
        ADD COLUMN extra text;
    CREATE INDEX hubbub_messages_kind ON hubbub_messages (room, kind, seq);
    CREATE INDEX hubbub_messages_target ON hubbub_messages (room, target)
        WHERE target IS NOT NULL;
    ALTER TABLE hubbub_rooms
        ADD COLUMN dm text,
        ADD COLUMN receipts boolean NOT NULL DEFAULT false;
    CREATE TABLE hubbub_room_members (
        room text NOT NULL, user_id text NOT NULL, name text NOT NULL,
        role text NOT NULL DEFAULT 'member', banned boolean NOT NULL DEFAULT false,
        muted boolean NOT NULL DEFAULT false, read_seq bigint NOT NULL DEFAULT 0,
        forgotten boolean NOT NULL DEFAULT false, PRIMARY KEY (room, user_id)
    );
    CREATE INDEX hubbub_room_members_user ON hubbub_room_members (user_id);""",
    "INSERT INTO hubbub_schema (version) VALUES (1), (2), (3)",
]
V3_ROWS: dict[str, list[tuple[object, ...]]] = {
    "rooms": [("lobby", 8, None, True), (DM, 1, '[["ann","Ann"],["bob","Bob"]]', True)],
    "messages": [
        (DM, 1, "Ann", "psst", "2026-11-30T10:00:09.000Z", "message", "ann", None, None),
        (
            "lobby",
            1,
            "Ann",
            "hello!",
            "2026-11-30T10:00:01.000Z",
            "message",
            "ann",
            None,
            '{"edited":"2026-11-30T10:00:03.000Z"}',
        ),
        (
            "lobby",
            2,
            "Bob",
            "hi ann",
            "2026-11-30T10:00:02.000Z",
            "message",
            "bob",
            None,
            '{"reply_to":1,"data":{"mentions":["ann"]},"reactions":{"👍":["ann"]}}',
        ),
        ("lobby", 3, "Ann", "hello!", "2026-11-30T10:00:03.000Z", "edit", "ann", 1, None),
        (
            "lobby",
            4,
            "Ann",
            "",
            "2026-11-30T10:00:04.000Z",
            "reaction",
            "ann",
            2,
            '{"emoji":"👍","added":true}',
        ),
        (
            "lobby",
            5,
            "Bob",
            "",
            "2026-11-30T10:00:05.000Z",
            "message",
            "bob",
            None,
            '{"deleted":true}',
        ),
        ("lobby", 6, "Bob", "", "2026-11-30T10:00:06.000Z", "delete", "bob", 5, None),
        (
            "lobby",
            7,
            "server",
            "",
            "2026-11-30T10:00:07.000Z",
            "moderation",
            "server",
            None,
            '{"action":"role","member":"ann","role":"moderator"}',
        ),
        (
            "lobby",
            8,
            "Ann",
            "",
            "2026-11-30T10:00:08.000Z",
            "moderation",
            "ann",
            None,
            '{"action":"ban","member":"eve","reason":"spam"}',
        ),
    ],
    "meta": [("epoch", V3_EPOCH), ("secret", V3_SECRET)],
    "room_members": [
        (DM, "ann", "Ann", "member", False, False, 0, False),
        (DM, "bob", "Bob", "member", False, False, 0, False),
        ("lobby", "ann", "Ann", "moderator", False, False, 0, False),
        ("lobby", "bob", "Bob", "member", False, False, 4, False),
        ("lobby", "eve", "Eve", "member", True, False, 0, False),
        ("old", "bob", "Bob", "member", False, False, 0, True),
    ],
}


def messages(events: list[RoomEvent]) -> list[Message]:
    """``events``, each of which must be a message."""
    assert all(isinstance(e, Message) for e in events)
    return [e for e in events if isinstance(e, Message)]


async def check_upgraded(url: str) -> None:
    store = store_from_url(url)
    await store.start()
    try:
        assert [(m.seq, m.sender, m.text) for m in messages(await store.read("lobby"))] == [
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
        assert [m.text for m in messages(await again.read("lobby"))] == ["one", "two", "three"]
    finally:
        await again.stop()


async def check_upgraded_from_v2(url: str) -> None:
    store = store_from_url(url)
    await store.start()
    try:
        assert (store.deployment.epoch, store.deployment.secret) == (EPOCH, SECRET)
        old = await store.read("lobby")
        assert old == [
            Message(room="lobby", seq=1, sender="ann", text="one", ts="2026-11-25T09:30:00.000Z"),
            Message(
                room="lobby", seq=2, sender="bob", text="two 🎉", ts="2026-11-25T09:30:01.000Z"
            ),
            Message(room="lobby", seq=3, sender="ann", text="three", ts="2026-11-25T09:30:02.000Z"),
        ]
        assert all(m.user is None for m in messages(old))
        assert [m.text for m in messages(await store.read("other"))] == ["elsewhere"]
        assert await store.rooms() == [("lobby", 3), ("other", 1)]

        # the new features work on the old rows, and every event continues the seq
        new = await store.append("lobby", "Cy", "four", TS, user="cy", reply_to=2)
        assert (new.seq, new.user, new.reply_to) == (4, "cy", 2)
        reaction = await store.change("lobby", ReactChange(1, "cy", "Cy", "👍"), TS)
        assert isinstance(reaction, Reaction) and (reaction.seq, reaction.target) == (5, 1)
        with pytest.raises(ProtocolError) as refused:  # no author: only a moderator may
            await store.change("lobby", DeleteChange(2, "bob", "bob"), TS)
        assert refused.value.code == ErrorCode.NOT_YOURS
        with pytest.raises(ProtocolError) as refused:
            await store.change("lobby", EditChange(3, "ann", "ann", "edited"), TS)
        assert refused.value.code == ErrorCode.NOT_YOURS
        delete = await store.change("lobby", DeleteChange(2, "mod", "Mod", moderator=True), TS)
        assert isinstance(delete, Delete) and (delete.seq, delete.target) == (6, 2)
        assert await store.last_seq("lobby") == 6
        await store.join_member("lobby", "cy", "Cy")
        assert await store.mark_read("lobby", "cy", 0) == (0, 2)  # 1 and 3: 2 is deleted
    finally:
        await store.stop()
    again = store_from_url(url)
    await again.start()
    try:
        assert again.deployment.epoch == EPOCH
        current = await again.read("lobby", messages_only=True)
        assert [(m.seq, m.text, m.deleted) for m in messages(current)] == [
            (1, "one", False),
            (2, "", True),
            (3, "three", False),
            (4, "four", False),
        ]
        assert isinstance(current[0], Message) and current[0].reactions == {"👍": ["cy"]}
        assert [e.seq for e in await again.read("lobby")] == [1, 2, 3, 4, 5, 6]
    finally:
        await again.stop()


async def test_sqlite_store_of_version_1_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "hubbub.db"
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_V1)
    await check_upgraded(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION


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
            assert await conn.fetchval("SELECT max(version) FROM hubbub_schema") == VERSION
        finally:
            await conn.close()


async def test_sqlite_store_of_version_2_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "hubbub.db"
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_V2)
    await check_upgraded_from_v2(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION


async def test_postgres_store_of_version_2_is_upgraded_in_place() -> None:
    async with temporary_database() as url:
        conn = await asyncpg.connect(url)
        try:
            for statement in POSTGRES_V2:
                await conn.execute(statement)
        finally:
            await conn.close()
        await check_upgraded_from_v2(url)
        conn = await asyncpg.connect(url)
        try:
            versions = await conn.fetch("SELECT version FROM hubbub_schema ORDER BY version")
            assert [r["version"] for r in versions] == list(range(1, VERSION + 1))
        finally:
            await conn.close()


async def check_upgraded_from_v3(url: str) -> None:
    store = store_from_url(url)
    await store.start()
    try:
        assert (store.deployment.epoch, store.deployment.secret) == (V3_EPOCH, V3_SECRET)
        current = messages(await store.read("lobby", messages_only=True))
        assert [(m.seq, m.user, m.text, m.edited, m.deleted) for m in current] == [
            (1, "ann", "hello!", "2026-11-30T10:00:03.000Z", False),
            (2, "bob", "hi ann", None, False),
            (5, "bob", "", None, True),
        ]
        assert (current[1].reply_to, current[1].data, current[1].reactions) == (
            1,
            {"mentions": ["ann"]},
            {"👍": ["ann"]},
        )
        assert [e.seq for e in await store.read("lobby")] == list(range(1, 9))
        assert (await store.membership("lobby", "ann")) == Membership(role="moderator")
        assert (await store.membership("lobby", "eve")) == Membership(banned=True)
        bob = {r.room: r for r in await store.user_rooms("bob")}
        assert sorted(bob) == [DM, "lobby"]  # "old" stays forgotten
        assert (bob["lobby"].read, bob["lobby"].unread) == (4, 0)  # 5 is deleted
        assert bob[DM].dm == [Person("ann", "Ann"), Person("bob", "Bob")]
        assert (await store.room_settings("lobby")).receipts
        assert await store.open_dm([Person("bob", "Bob"), Person("ann", "Ann")]) == DM
        # the new table works on the old rooms: a send with an id is stored once
        first = await store.append("lobby", "Bob", "once", TS, user="bob", send_id="s-1")
        assert first.seq == 9
        with pytest.raises(AlreadySent) as again:
            await store.append("lobby", "Bob", "once", TS, user="bob", send_id="s-1")
        assert again.value.seq == 9
    finally:
        await store.stop()


async def test_sqlite_store_of_version_3_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "hubbub.db"
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_V3_SCHEMA)
        for table, rows in V3_ROWS.items():
            marks = ", ".join("?" * len(rows[0]))
            db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    await check_upgraded_from_v3(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION


async def test_postgres_store_of_version_3_is_upgraded_in_place() -> None:
    async with temporary_database() as url:
        conn = await asyncpg.connect(url)
        try:
            for statement in POSTGRES_V3_SCHEMA:
                await conn.execute(statement)
            for table, rows in V3_ROWS.items():
                marks = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
                await conn.executemany(f"INSERT INTO hubbub_{table} VALUES ({marks})", rows)
        finally:
            await conn.close()
        await check_upgraded_from_v3(url)
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT max(version) FROM hubbub_schema") == VERSION
        finally:
            await conn.close()
