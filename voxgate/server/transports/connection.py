"""The one WebSocket session loop every device protocol runs on.

A protocol hands it an adapter (:class:`ProtocolAdapter`: its codec, how it authenticates, how it
ends a connection) — the shape of pipecat's serializer handed to a generic transport. The loop
does the rest, the same way for every protocol: accept, authenticate, refuse while shutting down
or over the connection rate, open the session, race the reader and the event pump, map how it
ended to the protocol's :class:`~voxgate.protocols.closing.Close`, close the session, close the
socket.

Anything the adapter does may raise :class:`Refused` to end the connection with a given close;
a client that went away is :class:`ClientGone`, wherever it is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxgate.core.errors import ConfigError, UnavailableError
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols.closing import Close, Ending
from voxgate.protocols.frames import EventEncoder
from voxgate.server.context import ServerContext
from voxgate.server.policy import limit_key
from voxgate.server.runner import SessionEnded, SlowClientError, pump_events
from voxgate.store.records import Device

logger = logging.getLogger(__name__)

FINAL_SEND_TIMEOUT_S = 2.0
"""The last message and the close frame get this long: the client may have stopped reading."""
_GONE = (WebSocketDisconnect, OSError, RuntimeError)
"""What Starlette and uvicorn raise on a socket the client has closed (WebSocketDisconnected is a
RuntimeError)."""


class ClientGone(Exception):
    """The client closed the connection or it broke: nothing more can be said to it."""


class Refused(Exception):
    """Ends the connection with ``close`` (raised by the loop or by an adapter)."""

    def __init__(self, close: Close) -> None:
        super().__init__(close.reason)
        self.close = close


class Wire:
    """The socket: one sender at a time (so frames of one message stay together and in order),
    every message counted and held to the size limit, every way of being gone a ClientGone."""

    def __init__(self, ctx: ServerContext, websocket: WebSocket, adapter: ProtocolAdapter) -> None:
        self.websocket = websocket
        self._adapter = adapter
        self._limit = ctx.settings.server.max_message_bytes
        self._bytes_in = ctx.metrics.bytes_in.labels(adapter.name)
        self._lock = asyncio.Lock()

    @property
    def accepted(self) -> bool:
        return self.websocket.application_state != WebSocketState.CONNECTING

    async def accept(self, subprotocol: str | None = None) -> None:
        try:
            await self.websocket.accept(subprotocol=subprotocol)
        except _GONE as exc:
            raise ClientGone from exc

    async def receive(self) -> str | bytes:
        """The next message (text or binary). Refused when it is over the size limit."""
        try:
            message = await self.websocket.receive()
        except _GONE as exc:
            raise ClientGone from exc
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        text: str | None = message.get("text")
        data: str | bytes = text if text is not None else message.get("bytes") or b""
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
        self._bytes_in.inc(size)
        if size > self._limit:
            detail = f"message of {size} bytes exceeds {self._limit}"
            raise Refused(self._adapter.close_for(Ending.TOO_LARGE, detail))
        return data

    async def send(self, data: str | bytes) -> None:
        """One downlink message, as the adapter puts it on the wire."""
        async with self._lock:
            try:
                for frame in self._adapter.frames(data):
                    if isinstance(frame, str):
                        await self.websocket.send_text(frame)
                    else:
                        await self.websocket.send_bytes(frame)
            except _GONE as exc:
                raise ClientGone from exc

    async def close(self, close: Close | None) -> None:
        """Say ``close.last``, then close; nothing if the client is gone (``close`` None)."""
        ws = self.websocket
        if close is None:
            return
        if not self.accepted:
            await self._deny(close)
            return
        if ws.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(ClientGone, TimeoutError, *_GONE):
            async with asyncio.timeout(FINAL_SEND_TIMEOUT_S + close.linger_s):
                if close.last is not None:
                    await self.send(close.last)
                    await asyncio.sleep(close.linger_s)
                await ws.close(close.code, close.reason_on_wire)

    async def _deny(self, close: Close) -> None:
        """Refuse the upgrade with an HTTP status where the server can (ASGI's denial extension);
        else close, which clients see as 403."""
        logger.info("refused a %s connection: %s", self._adapter.name, close.reason)
        ws = self.websocket
        with contextlib.suppress(*_GONE):
            if close.http_status and "websocket.http.response" in ws.scope.get("extensions", {}):
                body = JSONResponse({"error": close.reason}, status_code=close.http_status)
                await ws.send_denial_response(body)
            else:
                await ws.close(close.code, close.reason_on_wire)


class ProtocolAdapter(ABC):
    """One connection in one protocol: what the loop needs to know of it. Made per connection,
    so it may keep the connection's state."""

    name: ClassVar[str]
    """The protocol, as metrics and logs name it."""
    limit_key: str = ""
    """The bucket of this connection's limits (``server.policy.limit_key``), set on admission."""
    accepts_first: ClassVar[bool] = True
    """Accept the WebSocket before authenticating (so a refusal can say why in the protocol);
    False: refuse the upgrade itself."""

    @abstractmethod
    def close_for(self, ending: Ending, detail: str = "") -> Close:
        """The protocol's close for each way a connection ends (its codec's table)."""

    @abstractmethod
    async def authenticate(self, ctx: ServerContext, wire: Wire) -> Device:
        """The device connecting, or Refused."""

    def subprotocol(self, offered: list[str]) -> str | None:
        """The subprotocol to accept, of those the client offered."""
        return None

    @abstractmethod
    async def open_session(self, ctx: ServerContext, device: Device) -> VoiceSession: ...

    async def begin(self, ctx: ServerContext, wire: Wire, session: VoiceSession) -> None:
        """What the protocol says first (a ready message, a greeting)."""
        return None

    @abstractmethod
    def encoder(self, session: VoiceSession) -> EventEncoder: ...

    def frames(self, data: str | bytes) -> list[str | bytes]:
        """The frames one downlink message goes out as (the relay numbers its messages here)."""
        return [data]

    async def send(self, wire: Wire, data: str | bytes) -> None:
        """How the event pump sends one message."""
        await wire.send(data)

    @abstractmethod
    async def receive(
        self, ctx: ServerContext, wire: Wire, session: VoiceSession, data: str | bytes
    ) -> Close | None:
        """One client message into the session; a Close ends the connection."""

    async def watch(self, session: VoiceSession) -> Close:
        """A third task beside the reader and the pump (the proxy's silence timeout); it ends the
        connection with its Close when it returns. By default it never does."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    async def ended(self, ctx: ServerContext, session: VoiceSession) -> None:
        """After the session is closed (keep what a reconnect may resume)."""
        return None


async def serve(websocket: WebSocket, adapter: ProtocolAdapter) -> None:
    """Runs one connection from the upgrade to the close."""
    ctx: ServerContext = websocket.app.state.ctx
    wire = Wire(ctx, websocket, adapter)
    close: Close | None
    caps = ctx.state.session_caps
    holder = secrets.token_hex(8)
    claimed = False
    try:
        try:
            device = await _admit(ctx, wire, adapter)
            if not await caps.claim(adapter.limit_key, holder):
                raise Refused(adapter.close_for(Ending.RATE_LIMITED, _TOO_MANY_SESSIONS))
            claimed = True
            session = await adapter.open_session(ctx, device)
        except Refused as refused:
            close = refused.close
        except ConfigError as exc:  # this device's settings name what isn't there (a wake word)
            close = adapter.close_for(Ending.BAD_REQUEST, str(exc))
        except ClientGone:
            return
        else:
            ctx.metrics.sessions.labels(adapter.name).inc()
            ctx.metrics.sessions_total.labels(adapter.name).inc()
            try:
                close = await _converse(ctx, wire, adapter, session)
            finally:
                await ctx.close_session(session)
                ctx.metrics.sessions.labels(adapter.name).dec()
                await adapter.ended(ctx, session)
    finally:
        # Whatever happened, the device's session slot is given back (on every replica).
        if claimed:
            await caps.release(adapter.limit_key, holder)
    if close is not None and close.error is not None:
        ctx.metrics.errors.labels(adapter.name, close.error.value).inc()
    await wire.close(close)


async def _admit(ctx: ServerContext, wire: Wire, adapter: ProtocolAdapter) -> Device:
    """Accept (now or after authenticating, as the protocol wants) and authenticate; refuse
    while the server shuts down, and over the device's connection rate."""
    if adapter.accepts_first:
        await wire.accept()
    _refuse_if_shutting_down(ctx, adapter)
    try:
        device = await adapter.authenticate(ctx, wire)
    except UnavailableError as exc:  # the database cannot say: not "invalid token"
        raise Refused(adapter.close_for(Ending.UNAVAILABLE, str(exc))) from None
    client = wire.websocket.client
    key = adapter.limit_key = limit_key(device, client.host if client else None)
    if not await ctx.connection_limit.allow(key):
        retry_s = await ctx.connection_limit.retry_after_s(key)
        raise Refused(adapter.close_for(Ending.RATE_LIMITED, f"retry in {retry_s:.0f} s"))
    _refuse_if_shutting_down(ctx, adapter)  # authenticating may have taken a while
    if not wire.accepted:
        await wire.accept(adapter.subprotocol(wire.websocket.scope.get("subprotocols", [])))
    return device


_TOO_MANY_SESSIONS = "too many sessions open for this device (server.max_sessions_per_device)"


def _refuse_if_shutting_down(ctx: ServerContext, adapter: ProtocolAdapter) -> None:
    if ctx.shutting_down.is_set():
        raise Refused(adapter.close_for(Ending.SHUTTING_DOWN))


async def _converse(
    ctx: ServerContext, wire: Wire, adapter: ProtocolAdapter, session: VoiceSession
) -> Close | None:
    """The reader, the pump (and the adapter's watch) side by side until one ends; the close
    that follows (None: the client is gone)."""
    try:
        await adapter.begin(ctx, wire, session)
    except ClientGone:
        return None
    except Refused as refused:
        return refused.close

    async def send(data: str | bytes) -> None:
        await adapter.send(wire, data)

    pump = asyncio.create_task(
        pump_events(ctx, adapter.name, session, adapter.encoder(session), send)
    )
    reader = asyncio.create_task(_read(ctx, wire, adapter, session))
    watch = asyncio.create_task(adapter.watch(session))
    ended = asyncio.create_task(_ended(ctx, adapter, session))
    tasks = (reader, pump, watch, ended)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled():
            return _outcome(adapter, task, is_pump=task is pump)
    return adapter.close_for(Ending.INTERNAL)  # pragma: no cover (one of them ended)


async def _ended(ctx: ServerContext, adapter: ProtocolAdapter, session: VoiceSession) -> Close:
    """The server ended the session (the device was revoked, on any replica; a drain)."""
    ending, detail = await ctx.endings.requested(session)
    return adapter.close_for(ending, detail)


async def _read(
    ctx: ServerContext, wire: Wire, adapter: ProtocolAdapter, session: VoiceSession
) -> Close:
    while True:
        close = await adapter.receive(ctx, wire, session, await wire.receive())
        if close is not None:
            return close


def _outcome(adapter: ProtocolAdapter, task: asyncio.Task[Any], *, is_pump: bool) -> Close | None:
    """The close after ``task`` ended the connection."""
    exc = task.exception()
    if exc is None:
        if is_pump:  # the session was closed under the pump: the server is shutting down
            return adapter.close_for(Ending.SERVER_SHUTDOWN)
        result: Close = task.result()
        return result
    if isinstance(exc, ClientGone):
        logger.debug("%s client went away", adapter.name)
        return None
    if isinstance(exc, Refused):
        return exc.close
    if isinstance(exc, SessionEnded):
        return adapter.close_for(Ending.ASSISTANT_ENDED)
    if isinstance(exc, SlowClientError):
        logger.info("%s client too slow: %s", adapter.name, exc)
        return adapter.close_for(Ending.SLOW_CLIENT, str(exc))
    logger.error("%s session failed", adapter.name, exc_info=exc)
    return adapter.close_for(Ending.INTERNAL)


Endpoint = Callable[[WebSocket], Any]


def endpoint(make: Callable[[], ProtocolAdapter]) -> Endpoint:
    """A Starlette WebSocket endpoint serving each connection with a fresh adapter."""

    async def serve_one(websocket: WebSocket) -> None:
        await serve(websocket, make())

    return serve_one
