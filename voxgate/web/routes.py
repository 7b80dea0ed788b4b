"""HTTP routes of the web pages: ``/`` (talk to voxgate), ``/admin`` (devices, conversations,
usage, latency and errors, read from the admin API), ``/static/...`` (their modules and styles)
and ``/api/characters`` (the characters a device or the page may pick).

Plain HTTP routes: Starlette matches them on ``http`` scopes only, so the ElatoAI transport's
WebSocket route on ``/`` keeps working next to the page.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from voxgate.core.config import Settings
from voxgate.core.errors import UnavailableError
from voxgate.server.auth import bearer_token
from voxgate.server.policy import shared_token_refusal

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


async def characters(request: Request) -> Response:
    """The stored characters, for any device token or the admin token (the picker)."""
    ctx = request.app.state.ctx
    try:
        device = await ctx.authenticate(bearer_token(request.headers))
    except UnavailableError as exc:
        return JSONResponse(
            {"error": {"code": "unavailable", "message": str(exc)}},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    refusal = shared_token_refusal(device, "characters") if device is not None else None
    if device is None or refusal is not None:
        message = refusal or "a device or admin token is required"
        return JSONResponse(
            {"error": {"code": "unauthorized", "message": message}}, status_code=401
        )
    listed = await ctx.store.characters.all()
    return JSONResponse(
        {
            "characters": [
                {"id": c.slug, "name": c.name, "description": c.description} for c in listed
            ],
            "default": device.settings.character,
        },
        headers={"Cache-Control": "no-store"},
    )


def routes(settings: Settings) -> list[BaseRoute]:
    """``/``, ``/admin`` and ``/static``. ``settings`` is taken for symmetry with the transports'
    routes; the pages need none: they derive every URL from their own location."""
    return [
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/admin", admin_page, methods=["GET", "HEAD"]),
        Route("/api/characters", characters),
        Mount("/static", app=_StaticFiles(directory=STATIC_DIR), name="static"),
    ]
