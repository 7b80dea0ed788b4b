"""voice-assistant-proxy over HTTP: ``POST /v1/audio``, one session per ``session_id``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from voxgate.core.errors import ErrorCode, ProtocolError, UnavailableError
from voxgate.core.events import ErrorEvent, Event, TurnDone
from voxgate.protocols.assistant_proxy import (
    ERROR_HEADER,
    INPUT_RATE_HZ,
    PROTOCOL,
    TOKEN_HEADER,
    AudioChunk,
    ChunkStatus,
    ack,
    parse_audio_chunk,
)
from voxgate.server.context import ServerContext
from voxgate.server.policy import limit_key
from voxgate.server.request_body import read_body
from voxgate.server.runner import SlowClientError, feed_audio
from voxgate.server.shared import ChunkTooLarge, SharedStateError
from voxgate.server.transports.assistant_proxy_sessions import HttpSession, HttpSessions, Refused
from voxgate.store.records import Device

logger = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 60.0
"""The firmware waits this long for the answer to its final chunk."""
INGEST_FAILED = {"detail": "proxy_ingest_failed"}
_NOT_SERVER_ERRORS = frozenset({ErrorCode.NO_SPEECH, ErrorCode.RATE_LIMITED})


def app_context(app: Any) -> ServerContext:
    ctx: ServerContext = app.state.ctx
    return ctx


def observe_event(ctx: ServerContext, event: Event) -> None:
    if isinstance(event, TurnDone):
        ctx.metrics.observe_turn(PROTOCOL, event)
    elif isinstance(event, ErrorEvent):
        ctx.metrics.observe_error(PROTOCOL, event)


# -- POST /v1/audio ---------------------------------------------------------------------------


async def post_audio(request: Request) -> Response:
    ctx = app_context(request.app)
    try:
        device = await ctx.authenticate(request.headers.get(TOKEN_HEADER))
    except UnavailableError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "2"})
    if device is None:
        return JSONResponse({"detail": "invalid token"}, status_code=401)
    body = await read_body(request, ctx.settings.server.max_message_bytes)
    if body is None:
        return JSONResponse({"detail": "request body too large"}, status_code=413)
    ctx.metrics.bytes_in.labels(PROTOCOL).inc(len(body))
    try:
        chunk = parse_audio_chunk(body)
    except ProtocolError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    host = request.client.host if request.client else None
    if ctx.state.chunks is not None:
        shared = await _shared_chunk(ctx, device, chunk, host)
        if isinstance(shared, Response):
            return shared
        chunk = shared
    sessions = HttpSessions.of(request.app, ctx)
    try:
        entry = await sessions.acquire(device, chunk.session_id, host)
    except Refused as exc:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    try:
        async with entry.lock:
            status = entry.ledger.status(chunk)
            if status is ChunkStatus.DUPLICATE:
                return JSONResponse(ack(status))
            try:
                await feed_audio(
                    ctx, PROTOCOL, entry.session, chunk.pcm, INPUT_RATE_HZ, count_bytes=False
                )
                await _drain(ctx, entry)
                entry.ledger.record(chunk)
                if status is ChunkStatus.PARTIAL:
                    return JSONResponse(ack(status))
                return await _answer(ctx, sessions, entry, chunk.session_id)
            except Exception:
                logger.exception("assistant_proxy: chunk %d failed", chunk.chunk_index)
                return JSONResponse(INGEST_FAILED, status_code=500)
    finally:
        sessions.release(entry)


async def _shared_chunk(
    ctx: ServerContext, device: Device, chunk: AudioChunk, host: str | None
) -> AudioChunk | Response:
    """A chunk kept in the shared state (Redis), so that any replica may take the next one: the
    answer to a chunk that is not final; the final one carrying the whole utterance, which this
    replica answers from a session of its own that continues the device's stored conversation."""
    chunks = ctx.state.chunks
    assert chunks is not None
    try:
        outcome = await chunks.add(limit_key(device, host), chunk)
    except ChunkTooLarge as exc:
        return JSONResponse({"detail": str(exc)}, status_code=413)
    except SharedStateError as exc:
        logger.warning("assistant_proxy: %s", exc)
        return JSONResponse(INGEST_FAILED, status_code=503, headers={"Retry-After": "2"})
    if outcome.status is not ChunkStatus.FINAL:
        return JSONResponse(ack(outcome.status))
    return replace(chunk, pcm=outcome.audio)


async def _drain(ctx: ServerContext, entry: HttpSession) -> None:
    """Take in every event the session has queued so far, without waiting for more."""
    while True:
        try:
            event = await entry.session.next_event(timeout_s=0)
        except TimeoutError:
            return
        if event is None:
            return
        observe_event(ctx, event)
        entry.collector.feed(event)


async def _next(ctx: ServerContext, entry: HttpSession) -> bool:
    """Wait for the session's next event; False once it is closed. TimeoutError if the reply
    stalls for :data:`REPLY_TIMEOUT_S`."""
    event = await entry.session.next_event(timeout_s=REPLY_TIMEOUT_S)
    if event is None:
        return False
    observe_event(ctx, event)
    entry.collector.feed(event)
    return True


async def _answer(
    ctx: ServerContext, sessions: HttpSessions, entry: HttpSession, session_id: str
) -> Response:
    """The final chunk: end the turn, and answer once the reply's first audio (or its failure)
    is known, so that a failure can still be told in the status and headers."""
    collector = entry.collector
    entry.session.commit_turn()  # nothing happens if no speech is in progress
    await _drain(ctx, entry)
    headers = {"X-Session-ID": session_id, "Cache-Control": "no-cache"}
    if not collector.expecting:
        return _empty(headers, ErrorCode.NO_SPEECH)
    try:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while not (collector.has_audio or collector.finished) and await _next(ctx, entry):
                pass
    except TimeoutError:
        logger.error("assistant_proxy: no reply within %.0f s", REPLY_TIMEOUT_S)
        collector.abandon()
        entry.session.interrupt()
        return JSONResponse(INGEST_FAILED, status_code=500, headers={ERROR_HEADER: "timeout"})
    if collector.has_audio:
        return ReplyStream(ctx, sessions, entry, headers)
    error = collector.error if collector.finished else ErrorCode.INTERNAL
    collector.reset()
    if error is None or error in _NOT_SERVER_ERRORS:
        return _empty(headers, error)
    return JSONResponse(INGEST_FAILED, status_code=500, headers={ERROR_HEADER: error.value})


def _empty(headers: dict[str, str], error: ErrorCode | None) -> Response:
    if error is not None:
        headers = {**headers, ERROR_HEADER: error.value}
    return Response(b"", media_type="application/octet-stream", headers=headers)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ReplyStream(Response):
    """The reply as a chunked PCM body, written as it is synthesised.

    Ends with the turn. If the device goes away, stops reading (``send_timeout_s``) or the reply
    stalls, the reply is interrupted so that the history keeps only what was sent, and the session
    stays usable for the next turn.
    """

    media_type = "application/octet-stream"

    def __init__(
        self,
        ctx: ServerContext,
        sessions: HttpSessions,
        entry: HttpSession,
        headers: dict[str, str],
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._ctx = ctx
        self._sessions = sessions
        self._entry = entry
        sessions.hold(entry)  # released when the body is done, whatever happens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            streaming = asyncio.create_task(self._stream(send))
            watching = asyncio.create_task(_until_disconnect(receive))
            try:
                await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                streaming.cancel()
                watching.cancel()
                outcome = await asyncio.gather(streaming, watching, return_exceptions=True)
            if isinstance(outcome[0], SlowClientError):
                logger.warning("assistant_proxy: %s", outcome[0])
            elif isinstance(outcome[0], Exception):
                logger.error("assistant_proxy: reply stream failed", exc_info=outcome[0])
        finally:
            self._sessions.release(self._entry)

    async def _stream(self, send: Send) -> None:
        entry, ctx = self._entry, self._ctx
        collector = entry.collector
        delivered = False
        turn_id: int | None = None
        try:
            async with entry.lock:
                while True:
                    audio = collector.take_audio()
                    if audio:
                        await self._send(send, audio, more_body=True)
                        ctx.metrics.bytes_out.labels(PROTOCOL).inc(len(audio))
                    if collector.finished or not await _next(ctx, entry):
                        break
                delivered = collector.finished
        except TimeoutError:
            logger.error("assistant_proxy: the reply stalled")
        finally:  # synchronous: it runs whole even when the device has gone
            if delivered:
                # The device has all of it: the next turn must not count as talking over it.
                if collector.turn_id is not None:
                    entry.session.report_playout(collector.turn_id, collector.audio_ms)
                turn_id = collector.turn_id
                collector.reset()
            else:
                collector.abandon()
                entry.session.interrupt()
        if delivered and turn_id is not None and self._sessions.per_turn:
            # The next turn may be answered by another replica, from the stored history.
            await ctx.turn_written(entry.session, turn_id)
        await self._send(send, b"", more_body=False)

    async def _send(self, send: Send, body: bytes, *, more_body: bool) -> None:
        timeout_s = self._ctx.settings.server.send_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await send({"type": "http.response.body", "body": body, "more_body": more_body})
        except TimeoutError as exc:
            raise SlowClientError(f"the device read nothing for {timeout_s:.0f} s") from exc


# -- /ws --------------------------------------------------------------------------------------
