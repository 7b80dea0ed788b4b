"""The admin JSON API (``/api/admin/...``): devices, users, characters, conversations, usage,
latency and errors, for the web page and scripts. Every route wants the admin token
(``Authorization: Bearer TOKEN``).

Times are seconds since the Unix epoch; days are UTC (``YYYY-MM-DD``). Registries (devices, users,
characters) come in the order they were added; conversations, usage, latency and errors newest
first. Errors are ``{"error": {"code": ..., "message": ...}}``: 400 ``bad_request`` (the message
names the field), 401 ``unauthorized``, 404 ``not_found``, 409 ``conflict``, 503 ``unavailable``
(the database is away).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voxgate.core.config import Settings
from voxgate.core.errors import ConfigError, NotFoundError, StoreError, UnavailableError, reason
from voxgate.server.admin_api import _handlers as h
from voxgate.server.admin_api._handlers import AdminContext, Handler
from voxgate.server.admin_api._input import ApiError
from voxgate.server.auth import bearer_token
from voxgate.store.devices import same_secret
from voxgate.store.errors import StoreConflict

logger = logging.getLogger(__name__)

PREFIX = "/api/admin"


def routes() -> list[BaseRoute]:
    table: list[tuple[str, Handler, str]] = [
        ("/overview", h.overview, "GET"),
        ("/devices", h.list_devices, "GET"),
        ("/devices", h.add_device, "POST"),
        ("/devices/{name}", h.change_device, "PATCH"),
        ("/devices/{name}/revoke", h.revoke_device, "POST"),
        ("/devices/{name}/pair", h.pair_device, "POST"),
        ("/users", h.list_users, "GET"),
        ("/users", h.add_user, "POST"),
        ("/characters", h.list_characters, "GET"),
        ("/characters/{slug}", h.put_character, "PUT"),
        ("/characters/{slug}", h.delete_character, "DELETE"),
        ("/conversations", h.list_conversations, "GET"),
        ("/conversations/{id}", h.get_conversation, "GET"),
        ("/usage", h.usage, "GET"),
        ("/latency", h.latency, "GET"),
        ("/errors", h.errors, "GET"),
        ("/drain", h.drain, "POST"),
    ]
    return [
        Route(PREFIX + path, _admin(handler), methods=[method], name=f"admin_{handler.__name__}")
        for path, handler, method in table
    ]


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _admin(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The admin token is checked, and errors become JSON, for every route."""

    async def endpoint(request: Request) -> Response:
        ctx: AdminContext = request.app.state.ctx
        if not _authorized(request, ctx.settings):
            return error_response(
                401, "unauthorized", "send the admin token: Authorization: Bearer TOKEN"
            )
        try:
            return await handler(request, ctx)
        except ApiError as exc:
            return error_response(exc.status, exc.code, str(exc))
        except NotFoundError as exc:
            return error_response(404, "not_found", str(exc))
        except StoreConflict as exc:
            return error_response(409, "conflict", str(exc))
        except (StoreError, ConfigError) as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            return error_response(400, "bad_request", first_line)
        except (UnavailableError, OSError, TimeoutError) as exc:
            logger.warning("admin API: the database is unavailable: %s", reason(exc))
            return error_response(503, "unavailable", "the database is unavailable; try again")

    return endpoint


def _authorized(request: Request, settings: Settings) -> bool:
    expected = settings.server.admin_token
    token = bearer_token(request.headers)
    if expected is None or token is None:
        return False
    return same_secret(token, expected.get_secret_value())


__all__ = ["AdminContext", "routes"]
