"""The browser side: the chat page at ``/``, its static files, and the tutorial's pages.

The page names its script and style by relative URLs (``static/app.js``), so that it
works under whatever prefix an application includes Hubbub at (``/chat/``).
"""

from __future__ import annotations

from collections.abc import Collection
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request
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


def cors_headers(origin: str | None, allowed: Collection[str]) -> dict[str, str]:
    """The CORS headers of a static file asked for by a page at ``origin``: that origin
    allowed if it is in ``allowed`` (``*``: any page). A static file is the same for
    every page, so no credentials are involved and a preflight never is."""
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*"}
    if not allowed:
        return {}
    # The answer depends on Origin: a cache must not hand one page's answer to another.
    headers = {"Vary": "Origin"}
    if origin is not None and origin in allowed:
        headers["Access-Control-Allow-Origin"] = origin
    return headers


def web_router(cors_origins: Collection[str] = (), *, tutorial: bool = True) -> APIRouter:
    """Routes for ``/``, ``/static/{name}`` (GET and HEAD; CORS for ``cors_origins``) and,
    with ``tutorial``, ``/tutorial/{echo,items,chat}``."""
    web = files("hubbub.web")
    index = web.joinpath("index.html").read_text(encoding="utf-8")
    static = {name: web.joinpath(name).read_bytes() for name in STATIC_TYPES}
    allowed = frozenset(cors_origins)
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(index, headers=INDEX_HEADERS)

    # HEAD too: a page or a CDN checks a script's headers before it fetches it. (uvicorn
    # leaves out the body of an answer to HEAD; Content-Length stays the GET's.)
    @router.api_route("/static/{name}", methods=["GET", "HEAD"])
    async def static_file(name: str, request: Request) -> Response:
        if name not in static:
            raise HTTPException(status_code=404)
        headers = {**HEADERS, **cors_headers(request.headers.get("origin"), allowed)}
        return Response(static[name], media_type=STATIC_TYPES[name], headers=headers)

    if tutorial:
        pages = {
            page: web.joinpath("tutorial", f"{page}.html").read_text(encoding="utf-8")
            for page in TUTORIAL_PAGES
        }

        @router.get("/tutorial/{page}", response_class=HTMLResponse)
        async def tutorial_page(page: str) -> HTMLResponse:
            if page not in pages:
                raise HTTPException(status_code=404)
            return HTMLResponse(pages[page], headers=HEADERS)

    return router
