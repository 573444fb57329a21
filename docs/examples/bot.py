"""A bot that answers "!ping" with "pong", on hubbub.client (docs/python-client.md).

python docs/examples/bot.py ws://127.0.0.1:8000/v1/ws lobby
"""

import asyncio
import contextlib
import sys

from hubbub.client import Client, Message


async def main(url: str, room: str) -> None:
    async with Client(url, name="pingbot") as client:
        await client.join(room)
        async for event in client.events():
            if isinstance(event, Message) and event.text.strip() == "!ping":
                await client.send(event.room, "pong", reply_to=event.seq)


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/v1/ws"
    room = sys.argv[2] if len(sys.argv) > 2 else "lobby"
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the client closes, then we exit
        asyncio.run(main(url, room))
