"""The chat part of ``stores/base.py``'s contract (edits, deletes, reactions,
moderation, membership, read state, direct messages), for SQLite and PostgreSQL on
real databases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from hubbub.errors import ErrorCode, ProtocolError
from hubbub.metrics import Metrics
from hubbub.protocol import (
    MAX_REACTIONS,
    UNREAD_CAP,
    Delete,
    Edit,
    Message,
    Moderation,
    Person,
    Reaction,
    RoomEvent,
    RoomSummary,
    timestamp,
)
from hubbub.stores import Retention, Store
from hubbub.stores.base import SEND_ID_SECONDS, AlreadySent, RoomSettings
from hubbub.stores.chat import (
    DeleteChange,
    EditChange,
    Membership,
    MessageChange,
    ModerationChange,
    ReactChange,
    dm_room,
)
from hubbub.stores.sqlite import PRUNE_EVERY
from hubbub.stores.timed import TimedStore

OpenStore = Callable[..., Awaitable[Store]]
TS = "2026-12-01T10:00:00.000Z"
LATER = "2026-12-01T10:05:00.000Z"


async def refused(code: ErrorCode, call: Awaitable[object]) -> None:
    with pytest.raises(ProtocolError) as error:
        await call
    assert error.value.code == code


async def message(store: Store, room: str, seq: int) -> Message:
    """Message ``seq`` of ``room`` in its current state."""
    found = [m for m in await store.read(room, after=seq - 1, limit=1) if m.seq == seq]
    assert found and isinstance(found[0], Message), f"no message {seq}"
    return found[0]


async def edit(store: Store, room: str, seq: int, user: str, text: str, **kw: Any) -> RoomEvent:
    event = await store.change(room, EditChange(seq, user, user.title(), text, **kw), LATER)
    assert event is not None
    return event


async def react(
    store: Store, room: str, seq: int, user: str, emoji: str, *, remove: bool = False
) -> RoomEvent | None:
    return await store.change(room, ReactChange(seq, user, user.title(), emoji, remove), LATER)


def moderation(
    action: str, member: str, actor_role: str = "moderator", **kw: Any
) -> ModerationChange:
    return ModerationChange(action, member, "mod", "Mod", actor_role, **kw)


# -- messages and changes -----------------------------------------------------------


async def test_append_with_user_reply_and_data_round_trips(open_store: OpenStore) -> None:
    store = await open_store()
    first = await store.append("r", "Ann", "hi", TS, user="ann")
    assert first == Message(room="r", seq=1, sender="Ann", text="hi", ts=TS, user="ann")
    data: dict[str, Any] = {
        "🎉": [1, 2.5, -3, {"nested": {"deep": None, "ok": True, "list": []}}],
        "z": "ü \x00 \\u0000 '; DROP TABLE messages; --",
        "a": {},
    }
    reply = await store.append("r", "Bob", "re", TS, user="bob", reply_to=1, data=data)
    assert (reply.seq, reply.user, reply.reply_to, reply.data) == (2, "bob", 1, data)
    stored = await store.read("r")
    assert stored == [first, reply]
    assert isinstance(stored[1], Message) and stored[1].data is not None
    assert list(stored[1].data) == ["🎉", "z", "a"]  # key order too
    plain = await store.append("r", "Cy", "plain", TS)
    assert (plain.user, plain.reply_to, plain.data) == (None, None, None)


async def test_reply_to_must_name_a_message_and_stores_nothing_otherwise(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    await store.append("r", "Ann", "hi", TS, user="ann")
    await refused(ErrorCode.NO_SUCH_MESSAGE, store.append("r", "B", "x", TS, reply_to=9))
    await refused(ErrorCode.NO_SUCH_MESSAGE, store.append("other", "B", "x", TS, reply_to=1))
    assert await store.last_seq("r") == 1 and await store.last_seq("other") == 0
    await react(store, "r", 1, "bob", "👍")  # seq 2: an event, not a message
    await refused(ErrorCode.NO_SUCH_MESSAGE, store.append("r", "B", "x", TS, reply_to=2))
    assert await store.last_seq("r") == 2
    await store.change("r", DeleteChange(1, "ann", "Ann"), LATER)
    assert (await store.append("r", "B", "x", TS, reply_to=1)).seq == 4  # deleted will do
    assert await store.rooms() == [("r", 4)]


async def test_edit_by_its_author_changes_the_current_state(open_store: OpenStore) -> None:
    store = await open_store()
    await store.append("r", "Ann", "helo", TS, user="ann", data={"v": 1})
    await store.append("r", "Bob", "other", TS, user="bob")
    event = await edit(store, "r", 1, "ann", "hello")
    assert event == Edit(
        room="r", seq=3, target=1, text="hello", user="ann", sender="Ann", ts=LATER
    )
    current = await message(store, "r", 1)
    assert (current.text, current.edited, current.data, current.ts) == (
        "hello",
        LATER,
        {"v": 1},
        TS,
    )
    with_data = await edit(store, "r", 1, "ann", "hello!", data={"v": 2})
    assert isinstance(with_data, Edit) and (with_data.seq, with_data.data) == (4, {"v": 2})
    assert (await message(store, "r", 1)).data == {"v": 2}
    assert await store.last_seq("r") == 4


async def test_edit_refusals_store_nothing(open_store: OpenStore) -> None:
    store = await open_store()
    await store.append("r", "Ann", "mine", TS, user="ann")
    await store.append("r", "Old", "no author", TS)  # as stored before user was kept
    await refused(ErrorCode.NOT_YOURS, edit(store, "r", 1, "bob", "theirs"))
    await refused(ErrorCode.NOT_YOURS, edit(store, "r", 2, "old", "theirs"))
    await refused(ErrorCode.NO_SUCH_MESSAGE, edit(store, "r", 99, "ann", "x"))
    await refused(ErrorCode.NO_SUCH_MESSAGE, edit(store, "elsewhere", 1, "ann", "x"))
    assert await store.last_seq("r") == 2
    await edit(store, "r", 1, "ann", "edited")  # seq 3, an edit event
    await refused(ErrorCode.NO_SUCH_MESSAGE, edit(store, "r", 3, "ann", "x"))
    await refused(ErrorCode.NO_SUCH_MESSAGE, react(store, "r", 3, "ann", "👍"))
    await refused(ErrorCode.NO_SUCH_MESSAGE, store.change("r", DeleteChange(3, "ann", "Ann"), TS))
    await store.change("r", DeleteChange(1, "ann", "Ann"), TS)
    await refused(ErrorCode.MESSAGE_DELETED, edit(store, "r", 1, "ann", "back"))
    assert await store.last_seq("r") == 4
    assert (await message(store, "r", 1)).text == ""


async def test_delete_by_author_or_moderator_leaves_a_tombstone(open_store: OpenStore) -> None:
    store = await open_store()
    await store.append("r", "Ann", "secret", TS, user="ann", data={"card": 1})
    await store.append("r", "Bob", "re", TS, user="bob", reply_to=1, data={"x": 1})
    await react(store, "r", 1, "bob", "👍")  # 3
    await edit(store, "r", 1, "ann", "secret 2", data={"card": 2})  # 4
    await edit(store, "r", 1, "ann", "secret 3")  # 5
    await refused(ErrorCode.NOT_YOURS, store.change("r", DeleteChange(1, "bob", "Bob"), TS))
    deleted = await store.change("r", DeleteChange(1, "ann", "Ann"), LATER)
    assert deleted == Delete(room="r", seq=6, target=1, user="ann", sender="Ann", ts=LATER)
    tombstone = await message(store, "r", 1)
    assert tombstone == Message(
        room="r", seq=1, sender="Ann", text="", ts=TS, user="ann", deleted=True
    )
    edits = [e for e in await store.read("r") if isinstance(e, Edit)]
    assert [(e.seq, e.text, e.data, e.deleted) for e in edits] == [
        (4, "", None, True),
        (5, "", None, True),
    ]
    await refused(
        ErrorCode.MESSAGE_DELETED, store.change("r", DeleteChange(1, "ann", "Ann"), LATER)
    )
    by_moderator = await store.change("r", DeleteChange(2, "mod", "Mod", moderator=True), LATER)
    assert isinstance(by_moderator, Delete) and (by_moderator.seq, by_moderator.user) == (7, "mod")
    reply = await message(store, "r", 2)
    assert (reply.text, reply.deleted, reply.data, reply.reply_to) == ("", True, None, 1)


async def test_reactions_add_remove_and_limits(open_store: OpenStore) -> None:
    store = await open_store()
    await store.append("r", "Ann", "hi", TS, user="ann")
    added = await react(store, "r", 1, "bob", "👍")
    assert added == Reaction(
        room="r", seq=2, target=1, emoji="👍", added=True, user="bob", sender="Bob", ts=LATER
    )
    assert await react(store, "r", 1, "bob", "👍") is None  # there already: no event
    assert await react(store, "r", 1, "bob", "🎉", remove=True) is None  # not there
    await react(store, "r", 1, "ann", "👍")
    await react(store, "r", 1, "cy", "👩‍💻")
    assert (await message(store, "r", 1)).reactions == {"👍": ["bob", "ann"], "👩‍💻": ["cy"]}
    removed = await react(store, "r", 1, "bob", "👍", remove=True)
    assert isinstance(removed, Reaction) and (removed.seq, removed.added) == (5, False)
    await react(store, "r", 1, "cy", "👩‍💻", remove=True)
    assert (await message(store, "r", 1)).reactions == {"👍": ["ann"]}
    assert await store.last_seq("r") == 6

    emoji = [chr(0x1F600 + i) for i in range(MAX_REACTIONS - 1)]  # 19 more: 20 in all
    for e in emoji:
        await react(store, "r", 1, "bob", e)
    await refused(ErrorCode.TOO_MANY_REACTIONS, react(store, "r", 1, "bob", "🦄"))
    assert await react(store, "r", 1, "cy", emoji[0]) is not None  # one of the 20: fine
    reactions = (await message(store, "r", 1)).reactions
    assert reactions is not None and list(reactions) == ["👍", *emoji]

    await store.change("r", DeleteChange(1, "ann", "Ann"), LATER)
    await refused(ErrorCode.MESSAGE_DELETED, react(store, "r", 1, "bob", "👍"))
    await refused(ErrorCode.MESSAGE_DELETED, react(store, "r", 1, "ann", "👍", remove=True))
    assert (await message(store, "r", 1)).reactions is None


async def test_read_returns_every_event_in_order_and_messages_only(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    await store.append("r", "Ann", "one", TS, user="ann")  # 1
    await store.join_member("r", "bob", "Bob")
    await react(store, "r", 1, "bob", "👍")  # 2
    await store.append("r", "Bob", "two", TS, user="bob")  # 3
    await edit(store, "r", 1, "ann", "one!")  # 4
    await store.moderate("r", moderation("mute", "bob"), LATER)  # 5
    await store.append("r", "Ann", "three", TS, user="ann")  # 6
    await store.change("r", DeleteChange(3, "bob", "Bob"), LATER)  # 7
    events = await store.read("r")
    assert [(e.seq, type(e).__name__) for e in events] == [
        (1, "Message"),
        (2, "Reaction"),
        (3, "Message"),
        (4, "Edit"),
        (5, "Moderation"),
        (6, "Message"),
        (7, "Delete"),
    ]
    assert [e.seq for e in await store.read("r", after=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in await store.read("r", before=7, limit=2)] == [5, 6]
    messages = await store.read("r", messages_only=True)
    assert all(isinstance(m, Message) for m in messages)
    assert [(m.seq, m.text) for m in messages if isinstance(m, Message)] == [
        (1, "one!"),
        (3, ""),
        (6, "three"),
    ]
    first = messages[0]
    assert isinstance(first, Message) and first.reactions == {"👍": ["bob"]} and first.edited
    # the limit counts messages only, backwards and forwards
    assert [m.seq for m in await store.read("r", before=7, limit=2, messages_only=True)] == [3, 6]
    assert [m.seq for m in await store.read("r", after=1, limit=1, messages_only=True)] == [3]


async def test_retention_prunes_every_kind_on_any_seq(open_store: OpenStore) -> None:
    store = await open_store(Retention(max_messages=30))
    for i in range(1, 100):
        await store.append("r", "Ann", str(i), TS, user="ann")
    assert await react(store, "r", 99, "bob", "👍") is not None  # seq 100: a pass runs
    kept = await store.read("r", limit=1000)
    assert [e.seq for e in kept] == list(range(71, 101))
    assert isinstance(kept[-1], Reaction)
    await refused(ErrorCode.NO_SUCH_MESSAGE, react(store, "r", 5, "bob", "👍"))


# -- sent once -----------------------------------------------------------------------


async def test_a_send_id_stores_the_message_once_per_user_and_room(open_store: OpenStore) -> None:
    store = await open_store()
    first = await store.append("r", "Ann", "hi", TS, user="ann", send_id="k1")
    for text in ("hi", "another text"):  # the id decides, not the text
        with pytest.raises(AlreadySent) as repeat:
            await store.append("r", "Ann", text, LATER, user="ann", send_id="k1")
        assert (repeat.value.seq, repeat.value.ts) == (first.seq, TS)
    # another user's, another room's, the server's (no user) and no id: new messages
    assert (await store.append("r", "Bob", "hi", TS, user="bob", send_id="k1")).seq == 2
    assert (await store.append("s", "Ann", "hi", TS, user="ann", send_id="k1")).seq == 1
    assert (await store.append("r", "bot", "hi", TS, send_id="k1")).seq == 3
    with pytest.raises(AlreadySent):
        await store.append("r", "bot", "hi", TS, send_id="k1")
    assert (await store.append("r", "Ann", "hi", TS, user="ann")).seq == 4
    kept = await store.sent_before("r", "ann", "k1")
    assert kept is not None and (kept.seq, kept.ts) == (1, TS)
    assert await store.sent_before("r", "ann", "k9") is None
    assert await store.sent_before("r", None, "k1") is not None  # the server's (bot's) own
    # deleted since: still a repeat, of that seq
    await store.change("r", DeleteChange(1, "ann", "Ann"), TS)
    with pytest.raises(AlreadySent) as repeat:
        await store.append("r", "Ann", "hi", TS, user="ann", send_id="k1")
    assert repeat.value.seq == 1
    assert await store.last_seq("r") == 5
    # a refused send keeps no id: its retry is stored
    await refused(
        ErrorCode.NO_SUCH_MESSAGE,
        store.append("r", "Ann", "re", TS, user="ann", reply_to=99, send_id="k2"),
    )
    assert (await store.append("r", "Ann", "re", TS, user="ann", reply_to=2, send_id="k2")).seq == 6


async def test_one_send_id_sent_to_several_stores_at_once_is_stored_once(
    open_store: OpenStore,
) -> None:
    stores = [await open_store() for _ in range(2)]  # two processes
    ids = [f"id-{n}" for n in range(20)]
    results = await asyncio.gather(
        *(
            stores[copy].append("r", "Ann", key, TS, user="ann", send_id=key)
            for key in ids
            for copy in (0, 1)
        ),
        return_exceptions=True,
    )
    stored = [r for r in results if isinstance(r, Message)]
    repeats = [r for r in results if isinstance(r, AlreadySent)]
    assert len(stored) == len(repeats) == len(ids), results
    assert sorted(m.text for m in stored) == sorted(ids)
    assert sorted(r.seq for r in repeats) == sorted(m.seq for m in stored)
    assert [m.text for m in await stores[1].read("r")] == [
        m.text for m in sorted(stored, key=lambda m: m.seq)
    ]


async def test_send_ids_are_forgotten_after_a_day(open_store: OpenStore) -> None:
    store = await open_store()
    long_ago = timestamp(datetime.now(UTC) - timedelta(seconds=SEND_ID_SECONDS + 60))
    await store.append("r", "Ann", "old", long_ago, user="ann", send_id="old")
    for n in range(PRUNE_EVERY - 1):  # the room's 100th event prunes
        await store.append("r", "Ann", str(n), TS, user="ann", send_id=f"new-{n}")
    assert (await store.append("r", "Ann", "old", TS, user="ann", send_id="old")).seq == 101
    with pytest.raises(AlreadySent):  # the recent ones are kept
        await store.append("r", "Ann", "0", TS, user="ann", send_id="new-0")


# -- moderation and membership ------------------------------------------------------


async def test_moderation_changes_standing_and_is_an_event(open_store: OpenStore) -> None:
    store = await open_store()
    await store.append("r", "Ann", "hi", TS, user="ann")
    assert await store.join_member("r", "spam", "Spammer") == (Membership(), True)
    await store.mark_read("r", "spam", 1)
    ban = await store.moderate("r", moderation("ban", "spam", reason="spam"), LATER)
    assert ban == Moderation(
        room="r",
        seq=2,
        action="ban",
        member="spam",
        user="mod",
        sender="Mod",
        ts=LATER,
        reason="spam",
    )
    banned = Membership(banned=True, read=1)
    assert await store.membership("r", "spam") == banned
    assert await store.standings("r") == {"spam": banned}
    assert await store.read("r", after=1) == [ban]
    # joining keeps a ban, and the room out of the banned user's list
    assert await store.join_member("r", "spam", "Again") == (banned, False)
    assert await store.user_rooms("spam") == []
    await store.moderate("r", moderation("unban", "spam"), LATER)
    await store.moderate("r", moderation("mute", "spam"), LATER)
    assert await store.standings("r") == {"spam": Membership(muted=True, read=1)}
    await store.moderate("r", moderation("unmute", "spam"), LATER)
    assert await store.standings("r") == {}
    assert [s.room for s in await store.user_rooms("spam")] == ["r"]  # unbanned: listed
    kick = await store.moderate("r", moderation("kick", "spam"), LATER)
    assert (kick.seq, kick.action) == (6, "kick")
    assert await store.membership("r", "spam") == Membership(read=1)
    assert await store.user_rooms("spam") == []  # a kick ends the membership
    assert await store.join_member("r", "spam", "Back") == (Membership(read=1), True)

    role = await store.moderate("r", moderation("role", "spam", "owner", role="moderator"), TS)
    assert (role.seq, role.action, role.role) == (7, "role", "moderator")
    assert await store.standings("r") == {"spam": Membership(role="moderator", read=1)}
    assert await store.last_seq("r") == 7


async def test_moderation_refusals_store_nothing(open_store: OpenStore) -> None:
    store = await open_store()
    await store.append("r", "Ann", "hi", TS, user="ann")
    for user in ("member", "peer", "boss"):
        await store.join_member("r", user, user.title())
    await store.moderate("r", moderation("role", "peer", "owner", role="moderator"), TS)
    await store.moderate("r", moderation("role", "boss", "owner", role="owner"), TS)
    assert await store.last_seq("r") == 3

    forbidden = ErrorCode.FORBIDDEN
    await refused(ErrorCode.NO_SUCH_MEMBER, store.moderate("r", moderation("ban", "nobody"), TS))
    await refused(forbidden, store.moderate("r", moderation("ban", "member", "member"), TS))
    await refused(forbidden, store.moderate("r", moderation("mute", "peer", "moderator"), TS))
    await refused(forbidden, store.moderate("r", moderation("ban", "boss", "moderator"), TS))
    await refused(forbidden, store.moderate("r", moderation("kick", "boss", "owner"), TS))
    await refused(
        forbidden,
        store.moderate("r", moderation("role", "member", "moderator", role="moderator"), TS),
    )
    assert await store.last_seq("r") == 3
    assert await store.standings("r") == {
        "peer": Membership(role="moderator"),
        "boss": Membership(role="owner"),
    }
    # an owner acts on a moderator
    assert (await store.moderate("r", moderation("mute", "peer", "owner"), TS)).seq == 4


async def test_membership_join_forget_and_rejoin(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.membership("r", "ann") is None
    await store.forget_member("r", "ann")  # no row: nothing to do
    assert await store.membership("r", "ann") is None
    assert await store.join_member("r", "ann", "Ann") == (Membership(), True)
    assert await store.join_member("r", "ann", "Ann") == (Membership(), False)  # listed already
    await store.moderate("r", moderation("role", "ann", "owner", role="moderator"), TS)
    assert [s.room for s in await store.user_rooms("ann")] == ["r"]
    await store.forget_member("r", "ann")
    assert await store.user_rooms("ann") == []
    assert await store.membership("r", "ann") == Membership(role="moderator")  # kept
    assert await store.join_member("r", "ann", "Ann B") == (Membership(role="moderator"), True)
    assert [s.room for s in await store.user_rooms("ann")] == ["r"]


# -- read state and the user's rooms ------------------------------------------------


async def test_mark_read_keeps_the_highest_seq_within_the_room(open_store: OpenStore) -> None:
    store = await open_store()
    for i in range(5):
        await store.append("r", "Ann", str(i), TS, user="ann")
    assert await store.mark_read("r", "bob", 3) == (3, 2)  # no member row yet: made
    assert await store.membership("r", "bob") == Membership(read=3)
    assert await store.mark_read("r", "bob", 1) == (3, 2)  # never backwards
    assert await store.mark_read("r", "bob", 99) == (5, 0)  # at most the room's last
    await store.append("r", "Ann", "more", TS, user="ann")
    assert await store.mark_read("r", "bob", 5) == (5, 1)
    assert await store.mark_read("empty", "bob", 7) == (0, 0)


async def test_unread_counts_other_peoples_live_messages_only(open_store: OpenStore) -> None:
    store = await open_store()
    await store.join_member("r", "bob", "Bob")
    await store.append("r", "Ann", "1", TS, user="ann")
    await store.append("r", "Bob", "own", TS, user="bob")
    await store.append("r", "Old", "no author", TS)
    await store.append("r", "Ann", "gone", TS, user="ann")
    await store.change("r", DeleteChange(4, "ann", "Ann"), TS)
    await react(store, "r", 1, "ann", "👍")
    await edit(store, "r", 1, "ann", "1!")
    await store.append("r", "Ann", "data", TS, user="ann", data={"deleted": True})
    assert await store.mark_read("r", "bob", 0) == (0, 3)  # 1, 3 and 8
    assert await store.mark_read("r", "bob", 2) == (2, 2)
    [summary] = await store.user_rooms("bob")
    assert summary == RoomSummary(room="r", seq=8, read=2, unread=2, role="member")


async def test_unread_is_capped(open_store: OpenStore) -> None:
    store = await open_store()
    await store.join_member("r", "bob", "Bob")
    for i in range(UNREAD_CAP + 5):
        await store.append("r", "Ann", str(i), TS, user="ann")
    assert await store.mark_read("r", "bob", 0) == (0, UNREAD_CAP)
    assert (await store.user_rooms("bob"))[0].unread == UNREAD_CAP
    assert await store.mark_read("r", "bob", 10) == (10, UNREAD_CAP - 5)


async def test_user_rooms_lists_memberships_by_name(open_store: OpenStore) -> None:
    store = await open_store()
    for room in ("zeta", "alpha", "mid", "banned", "forgotten"):
        await store.join_member(room, "bob", "Bob")
        await store.append(room, "Ann", "hi", TS, user="ann")
    await store.join_member("quiet", "bob", "Bob")  # no messages yet
    await store.moderate("banned", moderation("ban", "bob"), TS)
    await store.forget_member("forgotten", "bob")
    await store.moderate("mid", moderation("role", "bob", "owner", role="moderator"), TS)
    await store.mark_read("zeta", "bob", 1)
    ann, cy = Person(user="ann", name="Ann"), Person(user="cy", name="Cy")
    dm = await store.open_dm([Person(user="bob", name="Bob"), cy, ann])
    assert await store.user_rooms("bob") == [
        RoomSummary(room="alpha", seq=1, read=0, unread=1, role="member"),
        RoomSummary(
            room=dm,
            seq=0,
            read=0,
            unread=0,
            role="member",
            dm=[ann, Person(user="bob", name="Bob"), cy],
        ),
        RoomSummary(room="mid", seq=2, read=0, unread=1, role="moderator"),
        RoomSummary(room="quiet", seq=0, read=0, unread=0, role="member"),
        RoomSummary(room="zeta", seq=1, read=1, unread=0, role="member"),
    ]
    assert await store.user_rooms("nobody") == []
    await store.moderate("banned", moderation("unban", "bob"), TS)
    assert "banned" in [s.room for s in await store.user_rooms("bob")]


# -- direct messages and room settings ----------------------------------------------


async def test_open_dm_is_idempotent_and_symmetric(open_store: OpenStore) -> None:
    store = await open_store()
    ann, bob = Person(user="ann", name="Ann"), Person(user="bob", name="Bob")
    room = await store.open_dm([bob, ann])
    assert room == dm_room(["ann", "bob"]) and room.startswith("dm:")
    assert await store.open_dm([ann, bob]) == room
    assert await store.open_dm([ann, bob, ann]) == room
    assert await store.open_dm([ann, Person(user="cy", name="Cy")]) != room
    assert await store.room_settings(room) == RoomSettings(dm=(ann, bob), receipts=True)
    assert await store.membership(room, "ann") == Membership()
    assert await store.membership(room, "bob") == Membership()
    assert await store.rooms() == []  # no messages yet
    assert await store.last_seq(room) == 0

    assert (await store.append(room, "Ann", "hi", TS, user="ann")).seq == 1
    assert await store.rooms() == [(room, 1)]
    assert await store.open_dm([bob, ann]) == room
    assert await store.last_seq(room) == 1
    await store.forget_member(room, "bob")
    assert await store.user_rooms("bob") == []
    await store.open_dm([ann, bob])  # a new dm brings it back
    [summary] = await store.user_rooms("bob")
    assert (summary.room, summary.seq, summary.unread, summary.dm) == (room, 1, 1, [ann, bob])


async def test_room_settings_and_receipts(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.room_settings("lobby") == RoomSettings()
    await store.set_receipts("lobby", True)
    assert await store.room_settings("lobby") == RoomSettings(receipts=True)
    assert await store.rooms() == [] and await store.last_seq("lobby") == 0
    assert (await store.append("lobby", "Ann", "hi", TS)).seq == 1
    await store.set_receipts("lobby", False)
    assert await store.room_settings("lobby") == RoomSettings(receipts=False)
    assert await store.rooms() == [("lobby", 1)]
    await store.append("busy", "Ann", "hi", TS)
    await store.set_receipts("busy", True)
    assert await store.room_settings("busy") == RoomSettings(receipts=True)
    assert await store.last_seq("busy") == 1
    room = await store.open_dm([Person(user="a", name="A"), Person(user="b", name="B")])
    await store.set_receipts(room, False)
    settings = await store.room_settings(room)
    assert settings.dm is not None and not settings.receipts


# -- several processes at once ------------------------------------------------------


async def test_concurrent_changes_on_several_stores_stay_consistent(
    open_store: OpenStore,
) -> None:
    stores = [await open_store() for _ in range(2)]  # two "processes"
    await stores[0].append("hot", "Ann", "v0", TS, user="ann")
    users = [f"u{i}" for i in range(10)]
    changes: list[MessageChange] = [
        ReactChange(1, user, user, emoji) for user in users for emoji in ("👍", "🎉")
    ]
    changes += [EditChange(1, "ann", "Ann", f"v{i}") for i in range(1, 6)]
    changes += [ReactChange(1, "dup", "Dup", "🔥")] * 4  # only one of these is an event

    async def apply(n: int, change: MessageChange) -> RoomEvent | None:
        return await stores[n % 2].change("hot", change, timestamp())

    results = await asyncio.gather(*(apply(n, c) for n, c in enumerate(changes)))
    events = [e for e in results if e is not None]
    assert len(events) == 20 + 5 + 1
    assert sorted(e.seq for e in events) == list(range(2, 28))  # no gap, no duplicate
    stored = await stores[1].read("hot")
    assert [e.seq for e in stored] == list(range(1, 28))
    assert sorted(stored[1:], key=lambda e: e.seq) == sorted(events, key=lambda e: e.seq)

    # replaying the events in seq order gives the state both stores keep
    reactions: dict[str, list[str]] = {}
    text = "v0"
    for event in stored[1:]:
        if isinstance(event, Reaction):
            reactions.setdefault(event.emoji, []).append(event.user)
        else:
            assert isinstance(event, Edit)
            text = event.text
    for store in stores:
        current = await message(store, "hot", 1)
        assert (current.text, current.reactions) == (text, reactions)
    assert reactions["🔥"] == ["dup"] and sorted(reactions["👍"]) == users


async def test_concurrent_moderation_and_reads_on_several_stores(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(2)]
    members = [f"m{i}" for i in range(8)]
    await asyncio.gather(*(stores[i % 2].join_member("r", m, m) for i, m in enumerate(members)))
    await stores[0].append("r", "Ann", "hi", TS, user="ann")
    work: list[Awaitable[object]] = []
    for i, member in enumerate(members):
        store = stores[i % 2]
        work.append(store.moderate("r", moderation("mute", member), TS))
        work.append(store.mark_read("r", member, 1))
        work.append(store.open_dm([Person(user=member, name=member), Person(user="ann", name="A")]))
    await asyncio.gather(*work)
    assert await stores[1].last_seq("r") == 1 + len(members)
    assert [e.seq for e in await stores[1].read("r")] == list(range(1, 2 + len(members)))
    assert await stores[0].standings("r") == {m: Membership(muted=True, read=1) for m in members}


# -- the timed wrapper --------------------------------------------------------------


async def test_timed_store_measures_every_operation(open_store: OpenStore) -> None:
    metrics = Metrics(multiprocess=False)
    store = TimedStore(await open_store(), metrics)  # wraps a started store
    people = [Person(user="ann", name="Ann"), Person(user="bob", name="Bob")]
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("append", lambda: store.append("r", "Ann", "hi", TS, user="ann", data={"k": 1})),
        ("change", lambda: store.change("r", ReactChange(1, "bob", "Bob", "👍"), TS)),
        ("join_member", lambda: store.join_member("r", "bob", "Bob")),
        ("moderate", lambda: store.moderate("r", moderation("mute", "bob"), TS)),
        ("read", lambda: store.read("r", messages_only=True)),
        ("last_seq", lambda: store.last_seq("r")),
        ("rooms", store.rooms),
        ("membership", lambda: store.membership("r", "bob")),
        ("standings", lambda: store.standings("r")),
        ("mark_read", lambda: store.mark_read("r", "bob", 3)),
        ("user_rooms", lambda: store.user_rooms("bob")),
        ("forget_member", lambda: store.forget_member("r", "bob")),
        ("open_dm", lambda: store.open_dm(people)),
        ("set_receipts", lambda: store.set_receipts("r", True)),
        ("room_settings", lambda: store.room_settings("r")),
    ]
    results = {op: await call() for op, call in calls}
    assert isinstance(results["change"], Reaction)
    assert results["read"] == [
        Message(
            room="r",
            seq=1,
            sender="Ann",
            text="hi",
            ts=TS,
            user="ann",
            data={"k": 1},
            reactions={"👍": ["bob"]},
        )
    ]
    assert results["standings"] == {"bob": Membership(muted=True)}
    assert results["mark_read"] == (3, 0)
    assert results["room_settings"] == RoomSettings(receipts=True)
    for op, _ in calls:
        count = metrics.registry.get_sample_value(
            "hubbub_store_operation_seconds_count", {"op": op}
        )
        assert count == 1, op


# -- the webhooks' outbox --------------------------------------------------------------


async def test_each_event_is_in_each_targets_outbox_with_what_stored_it(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    await store.append("r", "Ann", "before", TS, user="ann")  # no targets yet: not written
    store.webhook_targets = ("http://a/", "http://b/")
    await store.append("r", "Ann", "hi", TS, user="ann")
    await store.change("r", ReactChange(2, "bob", "Bob", "👍"), LATER)
    await refused(ErrorCode.NOT_YOURS, store.change("r", EditChange(2, "bob", "Bob", "x"), TS))
    await store.join_member("r", "bob", "Bob")
    await store.moderate("r", moderation("mute", "bob"), LATER)
    await store.enqueue("r", b'{"type":"room.vacated","room":"r","ts":"' + TS.encode() + b'"}')
    for target in ("http://a/", "http://b/"):
        batch = await store.outbox_batch(target, 10)
        bodies = [msgspec.json.decode(e.body) for e in batch]
        assert [b["type"] for b in bodies] == [
            "message.created",
            "reaction.added",
            "member.moderated",
            "room.vacated",
        ]  # the refused edit wrote nothing
        assert bodies[0]["event"]["text"] == "hi" and bodies[0]["event"]["seq"] == 2
        assert [b["ts"] for b in bodies[:3]] == [TS, LATER, LATER]
        assert [e.number for e in batch] == sorted(e.number for e in batch)
        assert await store.outbox_depth(target) == (4, TS)
    first = (await store.outbox_batch("http://a/", 1))[0]
    await store.outbox_done("http://a/", first.number)
    assert (await store.outbox_depth("http://a/"))[0] == 3
    assert (await store.outbox_depth("http://b/"))[0] == 4  # each target its own
    assert await store.outbox_depth("http://nobody/") == (0, None)


async def test_one_owner_at_a_time_holds_a_targets_lease(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()  # two processes
    assert await one.outbox_lease("http://a/", "one", 60)
    assert not await two.outbox_lease("http://a/", "two", 60)
    assert await one.outbox_lease("http://a/", "one", 60)  # renewed
    assert await two.outbox_lease("http://b/", "two", 60)  # another target
    assert await one.outbox_lease("http://c/", "one", -1)  # expired at once
    assert await two.outbox_lease("http://c/", "two", 60)  # so it is taken over
    assert not await one.outbox_lease("http://c/", "one", 60)


async def test_writes_at_once_fail_alone_and_the_rest_are_stored_in_order(
    open_store: OpenStore,
) -> None:
    # SQLite commits writes that wait together in one transaction (group commit), each
    # in a savepoint: a refused one must change nothing, and take nothing from the others.
    store = await open_store()
    outcomes = await asyncio.gather(
        *(
            store.append("r", "Ann", str(n), TS, user="ann", reply_to=9999 if n % 5 == 0 else None)
            for n in range(50)
        ),
        return_exceptions=True,
    )
    refusals = [o for o in outcomes if isinstance(o, ProtocolError)]
    assert [r.code for r in refusals] == [ErrorCode.NO_SUCH_MESSAGE] * 10
    stored = [o for o in outcomes if isinstance(o, Message)]
    assert sorted(m.seq for m in stored) == list(range(1, 41))
    kept = [e for e in await store.read("r", limit=100) if isinstance(e, Message)]
    assert [(m.seq, m.text) for m in kept] == sorted((m.seq, m.text) for m in stored)
    assert await store.last_seq("r") == 40
