"""What a change does to a room: the rules of edits, deletes, reactions and moderation,
written once for every store.

These are pure functions. A store reads the rows a change touches inside its write
transaction (so two processes never decide on the same row at once), asks these what
the change means, and writes what they answer; :func:`event_of` turns a stored row back
into the frame of ``docs/protocol.md``. A refused change raises :class:`ProtocolError`
with the code the client is answered with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from hubbub import protocol
from hubbub.errors import ErrorCode, ProtocolError
from hubbub.protocol import (
    MAX_REACTIONS,
    Delete,
    Edit,
    Message,
    Moderation,
    Person,
    Reaction,
    RoomEvent,
)

MESSAGE, EDIT, DELETE, REACTION, MODERATION = "message", "edit", "delete", "reaction", "moderation"
ROLES = ("member", "moderator", "owner")


@dataclass
class Row:
    """One stored event of a room, as the stores keep it: the columns, and ``extra``
    (a JSON object) for what only some kinds have."""

    seq: int
    kind: str
    sender: str
    text: str
    ts: str
    user: str | None = None
    target: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Membership:
    """One user's standing in one room."""

    role: str = "member"
    banned: bool = False
    muted: bool = False
    read: int = 0


@dataclass(frozen=True)
class EditChange:
    seq: int
    user: str
    sender: str
    text: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeleteChange:
    seq: int
    user: str
    sender: str
    moderator: bool = False  # the actor may delete anyone's message


@dataclass(frozen=True)
class ReactChange:
    seq: int
    user: str
    sender: str
    emoji: str
    remove: bool = False


MessageChange = EditChange | DeleteChange | ReactChange


@dataclass(frozen=True)
class ModerationChange:
    action: str  # kick ban unban mute unmute role
    member: str
    user: str
    sender: str
    actor_role: str  # the actor's role in the room (the HTTP API acts as "owner")
    reason: str | None = None
    role: str | None = None  # for action "role"


def check_reply(target: Row | None) -> None:
    """``reply_to`` must name a message of the room (a deleted one will do)."""
    if target is None or target.kind != MESSAGE:
        raise ProtocolError(ErrorCode.NO_SUCH_MESSAGE, "reply_to names no message of this room")


def change_message(target: Row | None, change: MessageChange) -> tuple[Row, Row] | None:
    """What ``change`` makes of message ``target``: ``(its new state, the event row)``,
    the event's ``seq`` still 0 for the store to fill in; None if nothing changes (a
    reaction that is there already, or a removal of one that is not)."""
    if target is None or target.kind != MESSAGE:
        raise ProtocolError(ErrorCode.NO_SUCH_MESSAGE, f"no message {change.seq} in this room")
    extra = dict(target.extra)
    if extra.get("deleted") and not isinstance(change, DeleteChange):
        raise ProtocolError(ErrorCode.MESSAGE_DELETED, f"message {change.seq} is deleted")
    if isinstance(change, EditChange):
        if target.user is None or target.user != change.user:
            raise ProtocolError(ErrorCode.NOT_YOURS, "only its author edits a message")
        event_extra: dict[str, Any] = {}
        extra["edited"] = "now"  # replaced by the event's ts below
        if change.data is not None:
            extra["data"] = change.data
            event_extra["data"] = change.data
        event = Row(0, EDIT, change.sender, change.text, "", change.user, target.seq, event_extra)
        return replace(target, text=change.text, extra=extra), event
    if isinstance(change, DeleteChange):
        if extra.get("deleted"):
            raise ProtocolError(ErrorCode.MESSAGE_DELETED, f"message {change.seq} is deleted")
        if not change.moderator and (target.user is None or target.user != change.user):
            raise ProtocolError(ErrorCode.NOT_YOURS, "only its author or a moderator deletes it")
        kept = {"deleted": True}
        if "reply_to" in extra:
            kept["reply_to"] = extra["reply_to"]
        event = Row(0, DELETE, change.sender, "", "", change.user, target.seq, {})
        return replace(target, text="", extra=kept), event
    reactions: dict[str, list[str]] = {k: list(v) for k, v in extra.get("reactions", {}).items()}
    users = reactions.get(change.emoji, [])
    if change.remove:
        if change.user not in users:
            return None
        users.remove(change.user)
        if users:
            reactions[change.emoji] = users
        else:
            del reactions[change.emoji]
    else:
        if change.user in users:
            return None
        if change.emoji not in reactions and len(reactions) >= MAX_REACTIONS:
            raise ProtocolError(
                ErrorCode.TOO_MANY_REACTIONS, f"at most {MAX_REACTIONS} emoji on a message"
            )
        reactions[change.emoji] = [*users, change.user]
    if reactions:
        extra["reactions"] = reactions
    else:
        extra.pop("reactions", None)
    event = Row(
        0,
        REACTION,
        change.sender,
        "",
        "",
        change.user,
        target.seq,
        {"emoji": change.emoji, "added": not change.remove},
    )
    return replace(target, extra=extra), event


def moderate(target: Membership | None, change: ModerationChange) -> tuple[Membership, Row]:
    """What ``change`` makes of the member's standing, and the event row (``seq`` 0)."""
    actor = ROLES.index(change.actor_role) if change.actor_role in ROLES else 0
    # Who may act comes first: a refusal tells a non-moderator nothing about members.
    needed = "owner" if change.action == "role" else "moderator"
    if actor < ROLES.index(needed):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"only {needed}s may {change.action}")
    if target is None:
        raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{change.member!r} is not a member here")
    if change.action != "role" and ROLES.index(target.role) >= actor:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, f"a {change.actor_role} cannot {change.action} a {target.role}"
        )
    standing = target
    match change.action:
        case "ban":
            standing = replace(target, banned=True)
        case "unban":
            standing = replace(target, banned=False)
        case "mute":
            standing = replace(target, muted=True)
        case "unmute":
            standing = replace(target, muted=False)
        case "role":
            if change.role not in ROLES:
                raise ProtocolError(ErrorCode.BAD_FRAME, f"no role {change.role!r}")
            standing = replace(target, role=change.role)
    extra: dict[str, Any] = {"action": change.action, "member": change.member}
    if change.reason:
        extra["reason"] = change.reason
    if change.role is not None:
        extra["role"] = change.role
    return standing, Row(0, MODERATION, change.sender, "", "", change.user, None, extra)


def settle_ts(state: Row, event: Row, ts: str) -> None:
    """Stamp the event (and an edit mark on the message) with the time of storing."""
    event.ts = ts
    if state.extra.get("edited") == "now":
        state.extra["edited"] = ts


def event_of(room: str, row: Row) -> RoomEvent:
    """The frame of a stored row."""
    x = row.extra
    if row.kind == MESSAGE:
        return Message(
            room=room,
            seq=row.seq,
            sender=row.sender,
            text=row.text,
            ts=row.ts,
            user=row.user,
            reply_to=x.get("reply_to"),
            data=x.get("data"),
            edited=x.get("edited"),
            deleted=bool(x.get("deleted")),
            reactions=x.get("reactions") or None,
            id=x.get("id"),
        )
    assert row.user is not None
    if row.kind == EDIT:
        return Edit(
            room=room,
            seq=row.seq,
            target=row.target or 0,
            text=row.text,
            user=row.user,
            sender=row.sender,
            ts=row.ts,
            data=x.get("data"),
            deleted=bool(x.get("deleted")),
        )
    if row.kind == DELETE:
        return Delete(
            room=room,
            seq=row.seq,
            target=row.target or 0,
            user=row.user,
            sender=row.sender,
            ts=row.ts,
        )
    if row.kind == REACTION:
        return Reaction(
            room=room,
            seq=row.seq,
            target=row.target or 0,
            emoji=x["emoji"],
            added=bool(x["added"]),
            user=row.user,
            sender=row.sender,
            ts=row.ts,
        )
    return Moderation(
        room=room,
        seq=row.seq,
        action=x["action"],
        member=x["member"],
        user=row.user,
        sender=row.sender,
        ts=row.ts,
        reason=x.get("reason"),
        role=x.get("role"),
    )


def dm_room(users: list[str]) -> str:
    """The direct-message room of a set of users: the same set, the same name."""
    digest = hashlib.sha256("\n".join(sorted(set(users))).encode()).hexdigest()
    return "dm:" + digest[:16]


def message_row(
    sender: str,
    text: str,
    ts: str,
    *,
    user: str | None,
    reply_to: int | None,
    data: dict[str, Any] | None,
    send_id: str | None = None,
) -> Row:
    """The row of a new message (``seq`` 0 for the store to fill in)."""
    extra: dict[str, Any] = {}
    if reply_to is not None:
        extra["reply_to"] = reply_to
    if data is not None:
        extra["data"] = data
    if send_id is not None:
        extra["id"] = send_id
    return Row(0, MESSAGE, sender, text, ts, user, None, extra)


def extra_json(extra: dict[str, Any]) -> str | None:
    """``extra`` as the stores keep it: JSON text, ``deleted`` first (the unread
    counts test for it by prefix), None for nothing."""
    if not extra:
        return None
    if extra.get("deleted"):  # first, for UNREAD's prefix test
        extra = {"deleted": True, **extra}
    return msgspec.json.encode(extra).decode()


def people_json(people: list[Person]) -> str:
    """A direct-message room's people as the stores keep them."""
    return msgspec.json.encode([[person.user, person.name] for person in people]).decode()


def people(dm: str) -> tuple[Person, ...]:
    """The people of a direct-message room, from :func:`people_json`."""
    pairs = msgspec.json.decode(dm, type=list[tuple[str, str]])
    return tuple(Person(user=user, name=name) for user, name in pairs)


# -- the webhooks' outbox (docs/webhooks.md) ------------------------------------------

WEBHOOK_TYPES = {
    MESSAGE: "message.created",
    EDIT: "message.edited",
    DELETE: "message.deleted",
    MODERATION: "member.moderated",
}


def webhook_body(room: str, row: Row) -> bytes:
    """The outbox body of a stored room-log event (its ``id`` is added when it is sent)."""
    if row.kind == REACTION:
        kind = "reaction.added" if row.extra.get("added") else "reaction.removed"
    else:
        kind = WEBHOOK_TYPES[row.kind]
    frame = msgspec.Raw(protocol.encode(event_of(room, row)))
    return msgspec.json.encode({"type": kind, "room": room, "ts": row.ts, "event": frame})


def webhook_notice(kind: str, room: str, ts: str, **fields: str) -> bytes:
    """The outbox body of a presence event (``member.joined`` …, ``room.vacated``;
    ``user.online`` and ``user.offline`` have no ``room``: give "")."""
    where = {"room": room} if room else {}
    return msgspec.json.encode({"type": kind, **where, "ts": ts, **fields})
