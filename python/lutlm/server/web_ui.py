"""The page at /: a chat and compiler-tasks client of this server's own API.

Three static files shipped inside the package (server/web/: index.html, app.js,
style.css), plain JavaScript with no framework and no build step, so installing lutlm
needs no Node toolchain and the page works offline. They are served without the API key
(the page itself holds no secret: it asks for the key and sends it as an
`Authorization` header on its API calls, never in a URL). A Content-Security-Policy
limited to 'self' makes the browser refuse anything the page might load from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

WEB_DIR = Path(__file__).with_name("web")
# path -> (file in WEB_DIR, media type): the whole page; nothing else is served from it.
WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Small files: revalidate each load, so a new lutlm version's page is never stale.
    "Cache-Control": "no-cache",
}

router = APIRouter()


def _route(name: str, media_type: str):
    async def serve() -> Response:
        # Read per request (a few kB): edits to the page show on reload.
        return Response((WEB_DIR / name).read_bytes(), media_type=media_type, headers=_HEADERS)

    return serve


for _path, (_name, _type) in WEB_FILES.items():
    router.add_api_route(_path, _route(_name, _type), methods=["GET"], include_in_schema=False)
