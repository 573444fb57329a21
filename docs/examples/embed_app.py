"""A FastAPI application of one's own, with Hubbub under ``/chat`` (docs/embedding.md).

On Hubbub's own transport (settings from flags and ``HUBBUB_*`` variables)::

    hubbub serve --app embed_app:app --app-dir docs/examples --jwt-secret "$SECRET"

or under any ASGI server (settings from ``HUBBUB_*`` variables)::

    HUBBUB_JWT_SECRET="$SECRET" uvicorn --app-dir docs/examples embed_app:app

``tests/test_embedding.py`` runs this file both ways.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from hubbub import Hubbub, Settings
from hubbub.errors import ProtocolError


class Login(BaseModel):
    """Who logs in. (A real application checks a password or a session here.)"""

    user: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    name: str = Field(min_length=1, max_length=32)


class Order(BaseModel):
    """An order of the shop; each has a chat room of its own."""

    item: str = Field(min_length=1, max_length=100)


def build_app() -> FastAPI:
    """The shop: its own routes, and its chat from Hubbub."""
    # Settings() reads HUBBUB_* variables; `hubbub serve --app` sets them from its flags.
    hubbub = Hubbub(Settings())
    app = FastAPI(title="Shop")
    # /chat/ (the chat page), /chat/v1/ws, /chat/api/v1/..., /chat/readyz; the router
    # brings Hubbub's lifespan along, so the hub runs while the application does.
    app.include_router(hubbub.router, prefix="/chat")
    orders: dict[int, Order] = {}

    @app.post("/login")
    async def login(body: Login) -> dict[str, str]:
        """The shop's own login: a token that lets the user into its rooms as itself."""
        token = hubbub.create_token(body.user, body.name, rooms="order-*,lobby", ttl=3600)
        return {"token": token, "ws": f"/chat/v1/ws?token={token}"}

    @app.post("/orders", status_code=201)
    async def place_order(body: Order) -> dict[str, int | str]:
        """Place an order; its room hears about it from the shop."""
        number = len(orders) + 1
        orders[number] = body
        room = f"order-{number}"
        await hubbub.publish(room, f"Order {number} placed: {body.item}", sender="shop")
        return {"order": number, "room": room}

    @app.post("/orders/{number}/shipped")
    async def ship(number: int) -> dict[str, int]:
        """Tell the order's room, on every process, that it has shipped."""
        if number not in orders:
            raise HTTPException(404, "no such order")
        message = await hubbub.publish(
            f"order-{number}", f"Order {number} has shipped", sender="shop", data={"shipped": True}
        )
        return {"seq": message.seq}

    @app.get("/orders/{number}/chat")
    async def order_chat(number: int) -> dict[str, object]:
        """Who is in the order's room now, and its last messages."""
        room = f"order-{number}"
        try:
            recent = await hubbub.history(room, limit=20)
        except ProtocolError as exc:
            raise HTTPException(422, exc.message) from None
        return {"online": hubbub.presence(room), "recent": [m.text for m in recent]}

    @app.post("/users/{user}/logout")
    async def logout(user: str) -> dict[str, int]:
        """Close every chat connection of the user, on every process. (Behind the
        shop's own authentication in a real application, like every route here.)"""
        return {"closed_here": await hubbub.disconnect_user(user)}

    return app


app = build_app()
