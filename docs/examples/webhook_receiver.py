"""A backend's webhook receiver for Hubbub (docs/webhooks.md).

Hubbub POSTs each event here, signed with the secret both sides know::

    WEBHOOK_SECRET=s3cret uvicorn --app-dir docs/examples webhook_receiver:app --port 9000
    hubbub serve --webhook-urls http://127.0.0.1:9000/hubbub --webhook-secret s3cret

It checks the signature (and that the request is recent), drops events it has seen (an
event may come twice: delivery is at least once), and keeps what happened in each room;
``GET /rooms/{room}`` shows it. ``tests/test_examples.py`` runs this file.
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from hubbub.webhooks import InvalidSignature, verify

SECRET = os.environ["WEBHOOK_SECRET"]

app = FastAPI()
seen: deque[str] = deque(maxlen=10_000)  # recent event ids: a repeat is answered, not kept
activity: dict[str, list[dict[str, Any]]] = defaultdict(list)


@app.post("/hubbub", status_code=204)
async def hubbub_event(request: Request) -> None:
    body = await request.body()
    try:
        event = verify(SECRET, body, request.headers)
    except InvalidSignature as exc:
        raise HTTPException(401, str(exc)) from None
    if event["id"] in seen:
        return  # delivered before; answer 2xx so that it is not sent again
    seen.append(event["id"])
    if "room" not in event:  # user.online, user.offline
        return
    what = {"type": event["type"], "ts": event["ts"]}
    if "event" in event:  # message.created, .edited, .deleted, reaction.*, member.moderated
        what["seq"] = event["event"]["seq"]
        what["text"] = event["event"].get("text")
    else:  # member.joined, member.left, room.vacated
        what["user"] = event.get("user")
    activity[event["room"]].append(what)


@app.get("/rooms/{room}")
async def room_activity(room: str) -> list[dict[str, Any]]:
    return activity.get(room, [])
