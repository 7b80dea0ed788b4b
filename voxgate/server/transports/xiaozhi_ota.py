"""``POST /xiaozhi/ota/``: how a xiaozhi-esp32 board learns where to connect, and gets its token.

The firmware calls its OTA URL at every boot (``main/ota.cc``: headers ``Device-Id`` = its MAC,
``Client-Id``, a JSON body of system info) and keeps what ``websocket`` says (``url``, ``token``,
``version``) in flash. ``/xiaozhi/ota/`` is the path of the firmware's default OTA URL and of the
reference server's, so only the host changes (``docs/protocols/xiaozhi.md``).

Admission, by the same rules as ElatoAI's token endpoint (a MAC is no secret):

- **registered and pairing** (``voxgate devices add NAME --mac MAC``, or ``voxgate devices pair
  NAME`` after a reflash, within ``server.elato_pairing_window_s``): the reply carries a new
  token for the device, and pairing ends; nobody else can get one for that MAC now;
- **registered, paired**: the reply has the URL and no token, and the board keeps the one it
  stored (the firmware overwrites only the keys a reply has);
- **unknown**: an ``activation`` the board shows and speaks: a six-digit code and the command
  that admits it (also logged). The board then polls ``/xiaozhi/ota/activate``: 202 until an
  admin has added it, then 200, and its next OTA request gets its token. With
  ``server.auto_register_devices`` (development only) an unknown board is added at once;
- **revoked**: 403.

The reply never has an ``mqtt`` key: the firmware would use MQTT+UDP instead of the WebSocket.
Requests are limited per client address (``server.token_requests_per_minute``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from voxgate.core.errors import ConfigError, StoreError
from voxgate.server.context import AUTH_TIMEOUT_S, ServerContext
from voxgate.server.ratelimit import RateLimiter
from voxgate.server.request_body import read_body
from voxgate.store.devices import normalize_mac
from voxgate.store.records import Device

logger = logging.getLogger(__name__)

OTA_PATHS = ("/xiaozhi/ota/", "/xiaozhi/ota")
ACTIVATE_PATHS = ("/xiaozhi/ota/activate", "/xiaozhi/ota/activate/")
WEBSOCKET_PATH = "/xiaozhi/v1/"
ACTIVATION_TIMEOUT_MS = 30_000
MAX_PENDING = 1_000
REVOKED = "this board has been revoked"
"""Names no device: a MAC is no secret, so the answer must not say whose it was."""


def routes() -> list[BaseRoute]:
    return [
        *(Route(path, ota, methods=["GET", "POST"]) for path in OTA_PATHS),
        *(Route(path, activate, methods=["POST"]) for path in ACTIVATE_PATHS),
    ]


def _error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def _limited(request: Request, ctx: ServerContext) -> Response | None:
    state = request.app.state
    limiter: RateLimiter | None = getattr(state, "xiaozhi_ota_limiter", None)
    if limiter is None:
        limiter = state.xiaozhi_ota_limiter = RateLimiter(
            ctx.settings.server.token_requests_per_minute
        )
    client = f"ip:{request.client.host if request.client else '?'}"
    if limiter.allow(client):
        return None
    retry_s = limiter.retry_after_s(client)
    return _error(
        429,
        f"too many requests; retry in {retry_s:.0f} s",
        {"Retry-After": str(max(1, round(retry_s)))},
    )


def _pending(request: Request) -> dict[str, str]:
    """Activation codes of unknown boards, by MAC (in memory: a restart gives new ones)."""
    state = request.app.state
    if not hasattr(state, "xiaozhi_activations"):
        state.xiaozhi_activations = {}
    codes: dict[str, str] = state.xiaozhi_activations
    while len(codes) >= MAX_PENDING:  # oldest first: a flood of MACs holds no memory
        codes.pop(next(iter(codes)))
    return codes


async def ota(request: Request) -> Response:
    ctx: ServerContext = request.app.state.ctx
    if request.method == "GET":  # a person checking the URL in a browser
        return PlainTextResponse(
            "voxgate: the xiaozhi OTA endpoint is here; boards POST to it and are sent "
            f"{_websocket_url(ctx, request)}\n"
        )
    mac = _limited(request, ctx) or _mac(request)
    if isinstance(mac, Response):
        return mac
    body = await _body(request)
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            device = await _device(ctx, mac)
            token = None
            if device is not None and device.pairing(time.time()):
                token = await ctx.store.devices.claim_pairing_token(device.id)
    except (Exception, TimeoutError) as exc:  # the database is busy or away
        logger.warning("cannot look up xiaozhi board %s: %s", mac, exc)
        return _error(503, "the device database is unavailable; try again shortly")
    reply: dict[str, Any] = {
        # The board's clock shows the server's local time (the offset is in minutes).
        "server_time": {
            "timestamp": int(time.time() * 1000),
            "timezone_offset": time.localtime().tm_gmtoff // 60,
        },
        # Its own version: nothing to install (voxgate serves no firmware).
        "firmware": {"version": _firmware_version(body), "url": ""},
    }
    if device is None:
        code = _pending(request).setdefault(mac, f"{secrets.randbelow(1_000_000):06d}")
        logger.warning(
            "xiaozhi board %s (code %s) asks to be admitted: voxgate devices add NAME --mac %s",
            mac,
            code,
            mac,
        )
        reply["activation"] = {
            "code": code,
            "message": f"voxgate: ask the admin to run: voxgate devices add NAME --mac {mac}",
            "challenge": secrets.token_hex(16),
            "timeout_ms": ACTIVATION_TIMEOUT_MS,
        }
        return JSONResponse(reply, headers={"Cache-Control": "no-store"})
    if not device.active:
        return _error(403, REVOKED)
    _pending(request).pop(mac, None)
    websocket: dict[str, Any] = {"url": _websocket_url(ctx, request)}
    if token is not None:
        websocket["token"] = token
        logger.info("xiaozhi board %s (%s) fetched its token", device.name, mac)
    reply["websocket"] = websocket
    return JSONResponse(reply, headers={"Cache-Control": "no-store"})


async def activate(request: Request) -> Response:
    """The board's poll while it shows its code: 202 until it is registered, then 200."""
    ctx: ServerContext = request.app.state.ctx
    mac = _limited(request, ctx) or _mac(request)
    if isinstance(mac, Response):
        return mac
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            device = await ctx.store.devices.by_mac(mac)
    except (Exception, TimeoutError):
        return _error(503, "the device database is unavailable; try again shortly")
    if device is None:
        return JSONResponse({"status": "waiting for an admin"}, status_code=202)
    if not device.active:
        return _error(403, REVOKED)
    return JSONResponse({"status": "registered"})


def _mac(request: Request) -> str | Response:
    """The board's MAC address (``Device-Id``), or the 400 that says why not."""
    given = request.headers.get("device-id", "")
    if not given:
        return _error(400, "the Device-Id header (the board's MAC address) is required")
    try:
        return normalize_mac(given)
    except ConfigError as exc:
        return _error(400, str(exc))


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, 64_000)  # a board's system info is a few kB
    if raw is None:
        return {}
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _firmware_version(body: dict[str, Any]) -> str:
    application = body.get("application")
    version = application.get("version") if isinstance(application, dict) else None
    return version if isinstance(version, str) and len(version) < 40 else "0.0.0"


async def _device(ctx: ServerContext, mac: str) -> Device | None:
    device = await ctx.store.devices.by_mac(mac)
    if device is not None or not ctx.settings.server.auto_register_devices:
        return device
    name = "xiaozhi-" + mac.replace(":", "").lower()
    try:
        device, _ = await ctx.store.devices.add(
            name, mac, pairing_window_s=ctx.settings.server.elato_pairing_window_s
        )
    except StoreError:  # registered meanwhile by a concurrent request
        return await ctx.store.devices.by_mac(mac)
    logger.info("registered xiaozhi board %s (%s) on first contact", name, mac)
    return device


def _websocket_url(ctx: ServerContext, request: Request) -> str:
    """``server.public_url`` when set (behind a proxy), else the host the board asked."""
    public = ctx.settings.server.public_url
    if public:
        base = public.rstrip("/")
        scheme, _, rest = base.partition("://")
        ws_scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
        return f"{ws_scheme}://{rest}{WEBSOCKET_PATH}"
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.url.netloc}{WEBSOCKET_PATH}"
