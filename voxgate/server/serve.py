"""Running the app under uvicorn, with a shutdown that lets replies in flight finish."""

from __future__ import annotations

import logging
import socket

import uvicorn
from starlette.applications import Starlette

from voxgate.core.config import Settings
from voxgate.server import log_redaction
from voxgate.server.app import create_app, load_configured
from voxgate.server.connections import ensure_file_limit, guarded_h11
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


def page_links(settings: Settings, *, with_token: bool) -> list[tuple[str, str]]:
    """The talk and admin pages. With the token, in the fragment, which browsers never send to
    the server; without, for logs that outlive the terminal (``voxgate admin-link`` prints them
    with it)."""
    server = settings.server
    base = server.public_url or f"http://{server.host}:{server.port}"
    token = server.admin_token.get_secret_value() if server.admin_token else ""
    fragment = f"#token={token}" if with_token else ""
    return [
        ("talk in the browser", f"{base}/{fragment}"),
        ("admin page", f"{base}/admin{fragment}"),
    ]


def urls(settings: Settings, *, with_token: bool = True) -> list[tuple[str, str]]:
    """Where each protocol is served, the pages first."""
    server = settings.server
    base = server.public_url or f"http://{server.host}:{server.port}"
    ws = base.replace("http://", "ws://").replace("https://", "wss://")
    return [
        *page_links(settings, with_token=with_token),
        ("relay (browser, new devices)", f"{ws}/v1/relay"),
        *[("ElatoAI firmware", f"{ws}{path}") for path in server.elato_paths],
        ("ElatoAI token", f"{base}/api/generate_auth_token?macAddress=AA:BB:CC:DD:EE:FF"),
        ("voice-assistant-proxy HTTP", f"{base}/v1/audio"),
        ("voice-assistant-proxy WebSocket", f"{ws}/ws"),
        ("health", f"{base}/healthz"),
        ("metrics", f"{base}/metrics"),
        *wyoming_urls(settings),
    ]


def wyoming_urls(settings: Settings) -> list[tuple[str, str]]:
    """Where Home Assistant adds voxgate (Wyoming Protocol: this host and port)."""
    wyoming = settings.wyoming
    if not wyoming.enabled:
        return []
    lines = [("Wyoming STT+TTS (Home Assistant)", f"tcp://{wyoming.host}:{wyoming.port}")]
    if wyoming.tts_port is not None:
        lines.append(("Wyoming TTS only", f"tcp://{wyoming.host}:{wyoming.tts_port}"))
    return lines


def announcement(settings: Settings, *, with_token: bool) -> list[str]:
    """What ``voxgate serve`` prints: where each protocol is served. The page links carry the
    admin token only ``with_token`` (the first start, or asked for): a supervisor's journal keeps
    what a server prints at every restart."""
    lines = [f"  {label:34} {url}" for label, url in urls(settings, with_token=with_token)]
    if not with_token:
        lines.append("  (the page links with the admin token: `voxgate admin-link`)")
    return lines


def uvicorn_config(settings: Settings, app: Starlette) -> uvicorn.Config:
    server = settings.server
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_level=settings.log_level.lower(),
        # The firmware of ElatoAI does not use compression; per-message deflate only costs CPU.
        ws_per_message_deflate=False,
        ws_max_size=server.max_message_bytes,
        lifespan="on",
        http=guarded_h11(server.header_timeout_s, server.max_connections),
        timeout_keep_alive=server.keep_alive_timeout_s,
        # Requests beyond this many at once are answered 503 rather than queued.
        limit_concurrency=server.max_connections,
    )
    log_redaction.install()  # uvicorn configured its loggers just now
    return config


def serve(settings: Settings) -> None:
    ensure_file_limit(settings.server.max_connections)
    # Listening before the models are ready: the links printed work at once and say "loading".
    app = create_app(settings, engines=load_configured(settings))
    config = uvicorn_config(settings, app)
    _DrainingServer(config, app, settings.server.shutdown_grace_s).run()
