"""voice-assistant-proxy over HTTP: ``POST /v1/audio``, one session per ``session_id``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from voxgate.core.errors import ErrorCode, ProtocolError, UnavailableError
from voxgate.core.events import ErrorEvent, Event, TurnDone
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols.assistant_proxy import (
    ERROR_HEADER,
    INPUT_RATE_HZ,
    OUTPUT_RATE_HZ,
    PROTOCOL,
    TOKEN_HEADER,
    ChunkLedger,
    ChunkStatus,
    ReplyCollector,
    ack,
    parse_audio_chunk,
)
from voxgate.server.context import ServerContext
from voxgate.server.policy import limit_key
from voxgate.server.runner import SlowClientError, feed_audio
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


# -- the HTTP path's sessions -----------------------------------------------------------------

IDLE_EXPIRY_S = 300.0
MAX_SESSIONS_PER_DEVICE = 8


class Refused(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(eq=False)
class HttpSession:
    key: tuple[str, str]
    """The device's limit key (``server.policy.limit_key``) and the ``session_id`` it chose."""
    session: VoiceSession
    ledger: ChunkLedger = field(default_factory=ChunkLedger)
    collector: ReplyCollector = field(default_factory=ReplyCollector)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = 0.0
    users: int = 0
    """Requests (and reply bodies) using it now; it is not expired or evicted meanwhile."""


class HttpSessions:
    """One VoiceSession per device and ``session_id``, kept across requests and turns.

    Owned by the app (``app.state``). Idle sessions are closed lazily, on the next request; a
    device over its cap loses its least recently used idle session.
    """

    def __init__(
        self,
        ctx: ServerContext,
        *,
        idle_s: float = IDLE_EXPIRY_S,
        per_device: int = MAX_SESSIONS_PER_DEVICE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.idle_s = idle_s
        self.per_device = per_device
        self._clock = clock
        self._entries: dict[tuple[str, str], HttpSession] = {}
        """By (limit key, session_id): a device's ids, or on the shared token one client's."""
        self._turn = ctx.settings.turn.model_copy(update={"barge_in": False})
        # On the HTTP path the device ends the turn (``is_final``); server VAD only finds speech.
        self._detection = ctx.client_commit()

    @classmethod
    def of(cls, app: Any, ctx: ServerContext) -> HttpSessions:
        sessions: HttpSessions | None = getattr(app.state, "assistant_proxy_sessions", None)
        if sessions is None or sessions.ctx is not ctx:  # a new lifespan, a new context
            sessions = app.state.assistant_proxy_sessions = cls(ctx)
        return sessions

    def __len__(self) -> int:
        return len(self._entries)

    async def acquire(
        self, device: Device, session_id: str, client_host: str | None = None
    ) -> HttpSession:
        """The session, opened if new; ``release`` it when done. Raises Refused."""
        now = self._clock()
        victims = [
            self._entries.pop(key)
            for key, entry in list(self._entries.items())
            if not entry.users and now - entry.last_used > self.idle_s
        ]
        key = (limit_key(device, client_host), session_id)
        try:
            entry = self._entries.get(key) or await self._open(device, key, victims)
            self.hold(entry)  # before any await: no other request may expire it now
        finally:
            await self._close(victims)
        return entry

    def hold(self, entry: HttpSession) -> None:
        entry.users += 1
        entry.last_used = self._clock()

    def release(self, entry: HttpSession) -> None:
        entry.users -= 1
        entry.last_used = self._clock()

    async def _open(
        self, device: Device, key: tuple[str, str], victims: list[HttpSession]
    ) -> HttpSession:
        ctx = self.ctx
        if ctx.shutting_down.is_set():
            raise Refused(503, "server shutting down")
        bucket = key[0]
        mine = [entry for (owner, _), entry in self._entries.items() if owner == bucket]
        idle = [entry for entry in mine if not entry.users]
        if len(mine) >= self.per_device and not idle:
            raise Refused(429, "too many sessions for this device")
        if not ctx.connection_limit.allow(bucket):
            raise Refused(429, "too many new sessions; try again later")
        if len(mine) >= self.per_device:
            oldest = min(idle, key=lambda entry: entry.last_used)
            victims.append(oldest)
            del self._entries[oldest.key]
        session = await ctx.open_session(
            device,
            output_rate_hz=OUTPUT_RATE_HZ,
            turn=self._turn,
            limit_key=bucket,
            detection=self._detection,
        )
        ctx.metrics.sessions.labels(PROTOCOL).inc()
        ctx.metrics.sessions_total.labels(PROTOCOL).inc()
        opened = HttpSession(key, session)
        raced = self._entries.get(key)
        if raced is not None:  # another request opened it while this one read the history
            victims.append(opened)
            return raced
        self._entries[key] = opened
        return opened

    async def _close(self, entries: list[HttpSession]) -> None:
        for entry in entries:
            await self.ctx.close_session(entry.session)
            self.ctx.metrics.sessions.labels(PROTOCOL).dec()


# -- POST /v1/audio ---------------------------------------------------------------------------


async def post_audio(request: Request) -> Response:
    ctx = app_context(request.app)
    try:
        device = await ctx.authenticate(request.headers.get(TOKEN_HEADER))
    except UnavailableError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "2"})
    if device is None:
        return JSONResponse({"detail": "invalid token"}, status_code=401)
    body = await _read_body(request, ctx.settings.server.max_message_bytes)
    if body is None:
        return JSONResponse({"detail": "request body too large"}, status_code=413)
    ctx.metrics.bytes_in.labels(PROTOCOL).inc(len(body))
    try:
        chunk = parse_audio_chunk(body)
    except ProtocolError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    sessions = HttpSessions.of(request.app, ctx)
    try:
        entry = await sessions.acquire(
            device, chunk.session_id, request.client.host if request.client else None
        )
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


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            return None
    return bytes(body)


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
                collector.reset()
            else:
                collector.abandon()
                entry.session.interrupt()
        await self._send(send, b"", more_body=False)

    async def _send(self, send: Send, body: bytes, *, more_body: bool) -> None:
        timeout_s = self._ctx.settings.server.send_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await send({"type": "http.response.body", "body": body, "more_body": more_body})
        except TimeoutError as exc:
            raise SlowClientError(f"the device read nothing for {timeout_s:.0f} s") from exc


# -- /ws --------------------------------------------------------------------------------------
