"""Stand-ins shared by tests that drive the hub without sockets."""

from __future__ import annotations

from hubbub.outgoing import OutFrame


class SpyConnection:
    """A connection stand-in that keeps every frame it is sent."""

    def __init__(self) -> None:
        self.frames: list[OutFrame] = []

    def send(self, frame: OutFrame) -> None:
        self.frames.append(frame)

    async def finish(self) -> None:
        pass
