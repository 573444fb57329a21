"""The browser side: the chat page at ``/``, its static files, and the tutorial's pages."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

STATIC_TYPES = {
    "hubbub.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
TUTORIAL_PAGES = ("echo", "items", "chat")
# No build step means no hashed file names: browsers revalidate rather than keep stale code.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
# The chat page runs only its own files; a message that slipped past textContent still
# could not run a script.
INDEX_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def web_router() -> APIRouter:
    """Routes for ``/``, ``/static/{name}`` and ``/tutorial/{echo,items,chat}``."""
    web = files("hubbub.web")
    index = web.joinpath("index.html").read_text(encoding="utf-8")
    static = {name: web.joinpath(name).read_bytes() for name in STATIC_TYPES}
    tutorial = {
        page: web.joinpath("tutorial", f"{page}.html").read_text(encoding="utf-8")
        for page in TUTORIAL_PAGES
    }
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(index, headers=INDEX_HEADERS)

    @router.get("/static/{name}")
    async def static_file(name: str) -> Response:
        if name not in static:
            raise HTTPException(status_code=404)
        return Response(static[name], media_type=STATIC_TYPES[name], headers=HEADERS)

    @router.get("/tutorial/{page}", response_class=HTMLResponse)
    async def tutorial_page(page: str) -> HTMLResponse:
        if page not in tutorial:
            raise HTTPException(status_code=404)
        return HTMLResponse(tutorial[page], headers=HEADERS)

    return router
