"""Applications that embed Hubbub, for server processes the tests start (``--factory``)."""

from __future__ import annotations

from fastapi import FastAPI

from hubbub import Settings, create_app


def mounted() -> FastAPI:
    """The whole server mounted under ``/chat`` of another app: Starlette never runs a
    mounted app's lifespan, so its hub is never started."""
    app = FastAPI()
    app.mount("/chat", create_app(Settings()))
    return app
