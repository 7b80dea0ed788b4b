"""Transport for the relay protocol: the WebSocket route ``/v1/relay`` around
:mod:`voxgate.protocols.relay` (schema: ``docs/protocols/relay.md``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from voxgate.core.config import Settings, TurnSettings
from voxgate.core.errors import ErrorCode, NotFoundError, ProtocolError, UnavailableError
from voxgate.pipeline.history import Exchange
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols import relay as codec
from voxgate.protocols.relay import (
    AudioFrame,
    InputCommit,
    PlaybackPosition,
    Ready,
    Received,
    RelayDecoder,
    RelayEncoder,
    RelaySequencer,
    ReplyInterrupt,
    SessionEnd,
    SessionStart,
    TextInput,
    TurnDetection,
)
from voxgate.server.auth import bearer_token
from voxgate.server.context import CharacterChoice, ServerContext
from voxgate.server.runner import SessionEnded, SlowClientError, feed_audio, pump_events
from voxgate.store.records import Device

PATH = "/v1/relay"
PROTOCOL = "relay"
START_TIMEOUT_S = 10.0
"""A connection that has not sent ``session.start`` by then is closed (4408)."""
FINAL_SEND_TIMEOUT_S = 2.0
"""The last error and the close frame get this long: the client may have stopped reading."""
RESUMABLE_SESSIONS = 256

logger = logging.getLogger(__name__)
_Gone = (WebSocketDisconnect, WebSocketDisconnected)


class _Refusal(Exception):
    """Ends the connection with an ``error`` (fatal) and a close code."""

    def __init__(self, code: ErrorCode, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


class _Link:
    """The sending half: one sender at a time, so a ``tts.audio`` header and its audio stay
    together and ``seq`` follows the order on the wire."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._sequencer = RelaySequencer()
        self._lock = asyncio.Lock()

    async def send(self, data: str | bytes) -> None:
        async with self._lock:
            for frame in self._sequencer.frames(data):
                if isinstance(frame, str):
                    await self._ws.send_text(frame)
                else:
                    await self._ws.send_bytes(frame)

    async def finish(self, close_code: int, last: str | None = None, reason: str = "") -> None:
        # A close reason may hold 123 bytes of UTF-8.
        reason = reason.encode()[:123].decode(errors="ignore")
        with contextlib.suppress(*_Gone, TimeoutError, RuntimeError):
            async with asyncio.timeout(FINAL_SEND_TIMEOUT_S):
                if last is not None:
                    await self.send(last)
                await self._ws.close(close_code, reason)


@dataclass
class _History:
    device_id: int
    exchanges: list[Exchange]


def _histories(websocket: WebSocket) -> OrderedDict[str, _History]:
    """Conversations of ended sessions, newest last, for ``resume_session_id`` (in memory)."""
    state = websocket.app.state
    if not hasattr(state, "relay_histories"):
        state.relay_histories = OrderedDict()
    histories: OrderedDict[str, _History] = state.relay_histories
    return histories


def routes(settings: Settings) -> list[BaseRoute]:
    return [WebSocketRoute(PATH, relay_endpoint)]


async def relay_endpoint(websocket: WebSocket) -> None:
    ctx: ServerContext = websocket.app.state.ctx
    await websocket.accept()
    link = _Link(websocket)
    decoder = RelayDecoder(ctx.settings.server.max_message_bytes)
    try:
        device, start = await _handshake(ctx, websocket, link, decoder)
        await _serve(ctx, websocket, link, decoder, device, start)
    except _Refusal as refusal:
        ctx.metrics.errors.labels(PROTOCOL, refusal.code.value).inc()
        last = codec.error_message(refusal.code, str(refusal), fatal=True)
        await link.finish(refusal.close_code, last, reason=str(refusal))
    except _Gone:
        pass  # the client went away; nothing is left to tell it


def _request_token(websocket: WebSocket) -> str | None:
    return bearer_token(websocket.headers) or websocket.query_params.get("token") or None


async def _receive(ctx: ServerContext, websocket: WebSocket, decoder: RelayDecoder) -> Received:
    """The next client message (ProtocolError if it is not one; _Gone on disconnect)."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text: str | None = message.get("text")
    data: bytes = message.get("bytes") or b""
    size = len(data) if text is None else len(text.encode("utf-8", "surrogatepass"))
    ctx.metrics.bytes_in.labels(PROTOCOL).inc(size)
    try:
        return decoder.receive_text(text) if text is not None else decoder.receive_bytes(data)
    except ProtocolError as exc:
        if exc.code == ErrorCode.MESSAGE_TOO_LARGE:
            raise _Refusal(exc.code, str(exc), codec.CLOSE_TOO_LARGE) from None
        raise


async def _report(ctx: ServerContext, link: _Link, code: ErrorCode, message: str) -> None:
    ctx.metrics.errors.labels(PROTOCOL, code.value).inc()
    await link.send(codec.error_message(code, message))


def _shutting_down(ctx: ServerContext) -> None:
    if ctx.shutting_down.is_set():
        raise _Refusal(
            ErrorCode.SHUTTING_DOWN, "the server is shutting down", codec.CLOSE_TRY_AGAIN_LATER
        )


async def _authenticate(ctx: ServerContext, token: str | None) -> Device | None:
    try:
        return await ctx.authenticate(token)
    except UnavailableError as exc:
        raise _Refusal(ErrorCode.UNAVAILABLE, str(exc), codec.CLOSE_TRY_AGAIN_LATER) from None


async def _handshake(
    ctx: ServerContext, websocket: WebSocket, link: _Link, decoder: RelayDecoder
) -> tuple[Device, SessionStart]:
    """Authenticate (header or query now, else ``session.start``) and read ``session.start``."""
    _shutting_down(ctx)
    token = _request_token(websocket)
    device = await _authenticate(ctx, token) if token else None
    if token and device is None:
        raise _Refusal(ErrorCode.UNAUTHORIZED, "invalid token", codec.CLOSE_UNAUTHORIZED)
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            start = await _read_start(ctx, websocket, link, decoder)
    except TimeoutError:
        raise _Refusal(
            ErrorCode.BAD_REQUEST, "no session.start in time", codec.CLOSE_TIMEOUT
        ) from None
    if device is None:
        device = await _authenticate(ctx, start.token)
        if device is None:
            message = "invalid token" if start.token else "a device token is required"
            raise _Refusal(ErrorCode.UNAUTHORIZED, message, codec.CLOSE_UNAUTHORIZED)
    key = f"device:{device.id}"
    if not ctx.connection_limit.allow(key):
        retry_s = ctx.connection_limit.retry_after_s(key)
        raise _Refusal(
            ErrorCode.RATE_LIMITED,
            f"too many connections for this device; retry in {retry_s:.0f} s",
            codec.CLOSE_RATE_LIMITED,
        )
    _shutting_down(ctx)
    return device, start


async def _read_start(
    ctx: ServerContext, websocket: WebSocket, link: _Link, decoder: RelayDecoder
) -> SessionStart:
    while True:
        try:
            received = await _receive(ctx, websocket, decoder)
        except ProtocolError as exc:
            await _report(ctx, link, exc.code, str(exc))
            continue
        if isinstance(received.event, SessionStart):
            return received.event
        if isinstance(received.event, AudioFrame):
            raise _Refusal(
                ErrorCode.BAD_REQUEST, "audio before session.start", codec.CLOSE_PROTOCOL_VIOLATION
            )
        await _report(ctx, link, ErrorCode.BAD_REQUEST, "send session.start first")


def _turn_settings(turn: TurnSettings, start: SessionStart) -> TurnSettings:
    update: dict[str, object] = {}
    if start.partial_transcripts is not None:
        update["partial_transcripts"] = start.partial_transcripts
    if start.turn_detection is TurnDetection.CLIENT:
        # The client commits turns; the server's VAD still finds where speech is (and barge-in).
        update["end_of_turn_silence_ms"] = turn.max_utterance_ms
        update["speculative_start_ms"] = None
    return turn.model_copy(update=update)


async def _character(ctx: ServerContext, device: Device, start: SessionStart) -> CharacterChoice:
    """The stored character the client or device names (else the default), with the client's
    adjustments."""
    try:
        choice = await ctx.character_for(device, start.character.id)
    except NotFoundError as exc:
        raise _Refusal(ErrorCode.BAD_REQUEST, str(exc), codec.CLOSE_PROTOCOL_VIOLATION) from None
    given = start.character
    update = {
        key: value
        for key, value in (
            ("name", given.name),
            ("system_prompt", given.system_prompt),
            ("first_message", given.first_message),
        )
        if value is not None
    }
    return CharacterChoice(choice.settings.model_copy(update=update), choice.character_id)


async def _serve(
    ctx: ServerContext,
    websocket: WebSocket,
    link: _Link,
    decoder: RelayDecoder,
    device: Device,
    start: SessionStart,
) -> None:
    turn = _turn_settings(ctx.settings.turn, start)
    choice = await _character(ctx, device, start)
    character = choice.settings
    session = await ctx.open_session(
        device, output_rate_hz=start.output_rate_hz, turn=turn, character=choice
    )
    histories = _histories(websocket)
    session_id = secrets.token_urlsafe(12)
    # The device's conversation continues from the database; a resumed session id (a reconnect
    # to this process) gives exactly that session's history instead.
    resumed: int | None = len(session.history.exchanges) or None
    earlier = histories.get(start.resume_session_id or "")
    if earlier is not None and earlier.device_id == device.id:
        session_id = start.resume_session_id or session_id
        session.history.exchanges = list(earlier.exchanges)
        resumed = len(earlier.exchanges)
    ctx.metrics.sessions.labels(PROTOCOL).inc()
    ctx.metrics.sessions_total.labels(PROTOCOL).inc()
    try:
        ready = Ready(
            session_id=session_id,
            device=device.name,
            input_rate_hz=start.input_rate_hz,
            output_rate_hz=start.output_rate_hz,
            turn_detection=start.turn_detection,
            partial_transcripts=turn.partial_transcripts,
            barge_in=turn.barge_in,
            character_name=character.name,
            greeting=start.greeting,
            resumed_turns=resumed,
            max_message_bytes=ctx.settings.server.max_message_bytes,
        )
        await link.send(codec.ready_message(ready))
        if start.greeting:
            await session.greet()
        await _run(ctx, websocket, link, decoder, session, start)
    finally:
        await ctx.close_session(session)
        ctx.metrics.sessions.labels(PROTOCOL).dec()
        if session.history.exchanges:
            histories[session_id] = _History(device.id, list(session.history.exchanges))
            histories.move_to_end(session_id)
            while len(histories) > RESUMABLE_SESSIONS:
                histories.popitem(last=False)


async def _run(
    ctx: ServerContext,
    websocket: WebSocket,
    link: _Link,
    decoder: RelayDecoder,
    session: VoiceSession,
    start: SessionStart,
) -> None:
    """The reader and the event pump side by side until either ends; then the other is
    cancelled and the connection closed as the schema says."""
    pump = asyncio.create_task(
        pump_events(ctx, PROTOCOL, session, RelayEncoder(session.was_interrupted), link.send)
    )
    reader = asyncio.create_task(_read(ctx, websocket, link, decoder, session, start))
    try:
        await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, reader):
            task.cancel()
        await asyncio.gather(pump, reader, return_exceptions=True)
    if reader.done() and not reader.cancelled() and reader.exception() is None:
        await link.finish(codec.CLOSE_NORMAL, codec.session_end_message("client"))
        return
    for task in (reader, pump):
        if task.cancelled() or (error := task.exception()) is None:
            continue
        if isinstance(error, _Refusal | WebSocketDisconnect | WebSocketDisconnected):
            raise error
        if isinstance(error, SessionEnded):
            await link.finish(codec.CLOSE_NORMAL)
            return
        if isinstance(error, SlowClientError):
            logger.info("relay client too slow: %s", error)
            await link.finish(codec.CLOSE_TIMEOUT)
            return
        logger.error("relay session failed", exc_info=error)
        raise _Refusal(ErrorCode.INTERNAL, "internal error", codec.CLOSE_INTERNAL)
    # The pump ended without error: the server closed the session (shutdown).
    await link.finish(codec.CLOSE_GOING_AWAY, codec.session_end_message("server_shutdown"))


async def _read(
    ctx: ServerContext,
    websocket: WebSocket,
    link: _Link,
    decoder: RelayDecoder,
    session: VoiceSession,
    start: SessionStart,
) -> None:
    """Client messages into the session; returns when the client sends ``session.end``."""
    while True:
        try:
            received = await _receive(ctx, websocket, decoder)
        except ProtocolError as exc:
            await _report(ctx, link, exc.code, str(exc))
            continue
        if received.expected_seq is not None:
            await _report(
                ctx,
                link,
                ErrorCode.SEQ_GAP,
                f"expected seq {received.expected_seq}, got {received.seq}",
            )
        match received.event:
            case AudioFrame(pcm):
                await feed_audio(
                    ctx, PROTOCOL, session, pcm, start.input_rate_hz, count_bytes=False
                )
            case InputCommit():
                session.commit_turn()
            case ReplyInterrupt():
                session.interrupt()
            case TextInput(text):
                await session.say(text)
            case PlaybackPosition(turn_id, played_ms):
                session.report_playout(turn_id, played_ms)
            case SessionEnd():
                return
            case SessionStart():
                await _report(ctx, link, ErrorCode.BAD_REQUEST, "the session has already started")
