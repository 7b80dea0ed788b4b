"""HTTP routes of the web pages: ``/`` (talk to voxgate), ``/admin`` (devices, conversations,
usage, latency and errors, read from the admin API) and ``/static/...`` (their modules and
styles). The APIs the pages read are the server's (:mod:`voxgate.server.characters_api`,
:mod:`voxgate.server.admin_api`).

Plain HTTP routes: Starlette matches them on ``http`` scopes only, so the ElatoAI transport's
WebSocket route on ``/`` keeps working next to the page.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from voxgate.core.config import Settings

STATIC_DIR = Path(__file__).parent / "static"

_HEADERS = {
    # The page is small and changes with the server: always revalidate, never serve a stale copy
    # that speaks an older protocol.
    "Cache-Control": "no-cache",
    # The admin token travels in the URL fragment; keep the page's URL out of Referer headers.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class _StaticFiles(StaticFiles):
    """StaticFiles with the page's headers on every file."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


async def page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)


async def admin_page(request: Request) -> Response:
    """The admin page. It holds no data itself: its modules ask ``/api/admin/...`` with the
    admin token, so the page can be served to anyone."""
    return FileResponse(STATIC_DIR / "admin.html", headers=_HEADERS)


def routes(settings: Settings) -> list[BaseRoute]:
    """``/``, ``/admin`` and ``/static``. ``settings`` is taken for symmetry with the transports'
    routes; the pages need none: they derive every URL from their own location."""
    return [
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/admin", admin_page, methods=["GET", "HEAD"]),
        Mount("/static", app=_StaticFiles(directory=STATIC_DIR), name="static"),
    ]
