"""A client told it has joined receives what is published from then on, from any
process (issue 12, hole 12): the broker subscription is live before the 101.

Server b reaches the real broker through a proxy that makes its subscription of the
chat channel take effect late (Redis SUBSCRIBE, PostgreSQL LISTEN, NATS SUB); server a
talks to the broker directly. Without subscribing before the handshake, b answers 101
at once and a message published right after it is gone; and a broker whose subscribe
returned before the server had the subscription would lose it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from hubbub.brokers.nats_wire import subject_for
from hubbub.hub import ROOM_PREFIX
from hubbub.routes.seed import CHAT_CHANNEL
from tests.integration.chat import TIMEOUT, ChatClient
from tests.integration.slowproxy import SlowProxy
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import service_url

# Long beside the time a.publish takes to reach the broker (milliseconds), so that
# without the fix the message is published while b's subscription is still held back.
HOLD = 2.0

ROOM = f"late-{secrets.token_hex(4)}"


def subscribing(broker_name: str, channel: str) -> tuple[bytes, ...]:
    """What a subscription of ``channel`` looks like on the wire to the broker (under the
    namespace the servers inherit from the environment, if any)."""
    namespace = os.environ.get("HUBBUB_NAMESPACE", "")
    channel = f"{namespace}/{channel}" if namespace else channel
    if broker_name == "nats":
        return (b"SUB " + subject_for(channel).encode() + b" ",)
    return (b"LISTEN" if broker_name == "postgres" else b"SUBSCRIBE", channel.encode())


@pytest.fixture
async def slow_subscribe(broker_name: str) -> AsyncIterator[SlowProxy]:
    """Holds back subscriptions of the chat channel and of ``ROOM``."""
    rules = [subscribing(broker_name, c) for c in (CHAT_CHANNEL, ROOM_PREFIX + ROOM)]
    proxy = SlowProxy(service_url(broker_name), rules, HOLD)
    yield await proxy.start()
    await proxy.stop()


async def test_a_message_right_after_the_handshake_arrives(
    broker_name: str,
    slow_subscribe: SlowProxy,
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    store = ("--store-url", f"sqlite:///{tmp_path}/hubbub.db")  # one deployment
    a = start_server("--broker-url", service_url(broker_name), *store)
    # From a thread: the proxy runs on this event loop, and b starts through it.
    b = await asyncio.to_thread(start_server, "--broker-url", slow_subscribe.url, *store)
    one = await ChatClient.join(a.ws(""), 1)
    two = await ChatClient.join(b.ws(""), 2)  # returns once the 101 is in
    await one.say("right after your join")
    await two.wait_for("Client #1 says: right after your join")
    assert slow_subscribe.held  # b's subscription did go the slow way
    await one.close()
    await two.close()


async def test_a_room_message_right_after_joined_arrives(
    broker_name: str,
    slow_subscribe: SlowProxy,
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    store = ("--store-url", f"sqlite:///{tmp_path}/hubbub.db")  # one deployment
    a = start_server("--broker-url", service_url(broker_name), *store)
    b = await asyncio.to_thread(start_server, "--broker-url", slow_subscribe.url, *store)
    ann = await RoomClient.open(a.ws(""), "ann")
    bob = await RoomClient.open(b.ws(""), "bob")
    await ann.join(ROOM)
    await bob.join(ROOM)  # returns once `joined` is in
    await ann.say(ROOM, "right after your join")
    await bob.has_seqs(ROOM, 1)
    assert bob.texts[ROOM] == ["right after your join"]
    assert slow_subscribe.held
    await ann.close()
    await bob.close()


async def test_a_refused_chat_connection_leaves_no_subscription(
    start_server: Callable[..., ServerProcess],
) -> None:
    release = asyncio.Event()
    rules = [subscribing("redis", CHAT_CHANNEL)]
    proxy = await SlowProxy(service_url("redis"), rules, HOLD, release).start()
    try:
        await refused_after_subscribing(proxy, release, start_server)
    finally:
        release.set()
        await proxy.stop()


async def refused_after_subscribing(
    proxy: SlowProxy, release: asyncio.Event, start_server: Callable[..., ServerProcess]
) -> None:
    b = await asyncio.to_thread(start_server, "--broker-url", proxy.url, "--max-connections", "1")

    async def chat() -> int | None:
        async with connect(b.ws("/ws/1")) as ws:
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            return ws.close_code

    refused = asyncio.create_task(chat())
    # Its subscription is on its way; meanwhile another client takes the last place.
    await proxy.wait(proxy.held, b"SUBSCRIBE")
    async with connect(b.ws("/ws")) as echo:
        await echo.send("first")
        assert await asyncio.wait_for(echo.recv(), TIMEOUT) == "Message text was: first"
        release.set()
        assert await refused == 1013
        # Nobody on b is in the chat: b gives the subscription up.
        await proxy.wait(proxy.forwarded, b"UNSUBSCRIBE")


async def test_a_room_message_right_after_a_reconnection_arrives(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # After a reconnection b re-reads its rooms from the store; what is published after
    # that must reach it, so its subscriptions must be live by then (Redis answers a
    # SUBSCRIBE asynchronously, so that means waiting for the confirmation).
    rules = [subscribing("redis", ROOM_PREFIX + ROOM)]
    proxy = await SlowProxy(service_url("redis"), rules, HOLD).start()
    try:
        store = ("--store-url", f"sqlite:///{tmp_path}/hubbub.db")
        fast = ("--broker-backoff-max", "0.25")
        a = start_server("--broker-url", service_url("redis"), *store, *fast)
        b = await asyncio.to_thread(start_server, "--broker-url", proxy.url, *store, *fast)
        ann = await RoomClient.open(a.ws(""), "ann")
        bob = await RoomClient.open(b.ws(""), "bob")
        await ann.join(ROOM)
        await bob.join(ROOM)
        proxy.sever()
        await asyncio.to_thread(b.wait_for_log, "reconnected", TIMEOUT)
        # b's store answers one query at a time, in order: once this is answered, b
        # has re-read the room (that read was queued when it logged the reconnection).
        mark = len(bob.frames)
        await bob.send(type="history", room=ROOM)
        await bob.next_of("history", mark, room=ROOM)
        await ann.say(ROOM, "right after the reconnection")
        await bob.has_seqs(ROOM, 1)
        assert bob.texts[ROOM] == ["right after the reconnection"]
        assert len(proxy.held) >= 2  # the join, and the subscription again
        await ann.close()
        await bob.close()
    finally:
        await proxy.stop()
