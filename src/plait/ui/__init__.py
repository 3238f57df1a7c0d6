"""The web console: a page at ``/`` and its assets under ``/ui/``, all served by Plait
(no build step, no CDN). The page signs in (a user's email and password, or an API token)
and then calls the same ``/api/v1`` as any client, so every page and action is held to the
role's scopes by the API itself."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
# The page names its assets without a version: the browser asks again each time (a 304
# when unchanged), so a new Plait never runs an old script.
NO_CACHE = {"Cache-Control": "no-cache"}
SECURITY = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def page(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={**NO_CACHE, **SECURITY})


class Assets(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update({**NO_CACHE, "X-Content-Type-Options": "nosniff"})
        return response


routes = [
    Route("/", page),
    Mount("/ui", app=Assets(directory=STATIC), name="ui"),
]
