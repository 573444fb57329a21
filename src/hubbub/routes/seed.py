"""The three WebSocket endpoints of FastAPI's WebSockets tutorial, with its exact strings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Query, WebSocket, WebSocketException, status

from hubbub.auth import patterns, trusted_origin
from hubbub.hub import Hub

CHAT_CHANNEL = "seed:chat"


async def cookie_or_token(
    websocket: WebSocket,
    session: Annotated[str | None, Cookie()] = None,
    token: Annotated[str | None, Query()] = None,
) -> str:
    """The tutorial's credentials: a ``session`` cookie or a ``token`` query; else 1008.

    A browser sends its cookies along with any page's WebSocket, so a cookie counts only
    from a trusted Origin (``--allowed-origins``, or the server's own); an upgrade with a
    cookie from another Origin is refused (1008 before the upgrade: HTTP 403), which
    stops cross-site WebSocket hijacking. A client that sends no Origin is no browser:
    it keeps the tutorial's behaviour.
    """
    if session is None and token is None:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
    if session is not None and "origin" in websocket.headers:
        allowed = patterns(websocket.app.state.settings.allowed_origins)
        if not trusted_origin(websocket.headers, websocket.url.scheme, allowed):
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
    return session or token  # type: ignore[return-value]


def add_seed_routes(router: APIRouter, hub: Hub) -> None:
    """Add the routes ``/ws``, ``/items/{item_id}/ws`` and ``/ws/{client_id}`` to
    ``router``: the application's own (``app.router``), since each router included
    instead adds a layer of matching to every connection (~7 % of a connection's cost
    in the bench's churn, by py-spy)."""

    # Each endpoint hands its connection two plain callbacks and returns: under
    # ``hubbub serve`` no task or coroutine is left behind per client (see
    # Connection.serve); the wire behaviour is the tutorial's.

    @router.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        connection = await hub.connect(websocket)
        if connection is None:
            return

        def on_text(text: str) -> None:
            connection.send_text(f"Message text was: {text}")

        await connection.serve(on_text, lambda: hub.drop(connection))

    @router.websocket("/items/{item_id}/ws")
    async def items(
        websocket: WebSocket,
        item_id: str,
        credentials: Annotated[str, Depends(cookie_or_token)],
        q: int | None = None,
    ) -> None:
        connection = await hub.connect(websocket)
        if connection is None:
            return

        def on_text(text: str) -> None:
            connection.send_text(f"Session cookie or query token value is: {credentials}")
            if q is not None:
                connection.send_text(f"Query parameter q is: {q}")
            connection.send_text(f"Message text was: {text}, for item ID: {item_id}")

        await connection.serve(on_text, lambda: hub.drop(connection))

    @router.websocket("/ws/{client_id}")
    async def chat(websocket: WebSocket, client_id: int) -> None:
        # Joined before the 101: a message sent on another process once the client has
        # it reaches the client.
        connection = await hub.connect(websocket, CHAT_CHANNEL)
        if connection is None:
            return

        def on_text(text: str) -> None:
            connection.send_text(f"You wrote: {text}")
            hub.publish(CHAT_CHANNEL, f"Client #{client_id} says: {text}")

        def on_end() -> None:
            hub.drop(connection)
            hub.publish(CHAT_CHANNEL, f"Client #{client_id} left the chat")

        await connection.serve(on_text, on_end)
