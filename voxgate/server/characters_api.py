"""``GET /api/characters``: the characters a device (or the talk page) may pick."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voxgate.core.errors import UnavailableError
from voxgate.server.auth import bearer_token
from voxgate.server.policy import shared_token_refusal


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


def routes() -> list[BaseRoute]:
    return [Route("/api/characters", characters)]
