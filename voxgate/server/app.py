"""The ASGI app: every device protocol at once, plus /healthz and /metrics.

Starlette rather than FastAPI: the routes are WebSockets and streamed bodies whose formats the
device protocols fix, so FastAPI's request models and OpenAPI would describe little; Starlette is
the small core FastAPI itself is built on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voxgate import web
from voxgate.core.config import Settings
from voxgate.models import ModelStore
from voxgate.pipeline import Engines, load_engines
from voxgate.pipeline.engines import warm_up
from voxgate.server.context import ServerContext
from voxgate.server.secrets_file import with_generated_secrets
from voxgate.server.transports import assistant_proxy, elato, relay
from voxgate.store.devices import DeviceStore

logger = logging.getLogger(__name__)


def context_of(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


async def healthz(request: Request) -> JSONResponse:
    ctx = context_of(request)
    status = "shutting_down" if ctx.shutting_down.is_set() else "ok"
    return JSONResponse(
        {
            "status": status,
            "models_ready": True,
            "degraded": [],
            "sessions": len(ctx.sessions),
        },
        status_code=200 if status == "ok" else 503,
    )


async def metrics(request: Request) -> Response:
    return Response(context_of(request).metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(
    settings: Settings, *, engines: Engines | None = None, devices: DeviceStore | None = None
) -> Starlette:
    """The app. Given ``engines`` (tests, benchmarks) it uses them; otherwise it loads the
    configured ones at start-up, and is ready once they are warm."""
    settings = with_generated_secrets(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = engines is None
        loaded = engines
        if loaded is None:
            store = ModelStore(settings.models_dir)
            loaded = await asyncio.to_thread(load_engines, settings, store)
            await warm_up(loaded, settings.character.system_prompt)
        device_store = devices or DeviceStore(settings.data_dir / "voxgate.db")
        ctx = ServerContext(settings, loaded, device_store)
        app.state.ctx = ctx
        try:
            yield
        finally:
            await ctx.drain(settings.server.shutdown_grace_s)
            for session in list(ctx.sessions):
                await ctx.close_session(session)
            if owned:
                loaded.close()
            if devices is None:
                device_store.close()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        *relay.routes(settings),
        *assistant_proxy.routes(settings),
        *web.routes(settings),  # HTTP "/": the page; Elato's WebSocket "/" still matches
        *elato.routes(settings),  # last: it may own "/" for WebSockets
    ]
    return Starlette(routes=routes, lifespan=lifespan)
