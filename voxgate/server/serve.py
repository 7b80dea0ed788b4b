"""Running the app under uvicorn, with a shutdown that lets replies in flight finish."""

from __future__ import annotations

import logging
import socket

import uvicorn
from starlette.applications import Starlette

from voxgate.core.config import Settings
from voxgate.server.app import create_app, load_configured
from voxgate.server.context import ServerContext

logger = logging.getLogger(__name__)


class _DrainingServer(uvicorn.Server):
    """uvicorn closes WebSockets at once on shutdown; first stop taking new sessions and give the
    replies in flight ``shutdown_grace_s`` to finish."""

    def __init__(self, config: uvicorn.Config, app: Starlette, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        ctx: ServerContext | None = getattr(self._app.state, "ctx", None)
        if ctx is not None:
            logger.info("draining %d sessions (up to %.0f s)", len(ctx.sessions), self._grace_s)
            await ctx.drain(self._grace_s)
        await super().shutdown(sockets=sockets)


def urls(settings: Settings) -> list[tuple[str, str]]:
    """Where each protocol is served. The page links carry the admin token in the fragment, which
    browsers never send to the server (so it stays out of access logs)."""
    server = settings.server
    base = server.public_url or f"http://{server.host}:{server.port}"
    ws = base.replace("http://", "ws://").replace("https://", "wss://")
    token = server.admin_token.get_secret_value() if server.admin_token else ""
    return [
        ("talk in the browser", f"{base}/#token={token}"),
        ("admin page", f"{base}/admin#token={token}"),
        ("relay (browser, new devices)", f"{ws}/v1/relay"),
        *[("ElatoAI firmware", f"{ws}{path}") for path in server.elato_paths],
        ("ElatoAI token", f"{base}/api/generate_auth_token?macAddress=AA:BB:CC:DD:EE:FF"),
        ("voice-assistant-proxy HTTP", f"{base}/v1/audio"),
        ("voice-assistant-proxy WebSocket", f"{ws}/ws"),
        ("health", f"{base}/healthz"),
        ("metrics", f"{base}/metrics"),
    ]


def serve(settings: Settings) -> None:
    # Listening before the models are ready: the links printed work at once and say "loading".
    app = create_app(settings, engines=load_configured(settings))
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.log_level.lower(),
        # The firmware of ElatoAI does not use compression; per-message deflate only costs CPU.
        ws_per_message_deflate=False,
        ws_max_size=settings.server.max_message_bytes,
        lifespan="on",
    )
    _DrainingServer(config, app, settings.server.shutdown_grace_s).run()
