"""ElatoAI devices: the WebSocket at ``settings.server.elato_paths`` (the token endpoint is
:mod:`voxgate.server.elato_tokens`).

A protocol adapter (:mod:`voxgate.server.transports.connection`) around
:mod:`voxgate.protocols.elato`. The device cannot take part in turn-taking: it
waits for RESPONSE.COMPLETE before it listens, has no VAD and no barge-in. So every session opens
with a greeting turn, the server's VAD ends the user's turn after
``server.elato_end_of_turn_silence_ms`` of silence, and barge-in is off.

The ``auth`` message sends the device's volume and pitch (``voxgate devices set NAME --volume 60
--pitch 1.1``), else Elato's defaults (volume 70, pitch 1.0); no OTA, no reset.

permessage-deflate must be off on this route (the firmware does not speak it): the server
starts uvicorn with ``ws_per_message_deflate=False``.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.routing import BaseRoute, WebSocketRoute

from voxgate.core.config import Settings
from voxgate.core.errors import ConfigError, ProtocolError
from voxgate.core.listening import ListeningMode
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols import elato
from voxgate.protocols.closing import Close, Ending
from voxgate.protocols.frames import EventEncoder
from voxgate.server.auth import bearer_token
from voxgate.server.context import CharacterChoice, ServerContext
from voxgate.server.runner import SessionEnded, feed_audio
from voxgate.server.transports.connection import ProtocolAdapter, Refused, Wire, endpoint
from voxgate.store.devices import normalize_mac
from voxgate.store.records import Device
from voxgate.store.writer import DeviceSeen

logger = logging.getLogger(__name__)

PROTOCOL = "elato"
SUBPROTOCOL = "arduino"
"""The Arduino WebSocket client offers it; accepted when offered."""
DEFAULT_FIRST_MESSAGE = "Hi! What would you like to talk about?"
"""Spoken when no greeting is configured: the device only listens after a reply is complete."""


def routes(settings: Settings) -> list[BaseRoute]:
    paths = settings.server.elato_paths
    # The token endpoint is voxgate.server.elato_tokens.
    return [WebSocketRoute(path, endpoint(ElatoAdapter)) for path in paths]


# -- the WebSocket --------------------------------------------------------------------------


async def _authorize(ctx: ServerContext, wire: Wire) -> Device | str:
    """The device, or why not: a valid token, the MAC it names in ``X-Device-Mac``, and that
    device still registered and active."""
    headers = wire.websocket.headers
    secret = ctx.settings.server.jwt_secret
    if secret is None:
        return "ElatoAI tokens are disabled (server.jwt_secret is not set)"
    token = bearer_token(headers)
    if token is None:
        return "missing Authorization: Bearer <token>"
    try:
        mac = normalize_mac(headers.get("x-device-mac", ""))
        claims = elato.verify_token(secret.get_secret_value(), token, mac=mac)
    except (ProtocolError, ConfigError) as exc:
        return str(exc)
    # Raises UnavailableError when the database cannot say (and the device is not known).
    device = await ctx.device_for_credential(token, claims.device_id)
    if device is None or not device.active or device.mac != mac:
        return f"device {mac} is not registered, or has been revoked"
    if claims.generation != device.token_generation:
        return f"the token of {mac} was replaced when the device was paired again"
    # It has its token: pairing is over, nobody else can fetch one for this MAC now.
    ctx.store.writer.submit(DeviceSeen(device.id, paired=device.pair_until is not None))
    return device


class ElatoAdapter(ProtocolAdapter):
    """An ElatoAI device's connection: refused at the upgrade (HTTP status) like Elato's server,
    Opus down, PCM up, no error messages (the firmware has none)."""

    name = PROTOCOL
    accepts_first = False

    def __init__(self) -> None:
        self.codec = elato.ElatoEncoder()
        self.prebuffer_s = 0.0

    def close_for(self, ending: Ending, detail: str = "") -> Close:
        return elato.close_for(ending, detail)

    async def authenticate(self, ctx: ServerContext, wire: Wire) -> Device:
        device = await _authorize(ctx, wire)
        if isinstance(device, str):
            raise Refused(self.close_for(Ending.UNAUTHORIZED, device))
        return device

    def subprotocol(self, offered: list[str]) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    async def open_session(self, ctx: ServerContext, device: Device) -> VoiceSession:
        settings = ctx.settings
        self.prebuffer_s = (settings.server.prebuffer_ms + elato.FRAME_MS) / 1000.0
        self.device_settings = device.settings
        self.device_name = device.name
        choice = await ctx.character_for(device)
        character = choice.settings
        if character.first_message is None and character.greeting_prompt is None:
            character = character.model_copy(update={"first_message": DEFAULT_FIRST_MESSAGE})
        # The microphone is off while the device speaks: no barge-in.
        turn = settings.turn.model_copy(update={"barge_in": False})
        # Hands-free only when configured: the firmware knows nothing of it.
        hands_free = settings.listening.elato_mode == ListeningMode.WAKE_WORD
        self.listening = ctx.wake_listening(device, character=character) if hands_free else None
        return await ctx.open_session(
            device,
            output_rate_hz=elato.OUTPUT_RATE_HZ,
            turn=turn,
            character=CharacterChoice(character, choice.character_id),
            detection=ctx.server_vad(settings.server.elato_end_of_turn_silence_ms),
            listening=self.listening,
        )

    async def begin(self, ctx: ServerContext, wire: Wire, session: VoiceSession) -> None:
        rssi = wire.websocket.headers.get("x-wifi-rssi")
        logger.info("ElatoAI device %s connected (RSSI %s)", self.device_name, rssi)
        settings = self.device_settings
        await wire.send(
            elato.auth_message(
                volume_control=elato.DEFAULT_VOLUME if settings.volume is None else settings.volume,
                pitch_factor=1.0 if settings.pitch is None else settings.pitch,
            )
        )
        if self.listening is None:  # a hands-free session waits to be spoken to
            await session.greet()

    def encoder(self, session: VoiceSession) -> EventEncoder:
        return self.codec

    async def send(self, wire: Wire, data: str | bytes) -> None:
        if data != elato.SESSION_END:
            await wire.send(data)
            return
        # The device sleeps at once: let it play what it holds (at most the prebuffer).
        await asyncio.sleep(self.prebuffer_s)
        await wire.send(data)
        raise SessionEnded

    async def receive(
        self, ctx: ServerContext, wire: Wire, session: VoiceSession, data: str | bytes
    ) -> Close | None:
        try:
            inbound = elato.parse_message(data)
        except ProtocolError as exc:
            # The protocol has no error message for the device; like Elato's servers, a message
            # it cannot read is logged and ignored.
            logger.info("ignored an ElatoAI message: %s", exc)
            ctx.metrics.errors.labels(PROTOCOL, exc.code).inc()
            return None
        match inbound:
            case elato.AudioIn(pcm):
                await feed_audio(
                    ctx, PROTOCOL, session, pcm, elato.INPUT_RATE_HZ, count_bytes=False
                )
            case elato.EndOfSpeech():
                session.commit_turn()
            case elato.Interrupt(audio_end_ms):
                turn_id = self.codec.reply_turn_id
                if turn_id is not None and audio_end_ms is not None:
                    session.report_playout(turn_id, audio_end_ms)
                session.interrupt()
            case elato.EndSession():
                return self.close_for(Ending.CLIENT_ENDED)
        return None
