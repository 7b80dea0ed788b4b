"""Transport for the relay protocol: the WebSocket route ``/v1/relay`` around
:mod:`voxgate.protocols.relay` (schema: ``docs/protocols/relay.md``)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute

from voxgate.core.config import Settings, TurnSettings
from voxgate.core.errors import ConfigError, ErrorCode, NotFoundError
from voxgate.core.listening import ListeningMode, WakeListening
from voxgate.pipeline.history import Exchange
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols import relay as codec
from voxgate.protocols.closing import Close, Ending
from voxgate.protocols.frames import EventEncoder
from voxgate.protocols.relay import (
    AudioFrame,
    Inbound,
    InputCommit,
    PlaybackPosition,
    Ready,
    RelayConnection,
    RelayEncoder,
    RelaySequencer,
    ReplyInterrupt,
    SessionStart,
    TextInput,
    TurnDetection,
)
from voxgate.server.auth import bearer_token
from voxgate.server.context import CharacterChoice, ServerContext
from voxgate.server.policy import prompt_override_refusal, shared_token_refusal
from voxgate.server.runner import feed_audio
from voxgate.server.transports.connection import ProtocolAdapter, Refused, Wire, endpoint
from voxgate.store.records import Device

PATH = "/v1/relay"
PROTOCOL = "relay"
START_TIMEOUT_S = 10.0
"""A connection that has not sent ``session.start`` by then is closed (4408)."""
RESUMABLE_SESSIONS = 256


@dataclass
class _History:
    device_id: int
    exchanges: list[Exchange]


def routes(settings: Settings) -> list[BaseRoute]:
    return [WebSocketRoute(PATH, endpoint(RelayAdapter))]


class RelayAdapter(ProtocolAdapter):
    """The relay's part of a connection; its rules are :class:`RelayConnection`'s."""

    name = PROTOCOL

    def __init__(self) -> None:
        self.connection: RelayConnection | None = None
        self.app: Any = None
        self.heard_at = 0.0
        """When the client last sent anything (the loop's clock): the idle timeout counts from
        it."""
        self.session_id = ""
        self.device_id = 0

    def close_for(self, ending: Ending, detail: str = "") -> Close:
        return codec.close_for(ending, detail)

    def frames(self, data: str | bytes) -> list[str | bytes]:
        if self.connection is None:
            # Refused before authenticate() (the server is shutting down): the refusal is the
            # connection's first and only message.
            return RelaySequencer().frames(data)
        return self.connection.frames(data)

    @property
    def _connection(self) -> RelayConnection:
        assert self.connection is not None, "authenticate() makes it"
        return self.connection

    @property
    def _start(self) -> SessionStart:
        start = self._connection.start
        assert start is not None, "authenticate() waits for it"
        return start

    async def authenticate(self, ctx: ServerContext, wire: Wire) -> Device:
        """The token of the request (header or query) now, else the one in ``session.start``;
        either way ``session.start`` is read first."""
        self.connection = RelayConnection(ctx.settings.server.max_message_bytes)
        ws = wire.websocket
        self.app = ws.app
        token = bearer_token(ws.headers) or ws.query_params.get("token") or None
        device = await ctx.authenticate(token) if token else None
        if token and device is None:
            raise Refused(self.close_for(Ending.UNAUTHORIZED, "invalid token"))
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while self.connection.start is None:
                    await self._take(ctx, wire, await wire.receive())
        except TimeoutError:
            raise Refused(self.close_for(Ending.TIMEOUT, "no session.start in time")) from None
        if device is None:
            start_token = self._start.token
            device = await ctx.authenticate(start_token)
            if device is None:
                message = "invalid token" if start_token else "a device token is required"
                raise Refused(self.close_for(Ending.UNAUTHORIZED, message))
        refusal = shared_token_refusal(device, PROTOCOL)
        if refusal is not None:
            raise Refused(self.close_for(Ending.UNAUTHORIZED, refusal))
        self.device_id = device.id
        return device

    async def _take(self, ctx: ServerContext, wire: Wire, data: str | bytes) -> Inbound:
        """One message through the connection's rules; errors told, a close raised."""
        connection = self._connection
        inbound = (
            connection.receive_text(data)
            if isinstance(data, str)
            else connection.receive_bytes(data)
        )
        for code, message in inbound.errors:
            await _report(ctx, wire, code, message)
        if inbound.close is not None:
            raise Refused(inbound.close)
        return inbound

    async def open_session(self, ctx: ServerContext, device: Device) -> VoiceSession:
        start = self._start
        self.idle_timeout_s = ctx.settings.server.relay_idle_timeout_s
        self.turn = _turn_settings(ctx.settings.turn, start)
        self.choice = await _character(ctx, device, start)
        self.listening = _listening(ctx, device, start, self.choice)
        # The client commits turns; the server's VAD still finds where speech is (and barge-in).
        client = start.turn_detection is TurnDetection.CLIENT
        session = await ctx.open_session(
            device,
            output_rate_hz=start.output_rate_hz,
            turn=self.turn,
            character=self.choice,
            detection=ctx.client_commit() if client else None,
            listening=self.listening,
        )
        # The device's conversation continues from the database; a resumed session id (a
        # reconnect to this process) gives exactly that session's history instead.
        self.session_id = secrets.token_urlsafe(12)
        self.resumed: int | None = len(session.history.exchanges) or None
        earlier = _histories(self.app).get(start.resume_session_id or "")
        if earlier is not None and earlier.device_id == device.id:
            self.session_id = start.resume_session_id or self.session_id
            session.history.restore(earlier.exchanges)
            self.resumed = len(earlier.exchanges)
        self.device_name = device.name
        return session

    async def begin(self, ctx: ServerContext, wire: Wire, session: VoiceSession) -> None:
        start = self._start
        wake = self.listening
        # A session waiting for its wake word says nothing first: it was not spoken to.
        greeting = start.greeting and wake is None
        ready = Ready(
            session_id=self.session_id,
            device=self.device_name,
            input_rate_hz=start.input_rate_hz,
            output_rate_hz=start.output_rate_hz,
            turn_detection=start.turn_detection,
            partial_transcripts=self.turn.partial_transcripts,
            barge_in=self.turn.barge_in,
            character_name=self.choice.settings.name,
            greeting=greeting,
            resumed_turns=self.resumed,
            max_message_bytes=ctx.settings.server.max_message_bytes,
            listening_mode=ListeningMode.WAKE_WORD if wake else ListeningMode.PUSH_TO_TALK,
            wake_word=wake.wake_word if wake else None,
            follow_up=wake.follow_up if wake else None,
            silence_s=wake.silence_s if wake else None,
        )
        await wire.send(codec.ready_message(ready))
        if greeting:
            await session.greet()

    def encoder(self, session: VoiceSession) -> EventEncoder:
        return RelayEncoder(session.was_interrupted)

    async def watch(self, session: VoiceSession) -> Close:
        """A session whose client sends nothing for ``server.relay_idle_timeout_s`` is closed:
        a client streams audio (silence too) while it talks, so only a stuck or idle one goes
        quiet, and sixty of those must not hold their slots."""
        loop = asyncio.get_running_loop()
        self.heard_at = loop.time()
        while True:
            left = self.heard_at + self.idle_timeout_s - loop.time()
            if left <= 0:
                detail = f"nothing from the client for {self.idle_timeout_s:.0f} s"
                return self.close_for(Ending.TIMEOUT, detail)
            await asyncio.sleep(left)

    async def receive(
        self, ctx: ServerContext, wire: Wire, session: VoiceSession, data: str | bytes
    ) -> Close | None:
        self.heard_at = asyncio.get_running_loop().time()
        try:
            inbound = await self._take(ctx, wire, data)
        except Refused as refused:
            return refused.close
        for event in inbound.events:
            match event:
                case AudioFrame(pcm):
                    await feed_audio(
                        ctx, PROTOCOL, session, pcm, self._start.input_rate_hz, count_bytes=False
                    )
                case InputCommit():
                    session.commit_turn()
                case ReplyInterrupt():
                    session.interrupt()
                case TextInput(text):
                    await session.say(text)
                case PlaybackPosition(turn_id, played_ms):
                    session.report_playout(turn_id, played_ms)
        return None

    async def ended(self, ctx: ServerContext, session: VoiceSession) -> None:
        exchanges = session.history.exchanges
        if exchanges:
            histories = _histories(self.app)
            histories[self.session_id] = _History(self.device_id, list(exchanges))
            histories.move_to_end(self.session_id)
            while len(histories) > RESUMABLE_SESSIONS:
                histories.popitem(last=False)


def _histories(app: Any) -> OrderedDict[str, _History]:
    """Conversations of ended sessions, newest last, for ``resume_session_id`` (in memory)."""
    state = app.state
    if not hasattr(state, "relay_histories"):
        state.relay_histories = OrderedDict()
    histories: OrderedDict[str, _History] = state.relay_histories
    return histories


async def _report(ctx: ServerContext, wire: Wire, code: ErrorCode, message: str) -> None:
    ctx.metrics.errors.labels(PROTOCOL, code.value).inc()
    await wire.send(codec.error_message(code, message))


def _listening(
    ctx: ServerContext, device: Device, start: SessionStart, choice: CharacterChoice
) -> WakeListening | None:
    """The session's wake word listening, or None when it hears everything (push to talk)."""
    asked = start.listening
    if (asked.mode or ctx.settings.listening.mode) != ListeningMode.WAKE_WORD:
        return None
    try:
        listening = ctx.wake_listening(device, asked.wake_word, choice.settings)
    except ConfigError as exc:
        raise Refused(codec.close_for(Ending.BAD_REQUEST, str(exc))) from None
    return dataclasses.replace(
        listening,
        follow_up=asked.follow_up or listening.follow_up,
        silence_s=asked.silence_s or listening.silence_s,
    )


def _turn_settings(turn: TurnSettings, start: SessionStart) -> TurnSettings:
    update: dict[str, object] = {}
    if start.partial_transcripts is not None:
        update["partial_transcripts"] = start.partial_transcripts
    return turn.model_copy(update=update)


async def _character(ctx: ServerContext, device: Device, start: SessionStart) -> CharacterChoice:
    """The stored character the client or device names (else the default), with the client's
    adjustments."""
    given = start.character
    refusal = prompt_override_refusal(
        ctx.settings.server,
        given.id or device.settings.character,
        replaces_prompt=given.system_prompt is not None,
    )
    if refusal is not None:
        raise Refused(codec.close_for(Ending.BAD_REQUEST, refusal))
    try:
        choice = await ctx.character_for(device, start.character.id)
    except NotFoundError as exc:
        raise Refused(codec.close_for(Ending.BAD_REQUEST, str(exc))) from None
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
