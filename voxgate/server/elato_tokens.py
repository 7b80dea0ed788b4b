"""``GET /api/generate_auth_token?macAddress=<MAC>``: how an ElatoAI device gets its token.

A MAC address is no secret (every Wi-Fi frame carries it), so knowing one must not be enough:
the device would otherwise be anyone's, with its stored conversation read back through the LLM.
A token is issued only while the device is **pairing**: for ``server.elato_pairing_window_s``
after an admin adds it with its MAC (``voxgate devices add NAME --mac MAC``, the admin page) or
pairs it again (``voxgate devices pair NAME``: a factory reset, a replaced device; earlier tokens
then stop working), and only until the device first connects with its token. The unmodified
firmware fetches its token once, at its first Wi-Fi connection, and keeps it; power it up (or
reset it) inside the window.

Every refusal is the same 403, whether the MAC is unknown, revoked or not pairing, so the
endpoint does not tell which MACs are registered; unknown MACs are logged for the admin to
approve. Requests are limited per client address (``server.token_requests_per_minute``).

Tokens have no ``exp`` unless ``server.elato_token_ttl_s`` is set (the unmodified firmware never
fetches a new one, so an expiring token would lock it out). A client that can renew sends its
current token (``Authorization: Bearer``, expired or not) and gets a fresh one for the same MAC.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voxgate.core.errors import ConfigError, NotFoundError, ProtocolError, StoreError, reason
from voxgate.protocols import elato
from voxgate.server.auth import bearer_token
from voxgate.server.context import AUTH_TIMEOUT_S, ServerContext
from voxgate.server.ratelimit import RateLimiter
from voxgate.store.devices import normalize_mac
from voxgate.store.records import Device

logger = logging.getLogger(__name__)

PATH = "/api/generate_auth_token"
REFUSED = (
    "no token for this MAC address: it is not waiting to be paired. An admin adds it "
    "(`voxgate devices add NAME --mac MAC`) or pairs it again (`voxgate devices pair NAME`); "
    "then restart the device within the pairing window"
)
"""The one answer for unknown, revoked and not-pairing MACs alike."""


def routes() -> list[BaseRoute]:
    return [Route(PATH, generate_auth_token, methods=["GET"])]


def _error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def _limiter(request: Request, per_minute: int) -> RateLimiter:
    """One per app (the server's context belongs to another module's owner)."""
    state = request.app.state
    limiter: RateLimiter | None = getattr(state, "token_limiter", None)
    if limiter is None:
        limiter = state.token_limiter = RateLimiter(per_minute)
    return limiter


async def generate_auth_token(request: Request) -> Response:
    ctx: ServerContext = request.app.state.ctx
    server = ctx.settings.server
    if server.jwt_secret is None:
        return _error(
            503,
            "ElatoAI device tokens are disabled: set server.jwt_secret "
            "(VOXGATE_SERVER__JWT_SECRET) to a random string of 32 characters or more",
        )
    limiter = _limiter(request, server.token_requests_per_minute)
    client = f"ip:{request.client.host if request.client else '?'}"
    if not limiter.allow(client):
        retry_s = limiter.retry_after_s(client)
        return _error(
            429,
            f"too many token requests; retry in {retry_s:.0f} s",
            {"Retry-After": str(max(1, round(retry_s)))},
        )
    given = request.query_params.get("macAddress", "")
    if not given:
        return _error(400, "the macAddress query parameter is required")
    try:
        mac = normalize_mac(given)
    except ConfigError as exc:
        return _error(400, str(exc))
    secret = server.jwt_secret.get_secret_value()
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            device = await _device_for(ctx, request, secret, mac)
    except (Exception, TimeoutError) as exc:  # the database is busy or away
        logger.warning("cannot look up device %s: %s", mac, reason(exc))
        return _error(503, "the device database is unavailable; try again shortly")
    if device is None:
        return _error(403, REFUSED)
    token = elato.issue_token(
        secret, device.id, mac, generation=device.token_generation, ttl_s=server.elato_token_ttl_s
    )
    return JSONResponse({"token": token}, headers={"Cache-Control": "no-store"})


async def _device_for(ctx: ServerContext, request: Request, secret: str, mac: str) -> Device | None:
    """The device to issue a token to, or None (refused, for whatever reason)."""
    renewing = bearer_token(request.headers)
    if renewing is not None:
        return await _renewal(ctx, secret, renewing, mac)
    device = await ctx.store.devices.by_mac(mac)
    if device is None and ctx.settings.server.auto_register_devices:
        device = await _register(ctx, mac)
    if device is None:
        logger.info(
            "unknown ElatoAI device %s asked for a token; to let it in: "
            "voxgate devices add NAME --mac %s",
            mac,
            mac,
        )
        return None
    if not device.pairing(time.time()):
        logger.info("refused a token for %s (%s): not pairing", device.name, mac)
        return None
    return device


async def _renewal(ctx: ServerContext, secret: str, token: str, mac: str) -> Device | None:
    try:
        claims = elato.verify_token(secret, token, mac=mac, allow_expired=True)
        device = await ctx.store.devices.get(claims.device_id)
    except (ProtocolError, NotFoundError):
        return None
    if not device.active or device.mac != mac or device.token_generation != claims.generation:
        return None
    return device


async def _register(ctx: ServerContext, mac: str) -> Device:
    """``server.auto_register_devices`` (development only): any MAC is registered, pairing."""
    name = "elato-" + mac.replace(":", "").lower()
    try:
        device, _ = await ctx.store.devices.add(
            name, mac, pairing_window_s=ctx.settings.server.elato_pairing_window_s
        )
    except StoreError:  # registered meanwhile by a concurrent request
        existing = await ctx.store.devices.by_mac(mac)
        if existing is None:
            raise
        return existing
    logger.info("registered ElatoAI device %s (%s) on first contact", name, mac)
    return device
