"""``create_app(settings)``: the whole server as a FastAPI application, built on
:class:`hubbub.embed.Hubbub`, without global state."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from hubbub.config import Settings
from hubbub.embed import Hubbub, StartedGate
from hubbub.routes.api import ApiKeyGate
from hubbub.routes.seed import add_seed_routes


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build Hubbub's whole server: every route of :attr:`Hubbub.router`, the tutorial's
    endpoints and pages, and ``/docs``; ``app.state.hubbub`` is its :class:`Hubbub`
    (``app.state.hub`` its hub). To put Hubbub into an application of one's own, include
    ``Hubbub(settings).router`` instead (``docs/embedding.md``): mounted with
    ``app.mount``, this application's lifespan never runs, and it answers 503."""
    hubbub = Hubbub(settings)
    settings = hubbub.settings
    # /docs with Swagger UI's script and style served from a package, not a CDN; no
    # validator badge (it calls validator.swagger.io) and no ReDoc (its page fetches
    # its logo from redocly's CDN).
    app = FastAPIOffline(
        title="Hubbub",
        version="0.1.0",
        lifespan=hubbub.lifespan,
        redoc_url=None,
        swagger_ui_parameters={"validatorUrl": None},
    )
    # Middleware added last runs first: the key is checked before anything else.
    app.add_middleware(StartedGate, hubbub=hubbub)
    app.add_middleware(ApiKeyGate, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    app.state.hubbub = hubbub
    app.state.hub = hubbub.hub
    app.state.settings = settings
    add_seed_routes(app.router, hubbub.hub)
    # The routers straight into the application's, not through Hubbub.router: each
    # router level adds a layer of matching to every connection. The gates above are
    # the whole application's, so the routes need no dependencies of their own.
    hubbub._add_routes(app.router, hub_routes=[], api_routes=[], tutorial=True)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for worker processes: settings come from ``HUBBUB_*`` variables."""
    return create_app(Settings())
