"""python-socketio as an ASGI app on uvicorn: a peer of Hubbub's rooms benchmark.

    bench/.venv/bin/python bench/peers/python_socketio_app.py --port 8000

The same rooms as ``socketio_server.js`` (Socket.IO 4 on Node), see there: ``join``,
``send`` (to every member, the sender included), ``leave``, with acks and ``presence``
events; nothing stored. python-socketio's defaults otherwise (``async_handlers``: each
event in a task of its own). uvicorn as Hubbub runs it: uvloop, httptools, the default
WebSocket implementation, no permessage-deflate. ``GET /readyz`` answers 200.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"])
names: dict[str, str] = {}  # sid -> display name
rooms_of: dict[str, set[str]] = {}  # sid -> rooms joined
sizes: dict[str, int] = {}  # room -> members


def now() -> str:
    """The time of a message, as Hubbub writes it (ISO 8601, UTC, milliseconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@sio.event
async def connect(sid: str, environ: dict[str, Any]) -> None:
    query = dict(
        part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&") if "=" in part
    )
    names[sid] = query.get("name", sid)
    rooms_of[sid] = set()


@sio.event
async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    room = data.get("room") if isinstance(data, dict) else None
    if not isinstance(room, str):
        return {"error": "bad_frame"}
    if room not in rooms_of[sid]:
        rooms_of[sid].add(room)
        sizes[room] = sizes.get(room, 0) + 1
        await sio.enter_room(sid, room)
        await sio.emit(
            "presence", {"room": room, "joined": [names[sid]], "left": []}, room=room, skip_sid=sid
        )
    return {"room": room, "members": sizes[room]}


async def _left(sid: str, room: str) -> None:
    sizes[room] -= 1
    if not sizes[room]:
        del sizes[room]
    await sio.emit(
        "presence", {"room": room, "joined": [], "left": [names[sid]]}, room=room, skip_sid=sid
    )


@sio.event
async def leave(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    room = data.get("room") if isinstance(data, dict) else None
    if isinstance(room, str) and room in rooms_of[sid]:
        rooms_of[sid].discard(room)
        await sio.leave_room(sid, room)
        await _left(sid, room)
    return {"room": room}


@sio.event
async def send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    room = data.get("room") if isinstance(data, dict) else None
    if room not in rooms_of.get(sid, ()) or not isinstance(data.get("text"), str):
        return {"error": "not_joined"}
    message = {"room": room, "from": names[sid], "text": data["text"], "ts": now()}
    await sio.emit("message", message, room=room)
    return {"room": room}


@sio.event
async def disconnect(sid: str, *_: Any) -> None:
    for room in rooms_of.pop(sid, set()):
        await _left(sid, room)
    names.pop(sid, None)


async def readyz(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /readyz``: 200; anything else 404 (the benchmark's readiness probe)."""
    if scope["type"] != "http":
        return
    ok = scope["path"] == "/readyz"
    await send({"type": "http.response.start", "status": 200 if ok else 404, "headers": []})
    await send({"type": "http.response.body", "body": b"ok" if ok else b"not found"})


app = socketio.ASGIApp(sio, other_asgi_app=readyz)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=a.port,
        log_level="warning",
        ws_per_message_deflate=False,
        lifespan="off",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
