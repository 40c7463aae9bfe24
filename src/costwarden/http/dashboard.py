"""The web dashboard at ``/dashboard`` (SPEC section 11): static files built from ``dashboard/``.

The page itself needs no token: it signs in with an admin token kept in the browser session and
calls the admin API with it. Every path under ``/dashboard/`` that is not an asset answers the
app's ``index.html``, so that a reload on a client route (``/dashboard/alerts``) works.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

PREFIX = "/dashboard"
# The app loads only its own files and talks only to this server; nothing may frame it.
_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Asset names are fixed (the build is compared with its sources), so browsers revalidate.
    "cache-control": "no-cache",
}


def static_dir() -> Path:
    """Where the built dashboard lies inside the installed package."""
    return Path(str(files("costwarden.dashboard").joinpath("static")))


class _Assets(StaticFiles):
    """Static files with the dashboard's security and caching headers."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response


def dashboard_routes(root: Path | None = None) -> list[BaseRoute]:
    """``/dashboard`` (the app's page for every client route) and ``/dashboard/assets/...``."""
    base = static_dir() if root is None else root
    index = base / "index.html"

    async def page(request: Request) -> Response:
        if not index.is_file():
            return PlainTextResponse("The dashboard is not built: run scripts/build-dashboard.", status_code=404)
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def slash(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=308)

    return [
        Route(PREFIX, slash, methods=["GET", "HEAD"]),
        # The script is ~750 KB and ~220 KB compressed: worth compressing on the way out.
        Mount(f"{PREFIX}/assets", app=GZipMiddleware(_Assets(directory=base / "assets", check_dir=False)),
              name="dashboard-assets"),
        Route(PREFIX + "/{rest:path}", page, methods=["GET", "HEAD"]),
    ]


__all__ = ["PREFIX", "dashboard_routes", "static_dir"]
