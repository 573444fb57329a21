"""``/healthz``, ``/readyz`` and ``/metrics``: what load balancers and Prometheus ask."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hubbub.hub import Hub
from hubbub.metrics import Metrics


def health_router(hub: Hub, metrics: Metrics, started: Callable[[], bool]) -> APIRouter:
    """The health routes of ``hub``; ``started()`` says whether its lifespan has started
    it (a hub nobody started is not ready, whatever its broker says)."""
    router = APIRouter(tags=["health"])
    scheme = hub.settings.broker_url.split("://", 1)[0]

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive and serving HTTP."""
        return {"status": "ok"}

    @router.get("/metrics")
    def metrics_endpoint(request: Request) -> Response:
        """Prometheus metrics (text exposition format; OpenMetrics if asked for). A plain
        ``def``: with several workers it reads their files, off the event loop."""
        body, content_type = metrics.render(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """The hub is started, its broker is reachable and the process is not shutting
        down."""
        running = started()
        ready = running and hub.ready
        body = {
            "status": "ready" if ready else "not ready",
            "started": running,
            "broker": {
                "url_scheme": scheme,
                "ready": hub.broker.ready,
                **dataclasses.asdict(hub.broker.stats),
            },
            "connections": len(hub.connections),
            "pid": os.getpid(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    return router
