"""A ``/v1/ws`` client for tests: a background reader, and waits on what arrived."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TIMEOUT = 30


class RoomClient:
    """Keeps every frame it receives; ``messages[room]`` holds the seqs in arrival order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.messages: dict[str, list[int]] = {}
        self.texts: dict[str, list[str]] = {}
        self.closed = False
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, name: str | None = None, query: str = "", **kwargs: Any
    ) -> RoomClient:
        """Connect as guest ``name``, or with an explicit ``query`` (``token=…``)."""
        query = query or (f"name={quote(name)}" if name else "")
        return cls(await connect(f"{url}/v1/ws" + (f"?{query}" if query else ""), **kwargs))

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                async with self._changed:
                    self.frames.append(frame)
                    if frame["type"] == "message":
                        self.messages.setdefault(frame["room"], []).append(frame["seq"])
                        self.texts.setdefault(frame["room"], []).append(frame["text"])
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            async with self._changed:
                self.closed = True
                self._changed.notify_all()

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), TIMEOUT)

    async def next_of(self, kind: str, start: int = 0, **match: Any) -> dict[str, Any]:
        """The first frame of ``kind`` (matching ``match``) at or after index ``start``."""

        def find() -> dict[str, Any] | None:
            for frame in self.frames[start:]:
                if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                    return frame
            return None

        await self.wait(lambda: find() is not None or self.closed)
        found = find()
        assert found is not None, f"no {kind} {match}; got {self.frames[start:]}"
        return found

    async def join(self, room: str, since: int | None = None) -> dict[str, Any]:
        mark = len(self.frames)
        frame: dict[str, Any] = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        await self.ws.send(json.dumps(frame))
        return await self.next_of("joined", mark, room=room)

    async def say(self, room: str, text: str, ref: str | int | None = None) -> dict[str, Any]:
        """Send and wait for the ack; returns it."""
        mark = len(self.frames)
        ref = ref if ref is not None else f"{room}:{text}"
        await self.send(type="send", room=room, text=text, ref=ref)
        return await self.next_of("ack", mark, ref=ref)

    async def has_seqs(self, room: str, last: int) -> None:
        await self.wait(lambda: last in self.messages.get(room, []) or self.closed)

    @property
    def close_code(self) -> int | None:
        rcvd = self.ws.protocol.close_rcvd
        return rcvd.code if rcvd is not None else None

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._reader, TIMEOUT)
