"""Driving a session with a recorded clip: one spoken turn, as a device would send it.

Shared by ``voxgate talk``, the benchmark and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from voxgate.core.capabilities import Int16Array
from voxgate.core.errors import ErrorCode
from voxgate.core.events import ErrorEvent, Event, ReplyAudio, Transcript, TurnDone, TurnTimings
from voxgate.pipeline.session import TurnSession

FRAME_MS = 20
_TURN_ENDING = frozenset({ErrorCode.NO_SPEECH, ErrorCode.STT_FAILED, ErrorCode.BAD_AUDIO})


@dataclass
class TurnResult:
    transcript: str = ""
    reply_text: str = ""
    audio: list[bytes] = field(default_factory=list)
    sample_rate_hz: int = 0
    timings: TurnTimings | None = None
    errors: list[ErrorEvent] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def pcm(self) -> Int16Array:
        return np.frombuffer(b"".join(self.audio), dtype="<i2").astype(np.int16)


async def collect_turn(session: TurnSession, result: TurnResult, timeout_s: float) -> None:
    """Read events until a turn is done or fails."""
    async with asyncio.timeout(timeout_s):
        async for event in session.events():
            result.events.append(event)
            match event:
                case Transcript(text, True):
                    result.transcript = text
                case ReplyAudio():
                    result.audio.append(event.pcm)
                    result.sample_rate_hz = event.sample_rate_hz
                case ErrorEvent():
                    result.errors.append(event)
                    # These end a turn before any reply begins.
                    if event.code in _TURN_ENDING and not result.audio:
                        return
                case TurnDone():
                    result.reply_text = event.reply_text
                    result.timings = event.timings
                    return


async def spoken_turn(
    session: TurnSession,
    samples: Int16Array,
    sample_rate_hz: int,
    *,
    realtime: bool = True,
    trailing_silence_ms: int = 1500,
    timeout_s: float = 120.0,
) -> TurnResult:
    """Send ``samples`` in 20 ms frames (at real-time pace when ``realtime``), then silence,
    and return what the session answered."""
    result = TurnResult()
    reader = asyncio.create_task(collect_turn(session, result, timeout_s))
    frame = max(1, sample_rate_hz * FRAME_MS // 1000)
    silence = np.zeros(sample_rate_hz * trailing_silence_ms // 1000, dtype=np.int16)
    audio = np.concatenate([samples.astype(np.int16), silence])
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, offset in enumerate(range(0, len(audio), frame)):
        if reader.done():
            break
        await session.push_audio(
            audio[offset : offset + frame].astype("<i2").tobytes(), sample_rate_hz
        )
        if realtime:
            await asyncio.sleep(max(0.0, start + (index + 1) * FRAME_MS / 1000 - loop.time()))
    session.commit_turn()
    await session.wait_idle()
    # Events of a finished reply are already queued; if none ever came, no speech was heard.
    for _ in range(10):
        if reader.done():
            break
        await asyncio.sleep(0.01)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    return result
