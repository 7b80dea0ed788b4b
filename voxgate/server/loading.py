"""The server before its models are ready.

The first start copies the models out of their wheels and every start loads and warms them:
seconds to minutes. ``voxgate serve`` listens meanwhile, so the links it printed work at once:
the pages (``/``, ``/admin``, ``/static/...``) are served and say "loading models"; every other
HTTP route answers 503 ``loading_models`` (``/healthz``: ``"status": "loading_models"``); a
WebSocket is accepted and closed at once with 1013 (try again later), a relay one after an
``error`` ``loading_models``. Should loading fail, the server stays up to say why: the same
answers carry ``internal`` and the reason (``/healthz``: ``"status": "models_failed"``), and the
log has it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from voxgate.core.errors import ErrorCode
from voxgate.protocols import relay as relay_codec
from voxgate.protocols.closing import CloseCode

LOADING_MESSAGE = (
    "the server is loading its models (the first start copies them: this can take a minute); "
    "try again in a few seconds"
)
PAGES = ("/", "/admin")
"""Served while loading, with ``/static/...``: they hold no data and say what is going on."""


@dataclass
class Readiness:
    ready: bool = False
    error: str | None = None
    """Why loading failed: the server stays up to say so, but never becomes ready."""

    @property
    def code(self) -> ErrorCode:
        return ErrorCode.INTERNAL if self.error else ErrorCode.LOADING_MODELS

    @property
    def message(self) -> str:
        return f"the server could not start: {self.error}" if self.error else LOADING_MESSAGE


class UntilReady:
    """ASGI middleware: everything passes once ``readiness.ready``; until then, only the pages."""

    def __init__(self, app: ASGIApp, readiness: Readiness) -> None:
        self.app = app
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        page = scope["type"] == "http" and (path in PAGES or path.startswith("/static/"))
        if self.readiness.ready or scope["type"] == "lifespan" or page:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(path, send)
        elif scope["type"] == "websocket":
            await self._websocket(path, receive, send)

    async def _http(self, path: str, send: Send) -> None:
        state = self.readiness
        if path == "/healthz":
            status = "models_failed" if state.error else "loading_models"
            content = {"status": status, "models_ready": False, "message": state.message}
        else:
            content = {"error": {"code": state.code.value, "message": state.message}}
        body = json.dumps(content).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"5"),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _websocket(self, path: str, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        state = self.readiness
        if path.startswith("/v1/relay"):
            # The relay protocol's refusal: an error with fatal, then the close.
            message = relay_codec.error_message(state.code, state.message, fatal=True)
            (numbered,) = relay_codec.RelaySequencer().frames(message)
            await send({"type": "websocket.send", "text": numbered})
        reason = "models failed to load" if state.error else "loading models; try again later"
        await send({"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER, "reason": reason})
