"""The hub: this process's connections, who listens to which channel, and fan-out.

Publishing goes to the broker; the broker's deliveries come back here, are encoded
once, and are put into each local member's outbox without awaiting any client.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
from starlette.websockets import WebSocket

from hubbub import protocol
from hubbub.auth import Identity, name_key
from hubbub.brokers.base import Broker
from hubbub.config import Settings
from hubbub.connection import Connection
from hubbub.errors import (
    DisconnectedByServer,
    ErrorCode,
    HubbubError,
    NameTaken,
    ProtocolError,
    ServerBusy,
)
from hubbub.hooks import Hooks
from hubbub.metrics import Metrics
from hubbub.outgoing import OutFrame
from hubbub.presence import PRESENCE_CHANNEL, Presence
from hubbub.protocol import Message, Moderation, Person, RoomEvent
from hubbub.rooms import RoomFeed
from hubbub.stores import Store
from hubbub.stores.base import RoomSettings
from hubbub.stores.chat import Membership, MessageChange, ModerationChange, webhook_notice
from hubbub.webhooks import Delivery

logger = logging.getLogger("hubbub.hub")

ROOM_PREFIX = "room:"  # broker channels of rooms; other channels are plain fan-out
CONTROL_CHANNEL = "control:~"  # disconnect-user requests between processes
# Presence of users anywhere, for the webhooks' user.online/offline (not a room: no
# room name starts with "~").
ONLINE = "~online"
# Moderation that changes the member's list of rooms: (in it now, why not)
LIST_CHANGES = {"kick": (False, "kicked"), "ban": (False, "banned"), "unban": (True, None)}
USER_CHANNEL = "user:~"  # frames for every connection of one user, on every process


class UserFrame(msgspec.Struct):
    """A frame for every connection of ``user``, between processes."""

    user: str
    frame: msgspec.Raw


Kicked = Callable[[str], None]
"""Told the room a connection was removed from by a moderator."""
HISTORY_BATCH = 50  # rows per store read of a page cut by bytes (the default limit: one read)


def answer(connection: Connection, error: HubbubError) -> None:
    """Tell the client about ``error`` the way its type says (:class:`HubbubError`): an
    ``error`` frame if it has a code, then a close if it has a close code. The one place
    that answers a client's failure."""
    if error.code is not None:
        connection.send_one(OutFrame(protocol.error(error)))
    if error.close_code is not None:
        connection.close(error.close_code, error.close_reason or error.code or "")


class Hub:
    """Local connections and channel membership; the only place fan-out happens."""

    # A long-running task that fails runs again after this many seconds, doubled after
    # each failure up to restart_delay_max (and back after a run longer than that).
    restart_delay = 0.05
    restart_delay_max = 5.0

    def __init__(
        self, settings: Settings, broker: Broker, store: Store, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.metrics = metrics or Metrics()
        store.webhook_targets = settings.webhook_targets  # the store writes their outbox
        self._deliveries: list[Delivery] = []
        self._online: dict[Connection, tuple[str, str]] = {}  # with webhooks: user, name
        self.hooks = Hooks(settings)
        self.connections: set[Connection] = set()
        self._members: dict[str, set[Connection]] = {}
        # One broker subscription per channel, shared by concurrent first joiners.
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        # Connections subscribed to a channel but not yet accepted (see connect): they
        # keep the subscription although they are no members yet.
        self._joining: dict[str, int] = {}
        self._feeds: dict[str, RoomFeed] = {}
        self._opening: dict[str, asyncio.Future[RoomFeed]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: set[asyncio.Task[None]] = set()  # connections' serial workers
        self._users: dict[str, set[Connection]] = {}
        # What each connection touched, so that its close costs that and no more.
        self._user_of: dict[Connection, str] = {}
        self._channels_of: dict[Connection, set[str]] = {}
        self._rooms_of: dict[Connection, set[str]] = {}
        self._on_kicked: dict[Connection, Kicked] = {}
        self._shutting_down = False
        self.presence = Presence(
            secrets.token_hex(8),
            broker.publish,
            self._announce_presence,
            settings.presence_interval,
        )
        broker.set_delivery(self._deliver)
        broker.set_metrics(self.metrics)
        broker.set_on_reconnect(self._resync_rooms)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and connect the broker."""
        await self.store.start()
        # Rooms, presence and user control of another deployment (another store) on the
        # same broker are not ours; plain channels (the tutorial's chat) need no store
        # and are shared by every process on the broker and namespace.
        self.broker.set_epoch(self.store.deployment.epoch, self._store_bound)
        await self.broker.start()
        await self._subscribe(PRESENCE_CHANNEL)
        await self._subscribe(CONTROL_CHANNEL)
        await self._subscribe(USER_CHANNEL)
        await self.presence.resync()
        self._keep_running("presence heartbeat", self.presence.run)
        await self.hooks.start()
        for url in self.settings.webhook_targets:
            assert self.settings.webhook_secret is not None  # cli.check says so
            delivery = Delivery(
                self.store,
                url,
                self.settings.webhook_secret,
                self.store.deployment.epoch,
                self.metrics,
                timeout=self.settings.webhook_timeout,
                backoff_max=self.settings.webhook_backoff_max,
            )
            self._deliveries.append(delivery)
            self._keep_running(f"webhooks to {delivery.name}", delivery.run)

    async def stop(self) -> None:
        """Disconnect the broker and close the store; connections are closed before this."""
        self._shutting_down = True
        if self._workers:
            # Closed connections finish their last messages and leave their rooms
            # (presence is told) while the broker and the store are still there.
            _, late = await asyncio.wait(set(self._workers), timeout=self.settings.shutdown_timeout)
            for worker in late:
                worker.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hooks.stop()
        await self.broker.stop()
        await self.store.stop()

    @staticmethod
    def _store_bound(channel: str) -> bool:
        return channel.startswith(ROOM_PREFIX) or channel in (
            PRESENCE_CHANNEL,
            CONTROL_CHANNEL,
            USER_CHANNEL,
        )

    @property
    def epoch(self) -> str:
        """The deployment's epoch (its store's), once started."""
        return self.store.deployment.epoch

    @property
    def ready(self) -> bool:
        """Whether this process can serve: broker reachable and not shutting down."""
        return not self._shutting_down and self.broker.ready

    # -- connections -----------------------------------------------------------

    async def connect(self, websocket: WebSocket, channel: str | None = None) -> Connection | None:
        """Accept ``websocket`` as a connection, or refuse it (1013) past the limit or
        while shutting down.

        With ``channel``, the connection is also made a member of it, and the broker
        subscription is live before the handshake completes: whatever is published once
        the client has its 101 reaches it. A refused connection leaves no subscription.
        """
        connection = Connection(
            websocket, self.settings, self._on_slow_consumer, self.metrics, self._workers
        )
        refused = self._refusing()
        joining = None if refused else channel
        if joining is not None:
            self._joining[joining] = self._joining.get(joining, 0) + 1
        try:
            if joining is not None:
                await self._subscribe(joining)
            await connection.accept()
        except BaseException:
            if joining is not None:
                self._end_joining(joining)
            raise
        self.metrics.opened()
        if refused or self._refusing():
            if joining is not None:
                self._end_joining(joining)
            answer(connection, ServerBusy())
            async for _ in connection.texts():
                pass
            self.metrics.closed(connection.close_code, connection.outbox_peak)
            await connection.finish()
            return None
        self.connections.add(connection)
        if joining is not None:
            # Nothing awaited since the accept: no delivery after the 101 is missed.
            self._add_member(joining, connection)
            self._end_joining(joining)
        return connection

    def _refusing(self) -> bool:
        return self._shutting_down or len(self.connections) >= self.settings.max_connections

    def _end_joining(self, channel: str) -> None:
        count = self._joining.pop(channel) - 1
        if count:
            self._joining[channel] = count
        elif channel not in self._members:
            # Refused, or the accept failed: no member needs the subscription.
            self._spawn(self._unsubscribe_if_unused(channel))

    async def disconnect(self, connection: Connection) -> None:
        """Forget ``connection`` everywhere (leaving its rooms) and release it."""
        self._forget(connection)
        for channel in self._channels_of.pop(connection, ()):
            await self.leave(channel, connection)
        for room in self._rooms_of.pop(connection, ()):
            await self.leave_room(connection, room)
        online = self._online.pop(connection, None)
        if online is not None:
            user, name = online
            await self.presence.remove(ONLINE, user)
            if not self.presence.has(ONLINE, user):
                await self._notify("user.offline", "", user=user, name=name)
        await connection.finish()

    async def user_arrived(self, connection: Connection, user: str, name: str) -> None:
        """``connection`` is ``user``'s (a ``/v1/ws`` identity settled); with webhooks,
        its first connection anywhere is ``user.online``."""
        if not self._deliveries or connection in self._online:
            return
        self._online[connection] = (user, name)
        first = not self.presence.has(ONLINE, user)
        await self.presence.add(ONLINE, user, name)
        if first:
            await self._notify("user.online", "", user=user, name=name)

    def drop(self, connection: Connection) -> None:
        """:meth:`disconnect` for a connection of plain channels only, without waiting:
        a channel left empty is unsubscribed in the background."""
        self._forget(connection)
        for channel in self._channels_of.pop(connection, ()):
            if self._remove_member(channel, connection):
                self._spawn(self._unsubscribe_if_unused(channel))
        connection.release()

    def _forget(self, connection: Connection) -> None:
        self._on_kicked.pop(connection, None)
        if connection in self.connections:
            self.connections.remove(connection)
            self.metrics.closed(connection.close_code, connection.outbox_peak)
        user = self._user_of.pop(connection, None)
        if user is not None:
            self._remove_user_connection(user, connection)

    def _remove_user_connection(self, user: str, connection: Connection) -> None:
        connections = self._users[user]
        connections.discard(connection)
        if not connections:
            del self._users[user]

    async def _unsubscribe_if_unused(self, channel: str) -> None:
        # Nobody joined again, or is joining (see connect), in the meantime.
        if channel not in self._members and channel not in self._joining:
            await self._unsubscribe(channel)

    def _on_slow_consumer(self, connection: Connection) -> None:
        self.metrics.slow_consumers.inc()
        frames, size = connection.queued
        client = connection.websocket.client
        extra = {"conn": connection.id}
        user = self._user_of.get(connection)
        if user is not None:
            extra["user"] = user
        logger.warning(
            "closing slow consumer conn %s %s:%s (%d frames, %d bytes queued)",
            connection.id,
            client.host if client else "?",
            client.port if client else "?",
            frames,
            size,
            extra=extra,
        )

    # -- broker subscriptions ------------------------------------------------------

    async def _subscribe(self, channel: str) -> None:
        # One broker subscription per channel; concurrent first users share it.
        pending = self._subscribing.get(channel)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._subscribing[channel] = pending
            try:
                await self.broker.subscribe(channel)
            except BaseException as exc:
                del self._subscribing[channel]
                pending.set_exception(exc)
                pending.exception()  # retrieved: the waiters re-raise it themselves
                raise
            pending.set_result(None)
        else:
            await asyncio.shield(pending)

    async def _unsubscribe(self, channel: str) -> None:
        pending = self._subscribing.pop(channel, None)
        if pending is not None and pending.done() and not pending.exception():
            await self.broker.unsubscribe(channel)

    # -- plain channels (the tutorial's chat) ---------------------------------------

    async def join(self, channel: str, connection: Connection) -> None:
        """Make ``connection`` a member of ``channel``; subscribes the broker on first use."""
        self._add_member(channel, connection)
        try:
            await self._subscribe(channel)
        except BaseException:
            self._remove_member(channel, connection)
            raise

    async def leave(self, channel: str, connection: Connection) -> None:
        """Remove ``connection`` from ``channel``; unsubscribes the broker when empty."""
        if self._remove_member(channel, connection):
            await self._unsubscribe(channel)

    def _add_member(self, channel: str, connection: Connection) -> None:
        self._members.setdefault(channel, set()).add(connection)
        self._channels_of.setdefault(connection, set()).add(channel)

    def _remove_member(self, channel: str, connection: Connection) -> bool:
        # True when the channel has no member left on this process (and is forgotten).
        _discard(self._channels_of, connection, channel)
        members = self._members.get(channel)
        if members is None:
            return False
        members.discard(connection)
        if members:
            return False
        del self._members[channel]
        return channel not in self._joining  # else connect keeps or ends the subscription

    def publish(self, channel: str, text: str) -> None:
        """Send ``text`` to every member of ``channel`` on every process.

        Members on this process get it at once, whatever the broker's state; the broker
        carries it to the other processes.
        """
        self.metrics.messages_published.inc()
        payload = text.encode()
        self._deliver(channel, payload)
        self.broker.publish(channel, payload)

    def _deliver(self, channel: str, payload: bytes) -> None:
        if channel.startswith(ROOM_PREFIX):
            self._deliver_to_room(channel[len(ROOM_PREFIX) :], payload)
            return
        if channel == PRESENCE_CHANNEL:
            self.presence.on_message(payload, self._spawn)
            return
        if channel == CONTROL_CHANNEL:
            self._on_control(payload)
            return
        if channel == USER_CHANNEL:
            self._on_user_frame(payload)
            return
        members = self._members.get(channel)
        if not members:
            return
        frame = OutFrame(payload)
        # Connection.send never changes membership, so the set is safe to iterate.
        for connection in members:
            connection.send(frame)
        count = len(members)
        self.metrics.sent(count, count * frame.size)  # once per broadcast, not per member

    # -- rooms (the /v1/ws protocol) -----------------------------------------------

    async def join_room(
        self,
        connection: Connection,
        room: str,
        identity: Identity,
        since: int | None,
        announce: Callable[[int, dict[str, str]], None],
    ) -> None:
        """Add ``connection`` to ``room`` as ``identity``, and make the user a stored
        member of it.

        ``announce(last_seq, members)`` (members: user id -> name) runs once the member
        is in, before anything else is sent to it. Then, with ``since``, every event
        after ``since`` follows in order; without, the events after ``last_seq``.
        Raises :class:`NameTaken` if another user in the room has the same display
        name, ``ProtocolError(banned)`` if the user is banned from it.
        """
        while True:
            feed = await self._open_feed(room)
            if self._feeds.get(room) is not feed:
                continue  # closed by its last member's leave while we waited: again
            try:
                last = await self.store.last_seq(room)  # after subscribing: nothing between
            except BaseException:
                if self._feeds.get(room) is feed and not feed.members:
                    await self._close_feed(room)  # no memberless feed left subscribed
                raise
            if self._feeds.get(room) is feed:
                break
        held = self.presence.members(room).get(identity.user)
        if self._name_taken(room, identity) or (held is not None and held != identity.name):
            # One name per user in a room: not another user's, nor (from another tab or
            # device) a second one of its own.
            if not feed.members:
                await self._close_feed(room)
            if held is not None and held != identity.name:
                raise NameTaken(f"you are in {room} as {held!r} already")
            raise NameTaken(f"{identity.name!r} is already in {room}")
        # One write: the stored standing says whether the user is banned.
        standing, listed = await self.store.join_member(room, identity.user, identity.name)
        if standing.banned or self._banned(feed, identity.user):
            if not feed.members and self._feeds.get(room) is feed:
                await self._close_feed(room)
            raise ProtocolError(ErrorCode.BANNED, f"you are banned from {room}")
        await self.presence.add(room, identity.user, identity.name)
        if self._banned(feed, identity.user):  # the ban reached the feed meanwhile
            await self.presence.remove(room, identity.user)
            if not feed.members and self._feeds.get(room) is feed:
                await self._close_feed(room)
            raise ProtocolError(ErrorCode.BANNED, f"you are banned from {room}")
        after = last if since is None else min(since, last)
        member = feed.add(connection, identity.user, identity.name, after, since is not None)
        self._rooms_of.setdefault(connection, set()).add(room)
        announce(last, self.presence.members(room))
        if held is None:  # its first connection in the room, on any process
            await self._notify("member.joined", room, user=identity.user, name=identity.name)
        if listed:
            self.push_to_user(identity.user, protocol.MembershipNotice(room=room, member=True))
        if since is not None:
            await feed.catch_up(member)

    @staticmethod
    def _banned(feed: RoomFeed, user: str) -> bool:
        standing = feed.standings.get(user)
        return standing is not None and standing.banned

    async def add_member(self, room: str, user: str, name: str) -> Membership:
        """Make ``user`` a stored member of ``room`` without joining it anywhere (the
        HTTP API); its devices are told if the room is new in its list."""
        standing, listed = await self.store.join_member(room, user, name)
        if listed:
            self.push_to_user(user, protocol.MembershipNotice(room=room, member=True))
        return standing

    async def forget_member(self, room: str, user: str) -> None:
        """End ``user``'s membership of ``room``; every device of it is told."""
        await self.store.forget_member(room, user)
        self.push_to_user(user, protocol.MembershipNotice(room=room, member=False, reason="forgot"))

    def person(self, room: str, user: str, name: str) -> Person:
        """``user`` as a member list shows it: with its role and mute, as known here."""
        feed = self._feeds.get(room)
        standing = feed.standings.get(user) if feed is not None else None
        if standing is None:
            return Person(user, name)
        role = None if standing.role == "member" else standing.role
        return Person(user, name, role=role, muted=standing.muted or None)

    def _name_taken(self, room: str, identity: Identity) -> bool:
        # Names are compared as people read them: NFKC and case folded.
        key = name_key(identity.name)
        members = self.presence.members(room).items()
        return any(name_key(name) == key and user != identity.user for user, name in members)

    async def rename(self, connection: Connection, rooms: set[str], identity: Identity) -> None:
        """``identity``'s new display name in each of ``rooms``; :class:`NameTaken`
        (and nothing changed) if another member of one of them has it."""
        for room in rooms:
            if self._name_taken(room, identity):
                raise NameTaken(f"{identity.name!r} is already in {room}")
        for room in rooms:
            feed = self._feeds.get(room)
            member = feed.members.get(connection) if feed is not None else None
            if member is not None:
                member.name = identity.name
            await self.presence.rename(room, identity.user, identity.name)

    async def leave_room(self, connection: Connection, room: str) -> bool:
        """Remove ``connection`` from ``room``; False if it was not a member."""
        feed = self._feeds.get(room)
        member = feed.remove(connection) if feed is not None else None
        if feed is None or member is None:
            return False
        _discard(self._rooms_of, connection, room)
        await self.presence.remove(room, member.user)
        if not feed.members:
            await self._close_feed(room)
        # Its last connection in the room, on any process (only looked at for webhooks:
        # a copy of the member list per leave would cost every big room).
        if self._deliveries and not self.presence.has(room, member.user):
            await self._notify("member.left", room, user=member.user, name=member.name)
            if not self.presence.members(room):
                await self._notify("room.vacated", room)
        return True

    async def _notify(self, kind: str, room: str, **fields: str) -> None:
        """A webhook event that no store write carries; lost (and logged) if the store
        cannot take it."""
        if not self._deliveries:
            return
        try:
            await self.store.enqueue(
                room, webhook_notice(kind, room, protocol.timestamp(), **fields)
            )
        except Exception as exc:
            logger.warning("room %s: webhook event %s not written: %s", room, kind, exc)
            return
        for delivery in self._deliveries:
            delivery.wake()

    async def _close_feed(self, room: str) -> None:
        del self._feeds[room]
        self._opening.pop(room, None)
        await self._unsubscribe(ROOM_PREFIX + room)

    def is_member(self, connection: Connection, room: str) -> bool:
        """Whether ``connection`` has joined ``room``."""
        feed = self._feeds.get(room)
        return feed is not None and connection in feed.members

    async def send_to_room(
        self,
        room: str,
        sender: str,
        text: str,
        *,
        user: str | None = None,
        reply_to: int | None = None,
        data: dict[str, Any] | None = None,
        send_id: str | None = None,
    ) -> Message:
        """Store a message (which gives it its ``seq``) and deliver it everywhere. With a
        ``send_id`` the store keeps already, nothing is stored or delivered: the store's
        :class:`~hubbub.stores.base.AlreadySent` says which message it was."""
        message = await self.store.append(
            room,
            sender,
            text,
            protocol.timestamp(),
            user=user,
            reply_to=reply_to,
            data=data,
            send_id=send_id,
        )
        self._publish_event(room, message)
        return message

    async def change_message(self, room: str, change: MessageChange) -> RoomEvent | None:
        """Edit, delete or react (the store decides); the event, delivered everywhere,
        or None if nothing changed."""
        event = await self.store.change(room, change, protocol.timestamp())
        if event is not None:
            self._publish_event(room, event)
        return event

    async def moderate(self, room: str, change: ModerationChange) -> Moderation:
        """A moderation action, stored with its event, then delivered everywhere; every
        process applies it when the event reaches its feed of the room."""
        event = await self.store.moderate(room, change, protocol.timestamp())
        self._publish_event(room, event)
        if change.action in LIST_CHANGES:
            member, reason = LIST_CHANGES[change.action]
            notice = protocol.MembershipNotice(room=room, member=member, reason=reason)
            self.push_to_user(change.member, notice)
        return event

    def _publish_event(self, room: str, event: RoomEvent) -> None:
        payload = protocol.encode(event)
        self.metrics.messages_published.inc()
        feed = self._feeds.get(room)
        if feed is not None:
            feed.on_message(event, OutFrame(payload))
        self.broker.publish(ROOM_PREFIX + room, payload)
        for delivery in self._deliveries:  # the store wrote it to their outbox too
            delivery.wake()

    def standing(self, room: str, user: str) -> Membership | None:
        """``user``'s standing in ``room`` as this process's feed knows it (None: the
        default one, or no feed)."""
        feed = self._feeds.get(room)
        return feed.standings.get(user) if feed is not None else None

    def room_settings(self, room: str) -> RoomSettings:
        """How ``room`` behaves, as this process's feed of it knows (defaults without)."""
        feed = self._feeds.get(room)
        return feed.settings if feed is not None else RoomSettings()

    def signal_room(self, room: str, frame: protocol.TypingNotice | protocol.Receipt) -> None:
        """An ephemeral frame (never stored) for the room's other members, everywhere."""
        payload = protocol.encode(frame)
        self._signal_local(room, frame.user, payload)
        self.broker.publish(ROOM_PREFIX + room, payload)

    def _signal_local(self, room: str, sender: str, payload: bytes) -> None:
        feed = self._feeds.get(room)
        if feed is not None:
            frame = OutFrame(payload)
            sent = feed.signal(frame, sender)
            self.metrics.sent(sent, sent * frame.size)

    def push_to_user(self, user: str, frame: protocol.ServerFrame) -> None:
        """A frame for every connection of ``user``, on every process."""
        payload = protocol.encode(frame)
        self._push_local(user, payload)
        self.broker.publish(
            USER_CHANNEL, msgspec.json.encode(UserFrame(user, msgspec.Raw(payload)))
        )

    def _push_local(self, user: str, payload: bytes) -> None:
        connections = self._users.get(user)
        if connections:
            frame = OutFrame(payload)
            for connection in connections:
                connection.send(frame)
            self.metrics.sent(len(connections), len(connections) * frame.size)

    def _on_user_frame(self, payload: bytes) -> None:
        try:
            pushed = msgspec.json.decode(payload, type=UserFrame)
        except msgspec.DecodeError:
            logger.warning("dropped an undecodable user frame from the broker")
            return
        self._push_local(pushed.user, bytes(pushed.frame))

    def on_kicked(self, connection: Connection, callback: Kicked) -> None:
        """Call ``callback(room)`` when a moderator removes ``connection`` from a room."""
        self._on_kicked[connection] = callback

    def _apply_moderation(self, room: str, event: Moderation) -> None:
        # Called by the feed once it has handed the event out, on every process.
        if event.action not in ("kick", "ban"):
            return
        feed = self._feeds.get(room)
        if feed is None:
            return
        for connection, member in list(feed.members.items()):
            if member.user == event.member:
                self._spawn(self._evict(connection, room), "evict")

    async def _evict(self, connection: Connection, room: str) -> None:
        if not await self.leave_room(connection, room):
            return
        connection.send_one(OutFrame(protocol.encode(protocol.Left(room=room, reason="kicked"))))
        callback = self._on_kicked.get(connection)
        if callback is not None:
            callback(room)

    async def history(
        self, room: str, before: int | None, limit: int, max_bytes: int | None = None
    ) -> list[Message]:
        """The last ``limit`` messages of ``room`` before ``before`` (or the newest ones),
        ascending.

        With ``max_bytes``, only as many of the newest as fit in that many bytes once
        encoded (one comma each included), and at least one: a short page is not the
        beginning of the room. The store is then read :data:`HISTORY_BATCH` rows at a
        time, so a page of a few big messages loads little more than it keeps.
        """
        end = 2**62 if before is None else before
        if max_bytes is None:
            return _messages(
                await self.store.read(room, before=end, limit=limit, messages_only=True)
            )
        page: list[Message] = []  # newest first
        size = 0
        while len(page) < limit:
            want = min(limit - len(page), HISTORY_BATCH)
            rows = _messages(
                await self.store.read(room, before=end, limit=want, messages_only=True)
            )
            for message in reversed(rows):
                size += len(protocol.encode(message)) + 1
                if size > max_bytes and page:
                    return page[::-1]
                page.append(message)
            if len(rows) < want or size >= max_bytes:
                break
            end = rows[0].seq
        return page[::-1]

    async def _open_feed(self, room: str) -> RoomFeed:
        pending = self._opening.get(room)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._opening[room] = pending
            try:
                # Subscribe first, then read where the room stands: nothing falls between.
                await self._subscribe(ROOM_PREFIX + room)
                last = await self.store.last_seq(room)
                standings = await self.store.standings(room)
                settings = await self.store.room_settings(room)
            except BaseException as exc:
                del self._opening[room]
                pending.set_exception(exc)
                pending.exception()
                raise
            feed = RoomFeed(room, self.store, last, self._spawn, self.metrics)
            feed.standings = standings
            feed.settings = settings
            feed.on_moderation = self._apply_moderation
            self._feeds[room] = feed
            pending.set_result(feed)
        return await asyncio.shield(pending)

    def _deliver_to_room(self, room: str, payload: bytes) -> None:
        feed = self._feeds.get(room)
        if feed is None:
            return
        try:
            frame = protocol.decode_room_frame(payload)
        except Exception:
            logger.warning(
                "room %s: dropped an undecodable broker message", room, extra={"room": room}
            )
            return
        if isinstance(frame, protocol.TypingNotice | protocol.Receipt):
            feed.signal(OutFrame(payload), frame.user)
        else:
            feed.on_message(frame, OutFrame(payload))

    def _resync_rooms(self) -> None:
        # After a broker outage: anything published meanwhile is in the store, and
        # presence is told again.
        for feed in self._feeds.values():
            feed.resync()
        self._spawn(self.presence.resync())

    def _announce_presence(
        self, room: str, joined: list[tuple[str, str]], left: list[tuple[str, str]]
    ) -> None:
        feed = self._feeds.get(room)
        if feed is None or not feed.members:
            return
        presence = protocol.Presence(
            room=room,
            joined=[name for _, name in joined],
            left=[name for _, name in left],
            joined_people=[self.person(room, user, name) for user, name in joined] or None,
            left_people=[Person(user, name) for user, name in left] or None,
        )
        frame = OutFrame(protocol.encode(presence))
        for member in feed.members.values():
            member.connection.send(frame)
        self.metrics.sent(len(feed.members), len(feed.members) * frame.size)

    # -- users ----------------------------------------------------------------------

    def register_user(self, connection: Connection, user: str) -> None:
        """Remember whose ``connection`` this is (for disconnecting a user)."""
        previous = self._user_of.get(connection)
        if previous is not None and previous != user:
            self._remove_user_connection(previous, connection)
        self._user_of[connection] = user
        self._users.setdefault(user, set()).add(connection)

    async def disconnect_user(self, user: str) -> int:
        """Close every connection of ``user`` on every process; returns how many were
        closed on this one."""
        self.broker.publish(CONTROL_CHANNEL, user.encode())
        return self._kick(user)

    def _on_control(self, payload: bytes) -> None:
        self._kick(payload.decode())

    def _kick(self, user: str) -> int:
        connections = self._users.get(user, set())
        for connection in connections:
            answer(connection, DisconnectedByServer())
        return len(connections)

    # -- background tasks -------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None], name: str | None = None) -> None:
        """Run ``work`` as a task the hub owns (cancelled by :meth:`stop`); if it fails,
        the failure is logged and counted under ``name`` (default: the coroutine's)."""
        name = name or getattr(work, "__qualname__", "task")
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._task_failed(task.get_name(), exc, "")

    def _keep_running(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` for as long as the hub runs: whenever it fails (or returns), log
        it, count it and start it again after a backoff with jitter."""
        self._spawn(self._supervise(name, run), name)

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        delay = self.restart_delay
        while True:
            started = loop.time()
            try:
                await run()
            except Exception as exc:
                failure: Exception = exc
            else:
                failure = RuntimeError(f"{name} returned; it runs until cancelled")
            if loop.time() - started > self.restart_delay_max:
                delay = self.restart_delay  # it had been running well: a fresh failure
            wait = delay * random.uniform(0.5, 1.0)
            self._task_failed(name, failure, f"; restarting it in {wait:.2f}s")
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.restart_delay_max)

    def _task_failed(self, name: str, exc: BaseException, then: str) -> None:
        self.metrics.task_failures.labels(task=name).inc()
        logger.error("background task %r failed%s", name, then, exc_info=exc)


def _messages(events: list[RoomEvent]) -> list[Message]:
    # What a messages_only read returns.
    return [event for event in events if isinstance(event, Message)]


def _discard(index: dict[Connection, set[str]], connection: Connection, name: str) -> None:
    # Removes name from what connection touched; forgets the connection once it is empty.
    names = index.get(connection)
    if names is not None:
        names.discard(name)
        if not names:
            del index[connection]
