"""voice-assistant-proxy over WebSocket: ``/ws``, raw PCM both ways, server VAD."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from voxgate.core.errors import ProtocolError
from voxgate.core.events import Event
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols import assistant_proxy as codec
from voxgate.protocols.assistant_proxy import (
    INPUT_RATE_HZ,
    OUTPUT_RATE_HZ,
    PROTOCOL,
    TOKEN_HEADER,
    DownlinkEncoder,
    EndOfTurn,
    SilenceWatchdog,
    UplinkAudio,
    parse_ws_message,
)
from voxgate.protocols.closing import Close, Ending
from voxgate.protocols.frames import EventEncoder, Outbound
from voxgate.server.context import ServerContext
from voxgate.server.runner import feed_audio
from voxgate.server.transports.connection import ProtocolAdapter, Refused, Wire, endpoint
from voxgate.store.records import Device


@dataclass
class _WatchedEncoder:
    """The downlink encoder, telling the watchdog what the device is being sent, in order."""

    inner: DownlinkEncoder
    watchdog: SilenceWatchdog
    loop: asyncio.AbstractEventLoop

    def encode(self, event: Event) -> list[Outbound]:
        self.watchdog.note(event, self.loop.time())
        return self.inner.encode(event)


class ProxyAdapter(ProtocolAdapter):
    """The firmware's ``/ws``: a token (header or query), audio only, and the original proxy's
    silence timeout (a beep, then close)."""

    name = PROTOCOL

    def close_for(self, ending: Ending, detail: str = "") -> Close:
        return codec.close_for(ending, detail)

    async def authenticate(self, ctx: ServerContext, wire: Wire) -> Device:
        ws = wire.websocket
        token = ws.headers.get(TOKEN_HEADER) or ws.query_params.get("token")
        device = await ctx.authenticate(token)
        if device is None:
            raise Refused(self.close_for(Ending.UNAUTHORIZED))
        return device

    async def open_session(self, ctx: ServerContext, device: Device) -> VoiceSession:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.watchdog = SilenceWatchdog(ctx.settings.server.proxy_silence_timeout_s, loop.time())
        return await ctx.open_session(
            device, output_rate_hz=OUTPUT_RATE_HZ, limit_key=self.limit_key
        )

    def encoder(self, session: VoiceSession) -> EventEncoder:
        return _WatchedEncoder(DownlinkEncoder(), self.watchdog, self.loop)

    async def receive(
        self, ctx: ServerContext, wire: Wire, session: VoiceSession, data: str | bytes
    ) -> Close | None:
        try:
            inbound = parse_ws_message(data)
        except ProtocolError as exc:
            return self.close_for(Ending.BAD_REQUEST, str(exc))
        if isinstance(inbound, UplinkAudio):
            await feed_audio(ctx, PROTOCOL, session, inbound.pcm, INPUT_RATE_HZ, count_bytes=False)
        elif isinstance(inbound, EndOfTurn):
            session.commit_turn()
        return None

    async def watch(self, session: VoiceSession) -> Close:
        # The deadline moves with every event the pump encodes: sleep until it, then look again.
        watchdog, loop = self.watchdog, self.loop
        while not watchdog.expired(loop.time()):  # noqa: ASYNC110
            await asyncio.sleep(max(0.01, watchdog.remaining_s(loop.time())))
        return codec.SILENCE_CLOSE


proxy_websocket = endpoint(ProxyAdapter)
