"""The ASGI app: every device protocol at once, plus /healthz and /metrics.

Starlette rather than FastAPI: the routes are WebSockets and streamed bodies whose formats the
device protocols fix, so FastAPI's request models and OpenAPI would describe little; Starlette is
the small core FastAPI itself is built on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voxgate import web
from voxgate.core.config import Settings
from voxgate.models import ModelStore
from voxgate.pipeline import Engines, load_engines
from voxgate.pipeline.engines import warm_up
from voxgate.server import admin_api, characters_api, elato_tokens
from voxgate.server.auth import bearer_token
from voxgate.server.context import ServerContext
from voxgate.server.headers import SecurityHeaders
from voxgate.server.loading import Readiness, UntilReady
from voxgate.server.secrets_file import with_generated_secrets
from voxgate.server.shared import open_shared_state
from voxgate.server.transports import assistant_proxy, elato, relay, xiaozhi, xiaozhi_ota
from voxgate.server.wyoming import WyomingServer
from voxgate.store import Store
from voxgate.store.devices import same_secret
from voxgate.store.retention import prune_periodically

logger = logging.getLogger(__name__)


def context_of(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def may_see_details(request: Request, settings: Settings) -> bool:
    """The metrics token or the admin token: error texts can name paths, hosts and users."""
    token = bearer_token(request.headers)
    if token is None:
        return False
    server = settings.server
    return any(
        secret is not None and same_secret(token, secret.get_secret_value())
        for secret in (server.metrics_token, server.admin_token)
    )


async def healthz(request: Request) -> JSONResponse:
    ctx = context_of(request)
    writer = ctx.store.writer
    # Degraded still serves (200): sessions go on while their turns wait to be written.
    degraded = []
    if not writer.healthy:
        detailed = may_see_details(request, ctx.settings)
        degraded = [f"database: {writer.last_error}" if detailed else "database"]
    # Draining (a SIGTERM, or the admin's drain): 503, so a load balancer sends no one new here.
    status = "draining" if ctx.shutting_down.is_set() else "degraded" if degraded else "ok"
    return JSONResponse(
        {
            "status": status,
            "replica": ctx.replica_id,
            "models_ready": True,
            "degraded": degraded,
            "sessions": len(ctx.sessions),
            "writes_pending": writer.pending,
        },
        status_code=503 if status == "draining" else 200,
    )


async def metrics(request: Request) -> Response:
    ctx = context_of(request)
    if ctx.settings.server.metrics_token is not None and not may_see_details(request, ctx.settings):
        return JSONResponse(
            {"error": "send the metrics token: Authorization: Bearer TOKEN"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    writer = ctx.store.writer
    ctx.metrics.observe_writer(
        pending=writer.pending, healthy=writer.healthy, dropped=writer.dropped
    )
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")


EngineLoader = Callable[[], Awaitable[Engines]]
"""Loads the engines in the background while the server already listens (:mod:`.loading`)."""


def load_configured(settings: Settings) -> EngineLoader:
    """The configured engines, loaded and warmed up: what ``voxgate serve`` waits for."""

    async def load() -> Engines:
        models = ModelStore(settings.models_dir)
        loaded = await asyncio.to_thread(load_engines, settings, models)
        await warm_up(loaded, settings.character.system_prompt)
        return loaded

    return load


def create_app(
    settings: Settings,
    *,
    engines: Engines | EngineLoader | None = None,
    store: Store | None = None,
) -> Starlette:
    """The app. Given ``engines`` or ``store`` (tests, benchmarks) it uses them; otherwise it
    loads the configured engines and opens the configured database at start-up, and is ready once
    the engines are warm. Given an :data:`EngineLoader` it listens at once and loads in the
    background: until then the pages say so and everything else answers "loading models"."""
    settings = with_generated_secrets(settings)
    readiness = Readiness()
    wyoming_servers: list[WyomingServer] = []

    async def prepare(app: Starlette) -> ServerContext:
        if isinstance(engines, Engines):
            loaded = engines
        else:
            loaded = await (engines or load_configured(settings))()
        try:
            opened = store or await Store.open(settings)
        except BaseException:
            if loaded is not engines:
                await loaded.aclose()
            raise
        opened.writer.start()
        app.state.pruner = asyncio.create_task(
            prune_periodically(opened.database, settings.database)
        )
        ctx = ServerContext(settings, loaded, opened, shared=open_shared_state(settings))
        await ctx.start()
        app.state.ctx = ctx
        app.state.loop_watch = asyncio.create_task(ctx.metrics.watch_event_loop())
        if settings.wyoming.enabled:  # its own TCP port(s), once the engines are ready
            app.state.wyoming = WyomingServer(ctx)
            wyoming_servers.append(app.state.wyoming)
            await app.state.wyoming.start()
        readiness.ready = True
        return ctx

    async def finish(ctx: ServerContext, *background: asyncio.Task[None]) -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        # Refuse new sessions everywhere first (/healthz says so), then let the WebSocket and
        # the Wyoming requests in flight finish side by side, within one grace period.
        ctx.shutting_down.set()
        grace_s = settings.server.shutdown_grace_s
        drains = [ctx.drain(grace_s), *(server.close(grace_s) for server in wyoming_servers)]
        wyoming_servers.clear()
        await asyncio.gather(*drains)
        for session in list(ctx.sessions):
            await ctx.close_session(session)
        await ctx.stop()
        if ctx.engines is not engines:  # loaded here: ours to close
            await ctx.engines.aclose()
        if store is None:
            await ctx.store.close()  # writes what is still queued first
        else:
            await ctx.store.writer.flush(settings.server.shutdown_grace_s)

    def failed(task: asyncio.Task[ServerContext]) -> None:
        if not task.cancelled() and task.exception() is not None:
            readiness.error = str(task.exception()) or type(task.exception()).__name__
            logger.error("cannot load the models: %s", readiness.error, exc_info=task.exception())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if engines is None or isinstance(engines, Engines):
            ctx = await prepare(app)
            try:
                yield
            finally:
                await finish(ctx, app.state.pruner, app.state.loop_watch)
            return
        loading = asyncio.create_task(prepare(app))
        loading.add_done_callback(failed)
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            if readiness.ready:
                await finish(app.state.ctx, app.state.pruner, app.state.loop_watch)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        *relay.routes(settings),
        *admin_api.routes(),
        *assistant_proxy.routes(settings),
        *characters_api.routes(),
        *web.routes(settings),  # HTTP "/": the page; Elato's WebSocket "/" still matches
        *elato_tokens.routes(),
        *xiaozhi_ota.routes(),
        *xiaozhi.routes(settings),
        *elato.routes(settings),  # last: it may own "/" for WebSockets
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        # Security headers outermost: the "loading models" answers carry them too.
        middleware=[Middleware(SecurityHeaders), Middleware(UntilReady, readiness=readiness)],
    )
