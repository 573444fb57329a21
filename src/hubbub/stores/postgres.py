"""PostgreSQL (``postgresql://user@host/db``) through an asyncpg pool: history shared by
every machine.

An append is one statement: it bumps the room's counter row and inserts the message.
The counter row stays locked until that statement commits, so appenders of one room
queue on it: ``seq`` has no holes (a SEQUENCE would leave some on rollback) and the
messages of a room commit in ``seq`` order, so whoever sees ``seq`` N can read N-1.

A change (an edit, a reaction, a moderation action) is one transaction: it locks the
row it decides on (``SELECT ... FOR UPDATE``), writes the new state, and stores its event
with the same statement as an append, last, so the counter row is held only briefly.
Every transaction locks a message or member row before the counter row, never after
it, so none waits on another in a cycle.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
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
    # 3: chat: every kind of event in the stream (its author, the message it changes,
    # the rest as a JSON object), direct-message rooms and receipts, and membership.
    # extra is text, not jsonb: jsonb reorders keys (reactions keep their order) and
    # refuses \u0000, which a message's data may hold.
    """
    ALTER TABLE hubbub_messages
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
    CREATE INDEX hubbub_room_members_user ON hubbub_room_members (user_id);
    """,
    # 4: the ids of sends, kept per user and room for a day, so a resend stores nothing
    """
    CREATE TABLE hubbub_send_ids (
        room text NOT NULL, user_id text NOT NULL, send_id text NOT NULL,
        seq bigint NOT NULL, ts text NOT NULL, PRIMARY KEY (room, user_id, send_id)
    );
    CREATE INDEX hubbub_send_ids_ts ON hubbub_send_ids (room, ts);
    """,
    # 5: the webhooks' outbox, one row per event and target, and who delivers each target
    """
    CREATE TABLE hubbub_outbox (
        number bigserial PRIMARY KEY, target text NOT NULL, room text NOT NULL,
        body bytea NOT NULL, created text NOT NULL
    );
    CREATE INDEX hubbub_outbox_target ON hubbub_outbox (target, number);
    CREATE TABLE hubbub_outbox_leases (
        target text PRIMARY KEY, owner text NOT NULL, until double precision NOT NULL
    );
    """,
]
MIGRATION_LOCK = 0x6875_6262  # pg_advisory_xact_lock key: one migrator at a time
PRUNE_EVERY = 100
DEPTH_CAP = 10_000  # outbox events counted at most (the gauge says 'this many or more')

COLUMNS = "seq, kind, sender, text, ts, user_id, target, extra"
APPEND = """
WITH counter AS (
    INSERT INTO hubbub_rooms (name, last_seq) VALUES ($1, 1)
    ON CONFLICT (name) DO UPDATE SET last_seq = hubbub_rooms.last_seq + 1
    RETURNING last_seq
)
INSERT INTO hubbub_messages (room, seq, kind, sender, text, ts, user_id, target, extra)
SELECT $1, last_seq, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint, $8::text
FROM counter
RETURNING seq
"""
# The unread messages after read seq {read} of room {room} for user {user}, at most
# UNREAD_CAP of them. A tombstone's extra starts with "deleted" (see _extra_json), so a
# prefix finds it without parsing JSON (PostgreSQL's parser refuses \u0000).
UNREAD = """
SELECT count(*) FROM (
    SELECT 1 FROM hubbub_messages x
    WHERE x.room = {room} AND x.kind = 'message' AND x.seq > {read}
    AND (x.user_id IS NULL OR x.user_id <> {user})
    AND (x.extra IS NULL OR x.extra NOT LIKE '{{"deleted":true%')
    LIMIT {cap}
) unread
"""
UNREAD_OF_ROOM = UNREAD.format(room="$1", read="$2", user="$3", cap=UNREAD_CAP)
USER_ROOMS = f"""
SELECT m.room, coalesce(r.last_seq, 0) AS seq, m.read_seq, m.role, r.dm,
    ({UNREAD.format(room="m.room", read="m.read_seq", user="m.user_id", cap=UNREAD_CAP)})
    AS unread
FROM hubbub_room_members m LEFT JOIN hubbub_rooms r ON r.name = m.room
WHERE m.user_id = $1 AND NOT m.forgotten AND NOT m.banned
ORDER BY m.room
"""
JOIN = """
WITH before AS (
    SELECT forgotten FROM hubbub_room_members WHERE room = $1 AND user_id = $2
)
INSERT INTO hubbub_room_members (room, user_id, name) VALUES ($1, $2, $3)
ON CONFLICT (room, user_id) DO UPDATE SET name = excluded.name,
    forgotten = hubbub_room_members.forgotten AND hubbub_room_members.banned
RETURNING role, banned, muted, read_seq, coalesce((SELECT forgotten FROM before), true) AS new
"""
ERASED = '{"deleted":true}'  # the extra of an edit whose message is deleted


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
        targets = self.webhook_targets
        if reply_to is None and send_id is None and not targets:
            await _insert(self.pool, room, row)
        else:
            key = (room, user or "", send_id)
            async with self.pool.acquire() as conn, conn.transaction():
                if send_id is not None:
                    # Claimed first: a second process storing the same key waits here for
                    # the first one's commit, then finds it.
                    claimed = await conn.fetchval(
                        "INSERT INTO hubbub_send_ids VALUES ($1, $2, $3, 0, $4) "
                        "ON CONFLICT DO NOTHING RETURNING 1",
                        *key,
                        ts,
                    )
                    if claimed is None:
                        kept = await conn.fetchrow(
                            "SELECT seq, ts FROM hubbub_send_ids "
                            "WHERE room = $1 AND user_id = $2 AND send_id = $3",
                            *key,
                        )
                        raise AlreadySent(int(kept["seq"]), str(kept["ts"]))
                if reply_to is not None:
                    chat.check_reply(await _select(conn, room, reply_to))
                await _insert(conn, room, row, self.webhook_targets)
                if send_id is not None:
                    await conn.execute(
                        "UPDATE hubbub_send_ids SET seq = $4 "
                        "WHERE room = $1 AND user_id = $2 AND send_id = $3",
                        *key,
                        row.seq,
                    )
        await self._prune_at(room, row.seq)
        message = chat.event_of(room, row)
        assert isinstance(message, Message)
        return message

    async def sent_before(self, room: str, user: str | None, send_id: str) -> AlreadySent | None:
        kept = await self.pool.fetchrow(
            "SELECT seq, ts FROM hubbub_send_ids "
            "WHERE room = $1 AND user_id = $2 AND send_id = $3 AND seq > 0",
            room,
            user or "",
            send_id,
        )
        return None if kept is None else AlreadySent(int(kept["seq"]), str(kept["ts"]))

    async def change(self, room: str, change: MessageChange, ts: str) -> RoomEvent | None:
        async with self.pool.acquire() as conn, conn.transaction():
            target = await _select(conn, room, change.seq, " FOR UPDATE")
            decided = chat.change_message(target, change)
            if decided is None:
                return None
            state, event = decided
            chat.settle_ts(state, event, ts)
            await conn.execute(
                "UPDATE hubbub_messages SET text = $3, extra = $4 WHERE room = $1 AND seq = $2",
                room,
                state.seq,
                state.text,
                chat.extra_json(state.extra),
            )
            if isinstance(change, chat.DeleteChange):
                await conn.execute(
                    "UPDATE hubbub_messages SET text = '', extra = $3 "
                    "WHERE room = $1 AND target = $2 AND kind = 'edit'",
                    room,
                    state.seq,
                    ERASED,
                )
            await _insert(conn, room, event, self.webhook_targets)
        await self._prune_at(room, event.seq)
        return chat.event_of(room, event)

    async def moderate(self, room: str, change: ModerationChange, ts: str) -> Moderation:
        async with self.pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(
                "SELECT role, banned, muted, read_seq FROM hubbub_room_members "
                "WHERE room = $1 AND user_id = $2 FOR UPDATE",
                room,
                change.member,
            )
            member = None if record is None else _membership(record)
            standing, event = chat.moderate(member, change)
            await conn.execute(
                "UPDATE hubbub_room_members SET role = $3, banned = $4, muted = $5, "
                "forgotten = forgotten OR $6 WHERE room = $1 AND user_id = $2",
                room,
                change.member,
                standing.role,
                standing.banned,
                standing.muted,
                change.action == "kick",  # a kick ends the membership
            )
            event.ts = ts
            await _insert(conn, room, event, self.webhook_targets)
        await self._prune_at(room, event.seq)
        moderation = chat.event_of(room, event)
        assert isinstance(moderation, Moderation)
        return moderation

    async def _prune_at(self, room: str, seq: int) -> None:
        # after the commit, outside the transaction that holds the counter row: a prune
        # locks message rows, which a change locks *before* the counter row
        if seq % PRUNE_EVERY:
            return
        kept = datetime.now(UTC) - timedelta(seconds=SEND_ID_SECONDS)
        await self.pool.execute(
            "DELETE FROM hubbub_send_ids WHERE room = $1 AND ts < $2", room, timestamp(kept)
        )
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
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        messages_only: bool = False,
    ) -> list[RoomEvent]:
        low, high, backwards = read_window(after, before)
        order = "DESC" if backwards else "ASC"
        only = "AND kind = 'message' " if messages_only else ""
        records = await self.pool.fetch(
            f"SELECT {COLUMNS} FROM hubbub_messages WHERE room = $1 AND seq > $2 "
            f"AND seq < $3 {only}ORDER BY seq {order} LIMIT $4",
            room,
            low,
            high,
            limit,
        )
        if backwards:
            records.reverse()
        return [chat.event_of(room, _row(record)) for record in records]

    async def last_seq(self, room: str) -> int:
        value = await self.pool.fetchval("SELECT last_seq FROM hubbub_rooms WHERE name = $1", room)
        return int(value or 0)

    async def rooms(self) -> list[tuple[str, int]]:
        # a direct-message room is made (seq 0) before its first message
        rows = await self.pool.fetch(
            "SELECT name, last_seq FROM hubbub_rooms WHERE last_seq > 0 ORDER BY name"
        )
        return [(str(r["name"]), int(r["last_seq"])) for r in rows]

    async def join_member(self, room: str, user: str, name: str) -> tuple[Membership, bool]:
        record = await self.pool.fetchrow(JOIN, room, user, name)
        standing = _membership(record)
        return standing, not standing.banned and bool(record["new"])

    async def forget_member(self, room: str, user: str) -> None:
        await self.pool.execute(
            "UPDATE hubbub_room_members SET forgotten = true WHERE room = $1 AND user_id = $2",
            room,
            user,
        )

    async def membership(self, room: str, user: str) -> Membership | None:
        record = await self.pool.fetchrow(
            "SELECT role, banned, muted, read_seq FROM hubbub_room_members "
            "WHERE room = $1 AND user_id = $2",
            room,
            user,
        )
        return None if record is None else _membership(record)

    async def standings(self, room: str) -> dict[str, Membership]:
        records = await self.pool.fetch(
            "SELECT user_id, role, banned, muted, read_seq FROM hubbub_room_members "
            "WHERE room = $1 AND (role <> 'member' OR banned OR muted)",
            room,
        )
        return {str(record["user_id"]): _membership(record) for record in records}

    async def mark_read(self, room: str, user: str, seq: int) -> tuple[int, int]:
        async with self.pool.acquire() as conn, conn.transaction():
            last = await conn.fetchval("SELECT last_seq FROM hubbub_rooms WHERE name = $1", room)
            read = int(
                await conn.fetchval(
                    "INSERT INTO hubbub_room_members (room, user_id, name, read_seq) "
                    "VALUES ($1, $2, $2, $3) ON CONFLICT (room, user_id) DO UPDATE "
                    "SET read_seq = greatest(hubbub_room_members.read_seq, excluded.read_seq) "
                    "RETURNING read_seq",
                    room,
                    user,
                    max(0, min(seq, int(last or 0))),
                )
            )
            unread = await conn.fetchval(UNREAD_OF_ROOM, room, read, user)
        return read, int(unread)

    async def user_rooms(self, user: str) -> list[RoomSummary]:
        records = await self.pool.fetch(USER_ROOMS, user)
        return [
            RoomSummary(
                room=record["room"],
                seq=int(record["seq"]),
                read=int(record["read_seq"]),
                unread=int(record["unread"]),
                role=record["role"],
                dm=None if record["dm"] is None else list(chat.people(record["dm"])),
            )
            for record in records
        ]

    async def open_dm(self, people: list[Person]) -> str:
        by_user = {person.user: person for person in people}
        ordered = [by_user[user] for user in sorted(by_user)]
        room = chat.dm_room(list(by_user))
        async with self.pool.acquire() as conn, conn.transaction():
            for person in ordered:  # member rows first (see the module doc), in one order
                await conn.fetchrow(JOIN, room, person.user, person.name)
            await conn.execute(
                "INSERT INTO hubbub_rooms (name, last_seq, dm, receipts) VALUES ($1, 0, $2, true) "
                "ON CONFLICT (name) DO UPDATE SET dm = excluded.dm, receipts = true "
                "WHERE hubbub_rooms.dm IS NULL",
                room,
                chat.people_json(ordered),
            )
        return room

    async def room_settings(self, room: str) -> RoomSettings:
        record = await self.pool.fetchrow(
            "SELECT dm, receipts FROM hubbub_rooms WHERE name = $1", room
        )
        if record is None:
            return RoomSettings()
        dm = record["dm"]
        return RoomSettings(dm=None if dm is None else chat.people(dm), receipts=record["receipts"])

    async def set_receipts(self, room: str, on: bool) -> None:
        await self.pool.execute(
            "INSERT INTO hubbub_rooms (name, last_seq, receipts) VALUES ($1, 0, $2) "
            "ON CONFLICT (name) DO UPDATE SET receipts = excluded.receipts",
            room,
            on,
        )

    async def enqueue(self, room: str, body: bytes) -> None:
        if not self.webhook_targets:
            return
        now = timestamp()
        await self.pool.executemany(
            "INSERT INTO hubbub_outbox (target, room, body, created) VALUES ($1, $2, $3, $4)",
            [(target, room, body, now) for target in self.webhook_targets],
        )

    async def outbox_lease(self, target: str, owner: str, seconds: float) -> bool:
        # The database's clock, not this machine's: processes on machines whose clocks
        # differ must agree when a lease ran out.
        taken = await self.pool.fetchval(
            "WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) "
            "INSERT INTO hubbub_outbox_leases SELECT $1, $2, t + $3 FROM now "
            "ON CONFLICT (target) DO UPDATE SET owner = excluded.owner, until = excluded.until "
            "WHERE hubbub_outbox_leases.owner = excluded.owner "
            "OR hubbub_outbox_leases.until < (SELECT t FROM now) RETURNING 1",
            target,
            owner,
            seconds,
        )
        return taken is not None

    async def outbox_batch(self, target: str, limit: int) -> list[OutboxEvent]:
        records = await self.pool.fetch(
            "SELECT number, body, created FROM hubbub_outbox WHERE target = $1 "
            "ORDER BY number LIMIT $2",
            target,
            limit,
        )
        return [OutboxEvent(int(r["number"]), bytes(r["body"]), r["created"]) for r in records]

    async def outbox_done(self, target: str, number: int) -> None:
        await self.pool.execute(
            "DELETE FROM hubbub_outbox WHERE target = $1 AND number = $2", target, number
        )

    async def outbox_depth(self, target: str) -> tuple[int, str | None]:
        # Both from the index, and bounded: this runs before every batch.
        count = await self.pool.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM hubbub_outbox WHERE target = $1 LIMIT $2) AS s",
            target,
            DEPTH_CAP,
        )
        oldest = await self.pool.fetchval(
            "SELECT created FROM hubbub_outbox WHERE target = $1 ORDER BY number LIMIT 1", target
        )
        return int(count), oldest


def _row(record: Any) -> Row:
    extra = record["extra"]
    return Row(
        seq=int(record["seq"]),
        kind=record["kind"],
        sender=record["sender"],
        text=record["text"],
        ts=record["ts"],
        user=record["user_id"],
        target=record["target"],
        extra=msgspec.json.decode(extra, type=dict[str, Any]) if extra else {},
    )


def _membership(record: Any) -> Membership:
    return Membership(
        role=record["role"],
        banned=record["banned"],
        muted=record["muted"],
        read=int(record["read_seq"]),
    )


async def _select(conn: Any, room: str, seq: int, lock: str = "") -> Row | None:
    record = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM hubbub_messages WHERE room = $1 AND seq = $2{lock}", room, seq
    )
    return None if record is None else _row(record)


async def _insert(conn: Any, room: str, row: Row, targets: tuple[str, ...] = ()) -> None:
    """Store ``row`` as the room's next event (on a pool or in a transaction), setting
    its ``seq``; with webhook ``targets`` (in a transaction only), in each one's outbox."""
    row.seq = int(
        await conn.fetchval(
            APPEND,
            room,
            row.kind,
            row.sender,
            row.text,
            row.ts,
            row.user,
            row.target,
            chat.extra_json(row.extra),
        )
    )
    if targets:
        body = chat.webhook_body(room, row)
        await conn.executemany(
            "INSERT INTO hubbub_outbox (target, room, body, created) VALUES ($1, $2, $3, $4)",
            [(target, room, body, row.ts) for target in targets],
        )
