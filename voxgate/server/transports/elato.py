"""ElatoAI devices: the WebSocket at ``settings.server.elato_paths`` (the token endpoint is
:mod:`voxgate.server.elato_tokens`).

A thin loop around :mod:`voxgate.protocols.elato`. The device cannot take part in turn-taking: it
waits for RESPONSE.COMPLETE before it listens, has no VAD and no barge-in. So every session opens
with a greeting turn, the server's VAD ends the user's turn after
``server.elato_end_of_turn_silence_ms`` of silence, and barge-in is off.

The ``auth`` message sends the device's volume and pitch (``voxgate devices set NAME --volume 60
--pitch 1.1``), else Elato's defaults (volume 70, pitch 1.0); no OTA, no reset.

permessage-deflate must be off on this route (the firmware does not speak it): the server runner
starts uvicorn with ``ws_per_message_deflate=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxgate.core.config import Settings
from voxgate.core.errors import (
    ConfigError,
    NotFoundError,
    ProtocolError,
    UnavailableError,
)
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols import elato
from voxgate.server.auth import bearer_token
from voxgate.server.context import AUTH_TIMEOUT_S, CharacterChoice, ServerContext
from voxgate.server.runner import SessionEnded, SlowClientError, feed_audio, pump_events
from voxgate.store.devices import normalize_mac
from voxgate.store.records import Device
from voxgate.store.writer import DeviceSeen

logger = logging.getLogger(__name__)

PROTOCOL = "elato"
SUBPROTOCOL = "arduino"
"""The Arduino WebSocket client offers it; accepted when offered."""
DEFAULT_FIRST_MESSAGE = "Hi! What would you like to talk about?"
"""Spoken when no greeting is configured: the device only listens after a reply is complete."""

_NORMAL, _GOING_AWAY, _POLICY, _TOO_BIG, _INTERNAL = 1000, 1001, 1008, 1009, 1011


def routes(settings: Settings) -> list[BaseRoute]:
    paths = settings.server.elato_paths
    # The token endpoint is voxgate.server.elato_tokens.
    return [WebSocketRoute(path, elato_socket) for path in paths]


def _error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


# -- the WebSocket --------------------------------------------------------------------------


async def _deny(websocket: WebSocket, status_code: int, message: str) -> None:
    """Refuse the upgrade with an HTTP status, as Elato's server does (401 for bad credentials).
    Without the ASGI denial extension only a close is possible, which clients see as 403."""
    logger.info("refused an ElatoAI connection: %s", message)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(_error(status_code, message))
    else:
        await websocket.close(code=_POLICY, reason=message[:120])


async def _authorize(ctx: ServerContext, websocket: WebSocket) -> Device | str | UnavailableError:
    """The device, or why not: a valid token, the MAC it names in ``X-Device-Mac``, and that
    device still registered and active."""
    secret = ctx.settings.server.jwt_secret
    if secret is None:
        return "ElatoAI tokens are disabled (server.jwt_secret is not set)"
    token = bearer_token(websocket.headers)
    if token is None:
        return "missing Authorization: Bearer <token>"
    try:
        mac = normalize_mac(websocket.headers.get("x-device-mac", ""))
        claims = elato.verify_token(secret.get_secret_value(), token, mac=mac)
    except (ProtocolError, ConfigError) as exc:
        return str(exc)
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            device: Device | None = await ctx.store.devices.get(claims.device_id)
    except NotFoundError:
        device = None
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        return UnavailableError(
            f"the device database is unavailable ({type(exc).__name__}); try again shortly"
        )
    if device is None or not device.active or device.mac != mac:
        return f"device {mac} is not registered, or has been revoked"
    if claims.generation != device.token_generation:
        return f"the token of {mac} was replaced when the device was paired again"
    # It has its token: pairing is over, nobody else can fetch one for this MAC now.
    ctx.store.writer.submit(DeviceSeen(device.id, paired=device.pair_until is not None))
    return device


async def elato_socket(websocket: WebSocket) -> None:
    ctx: ServerContext = websocket.app.state.ctx
    if ctx.shutting_down.is_set():
        await _deny(websocket, 503, "the server is shutting down")
        return
    device = await _authorize(ctx, websocket)
    if isinstance(device, UnavailableError):
        await _deny(websocket, 503, str(device))
        return
    if isinstance(device, str):
        await _deny(websocket, 401, device)
        return
    key = f"device:{device.id}"
    if not ctx.connection_limit.allow(key):
        retry = ctx.connection_limit.retry_after_s(key)
        await _deny(websocket, 429, f"too many connections; retry in {retry:.0f} s")
        return
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    logger.info(
        "ElatoAI device %s connected (RSSI %s)", device.name, websocket.headers.get("x-wifi-rssi")
    )
    ctx.metrics.sessions.labels(PROTOCOL).inc()
    ctx.metrics.sessions_total.labels(PROTOCOL).inc()
    session = await _open_session(ctx, device)
    try:
        code = await _converse(ctx, websocket, session, device)
    finally:
        await ctx.close_session(session)
        ctx.metrics.sessions.labels(PROTOCOL).dec()
    await _close(websocket, code)


async def _open_session(ctx: ServerContext, device: Device) -> VoiceSession:
    settings = ctx.settings
    choice = await ctx.character_for(device)
    character = choice.settings
    if character.first_message is None and character.greeting_prompt is None:
        character = character.model_copy(update={"first_message": DEFAULT_FIRST_MESSAGE})
    turn = settings.turn.model_copy(
        update={
            "end_of_turn_silence_ms": settings.server.elato_end_of_turn_silence_ms,
            "barge_in": False,  # the microphone is off while the device speaks
        }
    )
    return await ctx.open_session(
        device,
        output_rate_hz=elato.OUTPUT_RATE_HZ,
        turn=turn,
        character=CharacterChoice(character, choice.character_id),
    )


class _SessionEnded(Exception):
    """SESSION.END went out: the device is going to sleep."""


async def _converse(
    ctx: ServerContext, websocket: WebSocket, session: VoiceSession, device: Device
) -> int | None:
    """Runs the session until either side ends it; the close code to send (None: gone)."""
    encoder = elato.ElatoEncoder()
    prebuffer_s = (ctx.settings.server.prebuffer_ms + elato.FRAME_MS) / 1000.0

    async def send(data: str | bytes) -> None:
        if data == elato.SESSION_END:
            # The device sleeps at once: let it play what it holds (at most the prebuffer).
            await asyncio.sleep(prebuffer_s)
        if isinstance(data, bytes):
            await websocket.send_bytes(data)
        else:
            await websocket.send_text(data)
        if data == elato.SESSION_END:
            raise _SessionEnded

    try:
        settings = device.settings
        await websocket.send_text(
            elato.auth_message(
                volume_control=elato.DEFAULT_VOLUME if settings.volume is None else settings.volume,
                pitch_factor=1.0 if settings.pitch is None else settings.pitch,
            )
        )
    except _GONE:
        return None
    await session.greet()
    pump = asyncio.create_task(pump_events(ctx, PROTOCOL, session, encoder, send))
    reader = asyncio.create_task(_read(ctx, websocket, session, encoder))
    try:
        done, _ = await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, reader):
            task.cancel()
        await asyncio.gather(pump, reader, return_exceptions=True)
    if reader in done and reader.exception() is None:
        match reader.result():
            case "end_session":
                with contextlib.suppress(*_GONE):
                    await websocket.send_text(elato.SESSION_END)
                return _NORMAL
            case "too_big":
                return _TOO_BIG
            case "gone":
                return None
    return _outcome(reader if reader in done else pump)


_GONE = (WebSocketDisconnect, OSError, RuntimeError)
"""What sending to a socket the client has closed raises (uvicorn, Starlette)."""


def _outcome(task: asyncio.Task[Any]) -> int | None:
    """The close code after ``task`` (the pump, or a failed reader) ended the session."""
    exc = task.exception()
    if exc is None:  # the session was closed under the pump: the server is shutting down
        return _GOING_AWAY
    if isinstance(exc, _SessionEnded | SessionEnded):
        return _NORMAL
    if isinstance(exc, SlowClientError):
        logger.info("ElatoAI device disconnected: %s", exc)
        return _POLICY
    if isinstance(exc, _GONE):
        logger.debug("ElatoAI device went away: %r", exc)
        return None
    logger.error("ElatoAI session failed", exc_info=exc)
    return _INTERNAL


async def _read(
    ctx: ServerContext, websocket: WebSocket, session: VoiceSession, encoder: elato.ElatoEncoder
) -> Literal["gone", "too_big", "end_session"]:
    limit = ctx.settings.server.max_message_bytes
    bytes_in = ctx.metrics.bytes_in.labels(PROTOCOL)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return "gone"
        data: str | bytes | None = message.get("bytes")
        if data is None:
            data = message.get("text") or ""
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        if size > limit:
            logger.info("ElatoAI message of %d bytes is over the %d limit", size, limit)
            return "too_big"
        if isinstance(data, str):
            bytes_in.inc(size)  # feed_audio counts the audio
        try:
            inbound = elato.parse_message(data)
        except ProtocolError as exc:
            # The protocol has no error message for the device; like Elato's servers, a message
            # it cannot read is logged and ignored.
            logger.info("ignored an ElatoAI message: %s", exc)
            ctx.metrics.errors.labels(PROTOCOL, exc.code).inc()
            continue
        match inbound:
            case elato.AudioIn(pcm):
                await feed_audio(ctx, PROTOCOL, session, pcm, elato.INPUT_RATE_HZ)
            case elato.EndOfSpeech():
                session.commit_turn()
            case elato.Interrupt(audio_end_ms):
                turn_id = encoder.reply_turn_id
                if turn_id is not None and audio_end_ms is not None:
                    session.report_playout(turn_id, audio_end_ms)
                session.interrupt()
            case elato.EndSession():
                return "end_session"


async def _close(websocket: WebSocket, code: int | None) -> None:
    if code is None or websocket.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(*_GONE):
        await websocket.close(code=code)
