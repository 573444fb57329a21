"""An exact echo server on Hubbub's transport, for Autobahn|Testsuite (``compliance/run``).

Every text message comes back as one text frame and every binary message as one binary
frame, written through Hubbub's direct channel: what Autobahn sees is what the transport
does, with no chat protocol in between. Without a direct channel (another ASGI server)
it echoes over plain ASGI instead.

Usage: ``python compliance/echo_server.py --port PORT`` (binds 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import uvicorn

from hubbub.config import Settings
from hubbub.outgoing import encode_binary_frame, encode_deflated_frame, encode_text_frame
from hubbub.server import ServerConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DIRECT = "hubbub.direct"
"""The scope extension under which Hubbub's transport offers its direct channel."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Above Autobahn's largest message (16 MiB, cases 9.*)."""


class Channel(Protocol):
    """The part of Hubbub's direct channel that the echo uses."""

    deflate: tuple[int, int] | None
    """permessage-deflate accepted (``HUBBUB_COMPRESSION=true``): the window bits."""

    def write_frame(self, frame: bytes) -> None:
        """Write one complete frame."""

    def attach(self, receiver: Echo) -> None:
        """Deliver every further message to ``receiver``."""


class Echo:
    """Writes each message back on the channel it came from."""

    __slots__ = ("channel",)

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def receive_text(self, text: str) -> None:
        """A text message: back as one text frame (compressed if negotiated)."""
        deflate = self.channel.deflate
        if deflate is not None:
            self.channel.write_frame(encode_deflated_frame(text.encode(), deflate[0], 0x81))
        else:
            self.channel.write_frame(encode_text_frame(text.encode()))

    def receive_bytes(self, data: bytes) -> None:
        """A binary message: back as one binary frame (compressed if negotiated)."""
        deflate = self.channel.deflate
        if deflate is not None:
            self.channel.write_frame(encode_deflated_frame(data, deflate[0], 0x82))
        else:
            self.channel.write_frame(encode_binary_frame(data))

    def disconnected(self, code: int) -> None:
        """Nothing to release."""


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer uvicorn's startup and shutdown; there is nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo_over_asgi(receive: Receive, send: Send) -> None:
    """The same echo through ASGI events, for a server without a direct channel."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application: lifespan, then one echo per WebSocket; HTTP is refused."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    channel: Channel | None = scope.get("extensions", {}).get(DIRECT)
    if channel is None:
        await echo_over_asgi(receive, send)
        return
    channel.attach(Echo(channel))  # the connection stays open after we return


def settings_for(port: int) -> Settings:
    """Hubbub's settings for a conformance run on ``port``."""
    return Settings(
        host="127.0.0.1",
        port=port,
        log_level="warning",
        max_frame_bytes=MAX_MESSAGE_BYTES,
        # No keepalive pings of our own: Autobahn counts every frame it did not ask for.
        ping_interval=3600,
        ping_timeout=3600,
        # A busy machine echoing 16 MiB messages is slow; a close must not be cut short.
        close_timeout=60,
        handshake_timeout=30,
        shutdown_timeout=2,
    )


def main() -> None:
    """Serve the echo on 127.0.0.1 until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="An exact echo server on Hubbub's transport.")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    port = parser.parse_args().port
    uvicorn.Server(ServerConfig(app, settings_for(port))).run()


if __name__ == "__main__":
    main()
