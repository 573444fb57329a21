"""SQLite (``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``): the default.

One file, WAL mode, created with its folder on first start. Every statement runs on
one thread of this store's own, so an append is one hand-off from the event loop
(the standard library's ``sqlite3`` is blocking). Several processes on one machine can
share the file: ``BEGIN IMMEDIATE`` takes SQLite's single write lock, which makes the
per-room counter and the insert one atomic step; ``busy_timeout`` lets writers queue
for it. Every change (an edit, a reaction, a moderation action, a read mark) reads the
rows it decides on inside that same lock, so no two processes decide on one row at
once. SQLite cannot be shared between machines: use PostgreSQL for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from hubbub.protocol import (
    UNREAD_CAP,
    Message,
    Moderation,
    Person,
    RoomEvent,
    RoomSummary,
    timestamp,
)
from hubbub.stores import chat
from hubbub.stores.base import (
    SEND_ID_SECONDS,
    AlreadySent,
    Deployment,
    OutboxEvent,
    Retention,
    RoomSettings,
    Store,
    read_window,
)
from hubbub.stores.chat import Membership, MessageChange, ModerationChange, Row

T = TypeVar("T")
logger = logging.getLogger(__name__)

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
    # 3: chat: every kind of event in the stream (its author, the message it changes,
    # the rest as a JSON object), direct-message rooms and receipts, and membership
    """
    ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
    ALTER TABLE messages ADD COLUMN user_id TEXT;
    ALTER TABLE messages ADD COLUMN target INTEGER;
    ALTER TABLE messages ADD COLUMN extra TEXT;
    CREATE INDEX messages_kind ON messages (room, kind, seq);
    CREATE INDEX messages_target ON messages (room, target) WHERE target IS NOT NULL;
    ALTER TABLE rooms ADD COLUMN dm TEXT;
    ALTER TABLE rooms ADD COLUMN receipts INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE room_members (
        room TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'member', banned INTEGER NOT NULL DEFAULT 0,
        muted INTEGER NOT NULL DEFAULT 0, read_seq INTEGER NOT NULL DEFAULT 0,
        forgotten INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (room, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX room_members_user ON room_members (user_id);
    """,
    # 4: the ids of sends, kept per user and room for a day, so a resend stores nothing
    """
    CREATE TABLE send_ids (
        room TEXT NOT NULL, user_id TEXT NOT NULL, send_id TEXT NOT NULL,
        seq INTEGER NOT NULL, ts TEXT NOT NULL, PRIMARY KEY (room, user_id, send_id)
    ) WITHOUT ROWID;
    CREATE INDEX send_ids_ts ON send_ids (room, ts);
    """,
    # 5: the webhooks' outbox, one row per event and target, and who delivers each target
    """
    CREATE TABLE outbox (
        number INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, room TEXT NOT NULL,
        body BLOB NOT NULL, created TEXT NOT NULL
    );
    CREATE INDEX outbox_target ON outbox (target, number);
    CREATE TABLE outbox_leases (
        target TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL
    ) WITHOUT ROWID;
    """,
]
PRUNE_EVERY = 100  # seqs per room between retention passes
DEPTH_CAP = 10_000  # outbox events counted at most (the gauge says 'this many or more')
BUSY_TIMEOUT_MS = 10_000  # how long a write waits for another process's lock

COLUMNS = "seq, kind, sender, text, ts, user_id, target, extra"
# The unread messages after read seq {read} of room {room} for user {user}, at most
# UNREAD_CAP of them. A tombstone's extra starts with "deleted" (see _extra_json), so a
# prefix finds it without parsing JSON.
UNREAD = """
SELECT count(*) FROM (
    SELECT 1 FROM messages x
    WHERE x.room = {room} AND x.kind = 'message' AND x.seq > {read}
    AND (x.user_id IS NULL OR x.user_id != {user})
    AND (x.extra IS NULL OR x.extra NOT LIKE '{{"deleted":true%')
    LIMIT {cap}
)
"""
UNREAD_OF_ROOM = UNREAD.format(room="?", read="?", user="?", cap=UNREAD_CAP)
USER_ROOMS = f"""
SELECT m.room, coalesce(r.last_seq, 0), m.read_seq, m.role, r.dm,
    ({UNREAD.format(room="m.room", read="m.read_seq", user="m.user_id", cap=UNREAD_CAP)})
FROM room_members m LEFT JOIN rooms r ON r.name = m.room
WHERE m.user_id = ? AND NOT m.forgotten AND NOT m.banned
ORDER BY m.room
"""
JOIN = (
    "INSERT INTO room_members (room, user_id, name) VALUES (?, ?, ?) "
    # a banned user's hidden membership stays hidden
    "ON CONFLICT (room, user_id) DO UPDATE SET name = excluded.name, "
    "forgotten = forgotten AND banned "
    "RETURNING role, banned, muted, read_seq"
)
ERASED = '{"deleted":true}'  # the extra of an edit whose message is deleted


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
        # Group commit: writes asked for while the store's thread is busy wait here, and
        # the next transaction takes all of them.
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._writes_lock = threading.Lock()  # the loop's thread adds, the store's takes

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._thread is not None and self._db is not None, "store not started"
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, db)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction (holding SQLite's write lock throughout) and
        return once it is committed. Writes that wait meanwhile share one transaction
        (group commit), each in a savepoint of its own: one that raises changes nothing
        and fails alone; a failed commit fails them all."""
        assert self._thread is not None and self._db is not None, "store not started"
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        with self._writes_lock:
            self._writes.append((fn, done))
            first = len(self._writes) == 1  # the first to wait: a transaction is due
        if first:  # (submitted, not awaited: _commit hands every outcome to its future)
            self._thread.submit(self._commit, self._db, loop)
        return await done

    def _commit(self, db: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        # On the store's thread. Once the list is taken, a write asked for schedules the
        # next transaction.
        with self._writes_lock:
            batch, self._writes = self._writes, []
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            alone = len(batch) == 1  # the transaction is its savepoint
            for fn, done in batch:
                if not alone:
                    db.execute("SAVEPOINT one")
                try:
                    outcomes.append((done, fn(db), None))
                except BaseException as exc:  # handed to its caller
                    db.execute("ROLLBACK" if alone else "ROLLBACK TO one")
                    outcomes.append((done, None, exc))
                if not alone:
                    db.execute("RELEASE one")
            if db.in_transaction:
                db.execute("COMMIT")
        except BaseException as exc:  # handed to every caller
            outcomes = [(done, None, exc) for _, done in batch]
            with contextlib.suppress(sqlite3.Error):  # (a failed rollback fails nobody twice)
                if db.in_transaction:
                    db.execute("ROLLBACK")
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, outcomes)

    async def start(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubbub-sqlite")
        self._db, self._deployment = await asyncio.get_running_loop().run_in_executor(
            self._thread, self._open
        )

    def _open(self) -> tuple[sqlite3.Connection, Deployment]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _wal(db)
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

    async def append(
        self,
        room: str,
        sender: str,
        text: str,
        ts: str,
        *,
        user: str | None = None,
        reply_to: int | None = None,
        data: dict[str, Any] | None = None,
        send_id: str | None = None,
    ) -> Message:
        row = chat.message_row(
            sender, text, ts, user=user, reply_to=reply_to, data=data, send_id=send_id
        )
        retention, targets = self.retention, self.webhook_targets
        key = (room, user or "", send_id)

        def append(db: sqlite3.Connection) -> None:
            if send_id is not None:
                kept = db.execute(
                    "SELECT seq, ts FROM send_ids WHERE room = ? AND user_id = ? AND send_id = ?",
                    key,
                ).fetchone()
                if kept is not None:
                    raise AlreadySent(int(kept[0]), str(kept[1]))
            if reply_to is not None:
                chat.check_reply(_select(db, room, reply_to))
            _insert(db, room, row, retention, targets)
            if send_id is not None:
                db.execute("INSERT INTO send_ids VALUES (?, ?, ?, ?, ?)", (*key, row.seq, ts))

        await self._write(append)
        message = chat.event_of(room, row)
        assert isinstance(message, Message)
        return message

    async def sent_before(self, room: str, user: str | None, send_id: str) -> AlreadySent | None:
        kept = await self._run(
            lambda db: db.execute(
                "SELECT seq, ts FROM send_ids WHERE room = ? AND user_id = ? AND send_id = ?",
                (room, user or "", send_id),
            ).fetchone()
        )
        return None if kept is None else AlreadySent(int(kept[0]), str(kept[1]))

    async def change(self, room: str, change: MessageChange, ts: str) -> RoomEvent | None:
        retention, targets = self.retention, self.webhook_targets

        def apply(db: sqlite3.Connection) -> Row | None:
            decided = chat.change_message(_select(db, room, change.seq), change)
            if decided is None:
                return None
            state, event = decided
            chat.settle_ts(state, event, ts)
            db.execute(
                "UPDATE messages SET text = ?, extra = ? WHERE room = ? AND seq = ?",
                (state.text, chat.extra_json(state.extra), room, state.seq),
            )
            if isinstance(change, chat.DeleteChange):
                # without ANALYZE's statistics SQLite would scan the whole room
                db.execute(
                    "UPDATE messages INDEXED BY messages_target SET text = '', extra = ? "
                    "WHERE room = ? AND target = ? AND kind = 'edit'",
                    (ERASED, room, state.seq),
                )
            _insert(db, room, event, retention, targets)
            return event

        event = await self._write(apply)
        return None if event is None else chat.event_of(room, event)

    async def moderate(self, room: str, change: ModerationChange, ts: str) -> Moderation:
        retention, targets = self.retention, self.webhook_targets

        def apply(db: sqlite3.Connection) -> Row:
            standing, event = chat.moderate(_member(db, room, change.member), change)
            db.execute(
                "UPDATE room_members SET role = ?, banned = ?, muted = ?, "
                "forgotten = forgotten OR ? WHERE room = ? AND user_id = ?",
                (
                    standing.role,
                    standing.banned,
                    standing.muted,
                    change.action == "kick",  # a kick ends the membership
                    room,
                    change.member,
                ),
            )
            event.ts = ts
            _insert(db, room, event, retention, targets)
            return event

        moderation = chat.event_of(room, await self._write(apply))
        assert isinstance(moderation, Moderation)
        return moderation

    async def read(
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        messages_only: bool = False,
    ) -> list[RoomEvent]:
        low, high, backwards = read_window(after, before)

        def read(db: sqlite3.Connection) -> list[RoomEvent]:
            order = "DESC" if backwards else "ASC"
            only = "AND kind = 'message' " if messages_only else ""
            rows = db.execute(
                f"SELECT {COLUMNS} FROM messages WHERE room = ? AND seq > ? AND seq < ? "
                f"{only}ORDER BY seq {order} LIMIT ?",
                (room, low, high, limit),
            ).fetchall()
            if backwards:
                rows.reverse()
            return [chat.event_of(room, _row(row)) for row in rows]

        return await self._run(read)

    async def last_seq(self, room: str) -> int:
        return await self._run(lambda db: _last_seq(db, room))

    async def rooms(self) -> list[tuple[str, int]]:
        def rooms(db: sqlite3.Connection) -> list[tuple[str, int]]:
            # a direct-message room is made (seq 0) before its first message
            rows = db.execute(
                "SELECT name, last_seq FROM rooms WHERE last_seq > 0 ORDER BY name"
            ).fetchall()
            return [(str(name), int(seq)) for name, seq in rows]

        return await self._run(rooms)

    async def join_member(self, room: str, user: str, name: str) -> tuple[Membership, bool]:
        def join(db: sqlite3.Connection) -> tuple[Membership, bool]:
            before = db.execute(
                "SELECT forgotten FROM room_members WHERE room = ? AND user_id = ?", (room, user)
            ).fetchone()
            standing = _membership(db.execute(JOIN, (room, user, name)).fetchone())
            return standing, not standing.banned and (before is None or bool(before[0]))

        return await self._write(join)

    async def forget_member(self, room: str, user: str) -> None:
        def forget(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE room_members SET forgotten = 1 WHERE room = ? AND user_id = ?",
                (room, user),
            )

        await self._write(forget)

    async def membership(self, room: str, user: str) -> Membership | None:
        return await self._run(lambda db: _member(db, room, user))

    async def standings(self, room: str) -> dict[str, Membership]:
        def standings(db: sqlite3.Connection) -> dict[str, Membership]:
            rows = db.execute(
                "SELECT user_id, role, banned, muted, read_seq FROM room_members "
                "WHERE room = ? AND (role != 'member' OR banned OR muted)",
                (room,),
            ).fetchall()
            return {str(row[0]): _membership(row[1:]) for row in rows}

        return await self._run(standings)

    async def mark_read(self, room: str, user: str, seq: int) -> tuple[int, int]:
        def mark(db: sqlite3.Connection) -> tuple[int, int]:
            highest = max(0, min(seq, _last_seq(db, room)))
            (read,) = db.execute(
                "INSERT INTO room_members (room, user_id, name, read_seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (room, user_id) DO UPDATE "
                "SET read_seq = max(read_seq, excluded.read_seq) RETURNING read_seq",
                (room, user, user, highest),
            ).fetchone()
            return int(read), _unread(db, room, int(read), user)

        return await self._write(mark)

    async def user_rooms(self, user: str) -> list[RoomSummary]:
        def user_rooms(db: sqlite3.Connection) -> list[RoomSummary]:
            return [
                RoomSummary(
                    room=room,
                    seq=int(seq),
                    read=int(read),
                    unread=int(unread),
                    role=role,
                    dm=None if dm is None else list(chat.people(dm)),
                )
                for room, seq, read, role, dm, unread in db.execute(USER_ROOMS, (user,))
            ]

        return await self._run(user_rooms)

    async def open_dm(self, people: list[Person]) -> str:
        by_user = {person.user: person for person in people}
        ordered = [by_user[user] for user in sorted(by_user)]
        room = chat.dm_room(list(by_user))
        dm = chat.people_json(ordered)

        def open_dm(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO rooms (name, last_seq, dm, receipts) VALUES (?, 0, ?, 1) "
                "ON CONFLICT (name) DO UPDATE SET dm = excluded.dm, receipts = 1 "
                "WHERE rooms.dm IS NULL",
                (room, dm),
            )
            for person in ordered:
                db.execute(JOIN, (room, person.user, person.name)).fetchall()

        await self._write(open_dm)
        return room

    async def room_settings(self, room: str) -> RoomSettings:
        def settings(db: sqlite3.Connection) -> RoomSettings:
            row = db.execute("SELECT dm, receipts FROM rooms WHERE name = ?", (room,)).fetchone()
            if row is None:
                return RoomSettings()
            dm, receipts = row
            return RoomSettings(dm=None if dm is None else chat.people(dm), receipts=bool(receipts))

        return await self._run(settings)

    async def set_receipts(self, room: str, on: bool) -> None:
        def set_receipts(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO rooms (name, last_seq, receipts) VALUES (?, 0, ?) "
                "ON CONFLICT (name) DO UPDATE SET receipts = excluded.receipts",
                (room, on),
            )

        await self._write(set_receipts)

    async def enqueue(self, room: str, body: bytes) -> None:
        if not self.webhook_targets:
            return
        rows = [(target, room, body, timestamp()) for target in self.webhook_targets]
        await self._write(
            lambda db: db.executemany(
                "INSERT INTO outbox (target, room, body, created) VALUES (?, ?, ?, ?)", rows
            )
        )

    async def outbox_lease(self, target: str, owner: str, seconds: float) -> bool:
        def lease(db: sqlite3.Connection) -> bool:
            now = time.time()
            taken = db.execute(
                "INSERT INTO outbox_leases VALUES (?, ?, ?) ON CONFLICT (target) DO UPDATE "
                "SET owner = excluded.owner, until = excluded.until "
                "WHERE outbox_leases.owner = excluded.owner OR outbox_leases.until < ? "
                "RETURNING 1",
                (target, owner, now + seconds, now),
            ).fetchone()
            return taken is not None

        return await self._write(lease)

    async def outbox_batch(self, target: str, limit: int) -> list[OutboxEvent]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT number, body, created FROM outbox WHERE target = ? ORDER BY number LIMIT ?",
                (target, limit),
            ).fetchall()
        )
        return [OutboxEvent(int(n), bytes(body), str(created)) for n, body, created in rows]

    async def outbox_done(self, target: str, number: int) -> None:
        await self._write(
            lambda db: db.execute(
                "DELETE FROM outbox WHERE target = ? AND number = ?", (target, number)
            )
        )

    async def outbox_depth(self, target: str) -> tuple[int, str | None]:
        def depth(db: sqlite3.Connection) -> tuple[int, str | None]:
            # Both from the index, and bounded: this runs before every batch.
            (count,) = db.execute(
                "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE target = ? LIMIT ?)",
                (target, DEPTH_CAP),
            ).fetchone()
            oldest = db.execute(
                "SELECT created FROM outbox WHERE target = ? ORDER BY number LIMIT 1", (target,)
            ).fetchone()
            return int(count), None if oldest is None else str(oldest[0])

        return await self._run(depth)


def _row(values: tuple[Any, ...]) -> Row:
    seq, kind, sender, text, ts, user, target, extra = values
    return Row(
        seq=int(seq),
        kind=kind,
        sender=sender,
        text=text,
        ts=ts,
        user=user,
        target=target,
        extra=msgspec.json.decode(extra, type=dict[str, Any]) if extra else {},
    )


def _select(db: sqlite3.Connection, room: str, seq: int) -> Row | None:
    values = db.execute(
        f"SELECT {COLUMNS} FROM messages WHERE room = ? AND seq = ?", (room, seq)
    ).fetchone()
    return None if values is None else _row(values)


def _wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode. SQLite refuses that at once, without waiting out the
    busy timeout, while another connection (another worker migrating a new file) holds
    the write lock: so wait here, as long as the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    told = False
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            if not told:
                logger.debug("waiting for another process's write lock")
                told = True
            time.sleep(0.01)


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for done, result, exc in outcomes:
        if done.cancelled():
            continue  # its caller went; the write stands (or failed) all the same
        if exc is None:
            done.set_result(result)
        else:
            done.set_exception(exc)


def _insert(
    db: sqlite3.Connection, room: str, row: Row, retention: Retention, targets: tuple[str, ...]
) -> None:
    """Store ``row`` as the room's next event, setting its ``seq``; and in the outbox of
    each webhook target."""
    (seq,) = db.execute(
        "INSERT INTO rooms (name, last_seq) VALUES (?, 1) ON CONFLICT (name) "
        "DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
        (room,),
    ).fetchone()
    row.seq = int(seq)
    db.execute(
        f"INSERT INTO messages (room, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            room,
            row.seq,
            row.kind,
            row.sender,
            row.text,
            row.ts,
            row.user,
            row.target,
            chat.extra_json(row.extra),
        ),
    )
    if targets:
        body = chat.webhook_body(room, row)
        db.executemany(
            "INSERT INTO outbox (target, room, body, created) VALUES (?, ?, ?, ?)",
            [(target, room, body, row.ts) for target in targets],
        )
    if row.seq % PRUNE_EVERY == 0:
        _prune(db, room, row.seq, retention)


def _last_seq(db: sqlite3.Connection, room: str) -> int:
    row = db.execute("SELECT last_seq FROM rooms WHERE name = ?", (room,)).fetchone()
    return int(row[0]) if row else 0


def _membership(values: tuple[Any, ...]) -> Membership:
    role, banned, muted, read = values
    return Membership(role=role, banned=bool(banned), muted=bool(muted), read=int(read))


def _member(db: sqlite3.Connection, room: str, user: str) -> Membership | None:
    values = db.execute(
        "SELECT role, banned, muted, read_seq FROM room_members WHERE room = ? AND user_id = ?",
        (room, user),
    ).fetchone()
    return None if values is None else _membership(values)


def _unread(db: sqlite3.Connection, room: str, read: int, user: str) -> int:
    (count,) = db.execute(UNREAD_OF_ROOM, (room, read, user)).fetchone()
    return int(count)


def _prune(db: sqlite3.Connection, room: str, seq: int, retention: Retention) -> None:
    kept = datetime.now(UTC) - timedelta(seconds=SEND_ID_SECONDS)
    db.execute("DELETE FROM send_ids WHERE room = ? AND ts < ?", (room, timestamp(kept)))
    if retention.max_messages:
        db.execute(
            "DELETE FROM messages WHERE room = ? AND seq <= ?",
            (room, seq - retention.max_messages),
        )
    if retention.max_age_seconds:
        cutoff = datetime.now(UTC) - timedelta(seconds=retention.max_age_seconds)
        db.execute("DELETE FROM messages WHERE room = ? AND ts < ?", (room, timestamp(cutoff)))
