"""voice-assistant-proxy over WebSocket: ``/ws``, raw PCM both ways, server VAD."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from voxgate.core.errors import ProtocolError, UnavailableError
from voxgate.core.events import Event
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols.assistant_proxy import (
    BEEP_MS,
    INPUT_RATE_HZ,
    OUTPUT_RATE_HZ,
    PROTOCOL,
    SILENCE_TIMEOUT_CODE,
    SILENCE_TIMEOUT_REASON,
    TOKEN_HEADER,
    DownlinkEncoder,
    EndOfTurn,
    SilenceWatchdog,
    UplinkAudio,
    beep,
    parse_ws_message,
)
from voxgate.protocols.frames import Outbound
from voxgate.server.context import ServerContext
from voxgate.server.runner import (
    SessionEnded,
    SlowClientError,
    feed_audio,
    pump_events,
)
from voxgate.server.transports.assistant_proxy_http import app_context

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str = ""


_SILENCE = _Close(SILENCE_TIMEOUT_CODE, SILENCE_TIMEOUT_REASON)
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


@dataclass
class _WatchedEncoder:
    """The downlink encoder, telling the watchdog what the device is being sent, in order."""

    inner: DownlinkEncoder
    watchdog: SilenceWatchdog
    loop: asyncio.AbstractEventLoop

    def encode(self, event: Event) -> list[Outbound]:
        self.watchdog.note(event, self.loop.time())
        return self.inner.encode(event)


async def proxy_websocket(websocket: WebSocket) -> None:
    ctx = app_context(websocket.app)
    token = websocket.headers.get(TOKEN_HEADER) or websocket.query_params.get("token")
    await websocket.accept()  # so that the device sees why it is refused
    try:
        device = await ctx.authenticate(token)
    except UnavailableError:
        await _close(websocket, _Close(1013, "cannot check the token now; try again"))
        return
    if device is None:
        await _close(websocket, _Close(1008, "invalid token"))
        return
    if ctx.shutting_down.is_set():
        await _close(websocket, _Close(1013, "server shutting down"))
        return
    if not ctx.connection_limit.allow(f"device:{device.id}"):
        await _close(websocket, _Close(1013, "too many connections; try again later"))
        return
    session = await ctx.open_session(device, output_rate_hz=OUTPUT_RATE_HZ)
    ctx.metrics.sessions.labels(PROTOCOL).inc()
    ctx.metrics.sessions_total.labels(PROTOCOL).inc()
    loop = asyncio.get_running_loop()
    watchdog = SilenceWatchdog(ctx.settings.server.proxy_silence_timeout_s, loop.time())

    async def send(data: str | bytes) -> None:
        if isinstance(data, bytes):
            await websocket.send_bytes(data)
        else:
            await websocket.send_text(data)

    encoder = _WatchedEncoder(DownlinkEncoder(), watchdog, loop)
    reader = asyncio.create_task(_read(ctx, websocket, session))
    pump = asyncio.create_task(pump_events(ctx, PROTOCOL, session, encoder, send))
    watch = asyncio.create_task(_watch(watchdog, loop))
    close: _Close | None = _Close(1011, "internal error")
    try:
        await asyncio.wait({reader, pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        close = _outcome(reader, pump, watch)
    finally:
        for task in (reader, pump, watch):
            task.cancel()
        await asyncio.gather(reader, pump, watch, return_exceptions=True)
        await ctx.close_session(session)
        ctx.metrics.sessions.labels(PROTOCOL).dec()
    if close is _SILENCE:
        try:
            await websocket.send_bytes(beep())
            await asyncio.sleep(BEEP_MS / 1000 + 0.1)  # let it play before the close
        except _SEND_ERRORS:
            return
    if close is not None:
        await _close(websocket, close)


def _outcome(
    reader: asyncio.Task[Any], pump: asyncio.Task[None], watch: asyncio.Task[None]
) -> _Close | None:
    """How the connection ends, from whichever half finished first (None: the device left)."""
    if reader.done():
        if reader.exception() is None:
            result: _Close | None = reader.result()
            return result
        logger.error("assistant_proxy: /ws reader failed", exc_info=reader.exception())
        return _Close(1011, "internal error")
    if pump.done():
        error = pump.exception()
        if isinstance(error, SlowClientError):
            return _Close(1008, str(error))
        if isinstance(error, SessionEnded):
            return _Close(1000, "goodbye")
        if error is None:  # the session was closed under us: the server is stopping
            return _Close(1001, "server shutting down")
        if not isinstance(error, _SEND_ERRORS):
            logger.error("assistant_proxy: /ws sender failed", exc_info=error)
        return None
    return _SILENCE


async def _read(ctx: ServerContext, websocket: WebSocket, session: VoiceSession) -> _Close | None:
    limit = ctx.settings.server.max_message_bytes
    bytes_in = ctx.metrics.bytes_in.labels(PROTOCOL)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        data: bytes | str = text if text is not None else message.get("bytes") or b""
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        bytes_in.inc(size)
        if size > limit:
            return _Close(1009, f"message larger than {limit} bytes")
        try:
            inbound = parse_ws_message(data)
        except ProtocolError as exc:
            return _Close(1003, str(exc))
        if isinstance(inbound, UplinkAudio):
            await feed_audio(ctx, PROTOCOL, session, inbound.pcm, INPUT_RATE_HZ, count_bytes=False)
        elif isinstance(inbound, EndOfTurn):
            session.commit_turn()


async def _watch(watchdog: SilenceWatchdog, loop: asyncio.AbstractEventLoop) -> None:
    # The deadline moves with every event the pump encodes: sleep until it, then look again.
    while not watchdog.expired(loop.time()):  # noqa: ASYNC110
        await asyncio.sleep(max(0.01, watchdog.remaining_s(loop.time())))


async def _close(websocket: WebSocket, close: _Close) -> None:
    reason = close.reason.encode()[:123].decode(errors="ignore")  # a close frame's limit
    with contextlib.suppress(*_SEND_ERRORS):
        await websocket.close(close.code, reason)
