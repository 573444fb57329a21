"""``create_app(settings)``: the FastAPI application, built without global state."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline

from hubbub.auth import Authenticator
from hubbub.brokers import broker_from_url
from hubbub.config import Settings
from hubbub.hub import Hub
from hubbub.metrics import Metrics
from hubbub.routes.api import ApiKeyGate, api_router
from hubbub.routes.rooms import rooms_router
from hubbub.routes.seed import add_seed_routes
from hubbub.routes.web import web_router
from hubbub.stores import Retention, store_from_url
from hubbub.stores.timed import TimedStore


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build Hubbub's application; everything it uses hangs off ``app.state.hub``."""
    settings = settings or Settings()
    broker = broker_from_url(
        settings.broker_url,
        buffer_messages=settings.broker_buffer_messages,
        buffer_bytes=settings.broker_buffer_bytes,
        backoff_max=settings.broker_backoff_max,
        namespace=settings.namespace,
    )
    store = store_from_url(
        settings.store_url,
        Retention(
            max_messages=settings.history_max_messages,
            max_age_seconds=settings.history_max_age,
        ),
    )
    metrics = Metrics()
    hub = Hub(settings, broker, TimedStore(store, metrics), metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            metrics.process_exited()

    # /docs with Swagger UI's script and style served from a package, not a CDN; no
    # validator badge (it calls validator.swagger.io) and no ReDoc (its page fetches
    # its logo from redocly's CDN).
    app = FastAPIOffline(
        title="Hubbub",
        version="0.1.0",
        lifespan=lifespan,
        redoc_url=None,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.add_middleware(ApiKeyGate, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    app.state.hub = hub
    app.state.settings = settings
    add_seed_routes(app.router, hub)
    # Guest tokens are signed with the deployment's secret, known once the store started.
    authenticator = Authenticator(settings, guest_secret=lambda: hub.store.deployment.secret)
    app.include_router(rooms_router(hub, authenticator))
    app.include_router(api_router(hub))
    app.include_router(web_router())

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive and serving HTTP."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"])
    def metrics_endpoint(request: Request) -> Response:
        """Prometheus metrics (text exposition format; OpenMetrics if asked for). A plain
        ``def``: with several workers it reads their files, off the event loop."""
        body, content_type = metrics.render(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """The broker is reachable and the process is not shutting down."""
        ready = hub.ready
        body = {
            "status": "ready" if ready else "not ready",
            "broker": {
                "url_scheme": settings.broker_url.split("://", 1)[0],
                "ready": hub.broker.ready,
                **dataclasses.asdict(hub.broker.stats),
            },
            "connections": len(hub.connections),
            "pid": os.getpid(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


def create_app_from_env() -> FastAPI:
    """Factory for worker processes: settings come from ``HUBBUB_*`` variables."""
    return create_app(Settings())
