"""An application of one's own that includes Hubbub's router and answers each request
with what the server made of its client: ``hubbub serve --app tests.whoami_app:app``.
Hubbub's own endpoints log no plain HTTP request, so the tests of ``X-Forwarded-*``
read the address and scheme of an HTTP request (and of a WebSocket, as the application
sees it) here."""

from __future__ import annotations

from fastapi import FastAPI, Request, WebSocket

from hubbub import Hubbub, Settings

app = FastAPI()
app.include_router(Hubbub(Settings()).router)


@app.get("/whoami")
async def whoami(request: Request) -> dict[str, object]:
    """The client's address and the scheme, as the application sees them."""
    client = request.client
    return {"client": client.host if client else None, "scheme": request.url.scheme}


@app.websocket("/whoami")
async def whoami_ws(websocket: WebSocket) -> None:
    """The same for a WebSocket, sent as its one message."""
    await websocket.accept()
    client = websocket.client
    await websocket.send_json(
        {"client": client.host if client else None, "scheme": websocket.url.scheme}
    )
    await websocket.close()
