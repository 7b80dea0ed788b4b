"""The downlink half every transport shares: session events → the protocol's frames → the socket,
paced, with metrics, dropping audio of a reply the user interrupted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from voxgate.core.events import (
    ErrorEvent,
    ReplyStarted,
    SessionEndRequested,
    TurnDone,
    WakeWordHeard,
)
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols.frames import EventEncoder
from voxgate.server.context import ServerContext
from voxgate.server.pacing import AudioPacer

Send = Callable[[str | bytes], Awaitable[None]]


class SlowClientError(Exception):
    """The device stopped reading; it is disconnected rather than buffered for."""


class SessionEnded(Exception):
    """The assistant ended the session (its LLM called ``end_session``); the goodbye has been
    sent, and the transport closes the connection normally."""


async def feed_audio(
    ctx: ServerContext,
    protocol: str,
    session: VoiceSession,
    pcm: bytes,
    sample_rate_hz: int,
    *,
    count_bytes: bool = True,
) -> None:
    """The uplink half: one frame of PCM16 into the session, timed (and its bytes counted, unless
    the transport counts whole messages itself)."""
    started = time.perf_counter()
    await session.push_audio(pcm, sample_rate_hz)
    ctx.metrics.frame_seconds.labels(protocol).observe(time.perf_counter() - started)
    if count_bytes:
        ctx.metrics.bytes_in.labels(protocol).inc(len(pcm))


async def pump_events(
    ctx: ServerContext,
    protocol: str,
    session: VoiceSession,
    encoder: EventEncoder,
    send: Send,
) -> None:
    """Until the session closes. Raises SlowClientError when a send blocks too long."""
    pacer = AudioPacer(ctx.settings.server.prebuffer_ms)
    timeout_s = ctx.settings.server.send_timeout_s
    async for event in session.events():
        if isinstance(event, ReplyStarted):
            pacer.reset()
        elif isinstance(event, TurnDone):
            ctx.metrics.observe_turn(protocol, event)
            await ctx.turn_written(session, event.turn_id)
        elif isinstance(event, ErrorEvent):
            ctx.metrics.observe_error(protocol, event)
        elif isinstance(event, WakeWordHeard):
            ctx.metrics.wake_words.labels(protocol, event.wake_word).inc()
        for out in encoder.encode(event):
            if out.turn_id is not None and session.was_interrupted(out.turn_id):
                continue
            if out.audio_ms:
                await pacer.before_send(out.audio_ms)
                if out.turn_id is not None and session.was_interrupted(out.turn_id):
                    continue
            try:
                async with asyncio.timeout(timeout_s):
                    await send(out.data)
            except TimeoutError as exc:
                raise SlowClientError(f"the device read nothing for {timeout_s:.0f} s") from exc
            size = len(out.data) if isinstance(out.data, bytes) else len(out.data.encode())
            ctx.metrics.bytes_out.labels(protocol).inc(size)
        if isinstance(event, SessionEndRequested):
            raise SessionEnded
