"""A tutorial-chat client for multi-process tests: reads in the background, waits on events."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect

TIMEOUT = 20


class ChatClient:
    """``/ws/{client_id}`` on one server; every received line is kept in order."""

    def __init__(self, ws: ClientConnection, client_id: int) -> None:
        self.ws = ws
        self.client_id = client_id
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def join(cls, url: str, client_id: int) -> ChatClient:
        return cls(await connect(f"{url}/ws/{client_id}"), client_id)

    async def _read(self) -> None:
        async for message in self.ws:
            assert isinstance(message, str)
            async with self._changed:
                self.lines.append(message)
                self._changed.notify_all()

    async def say(self, text: str) -> None:
        await self.ws.send(text)

    async def wait_for(self, *expected: str) -> None:
        """Wait until every line in ``expected`` has arrived."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: all(e in self.lines for e in expected)), TIMEOUT
            )

    def said_by(self, client_id: int) -> list[str]:
        prefix = f"Client #{client_id} says: "
        return [line[len(prefix) :] for line in self.lines if line.startswith(prefix)]

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._reader, TIMEOUT)
