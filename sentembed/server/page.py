"""The web playground: `GET /` and its two static files, served from the package.

The page holds no secret, so it answers without the API key (limits.OPEN_PATHS names these
paths); its calls to the API carry the key the person types. A fixed table of files, read
once: no path from the URL ever reaches the file system. The Content-Security-Policy allows
only this origin's script and styles, so markup that reached the page by mistake could not
run a script either (the page inserts every text as text in the first place)."""
from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

# URL path -> (file in sentembed/server/static, media type)
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}

_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_page_routes(app: FastAPI) -> None:
    """Register GET / (the playground) and its script and stylesheet on app."""
    static = resources.files("sentembed.server") / "static"
    for path, (name, media_type) in PAGE_FILES.items():
        app.add_api_route(path, _file_route((static / name).read_bytes(), media_type), methods=["GET"],
                          include_in_schema=False, name=f"page:{name}")


def _file_route(body: bytes, media_type: str):
    # A closure, not default arguments: FastAPI would read those as query parameters.
    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=_HEADERS)

    return serve
