"""The voice-assistant-proxy protocol (pcomans/voice-assistant-device firmware), sans-I/O.

Two paths, both PCM16 LE mono: 16 kHz up, 24 kHz down.

- ``POST /v1/audio``: JSON chunks ``{session_id, chunk_index, pcm_base64, is_final}``; non-final
  ones are acknowledged with ``{"status": "partial"}`` (or ``"duplicate"`` for a retried index), the
  final one is answered with the reply as a raw PCM body, streamed while it is synthesised.
- ``/ws``: binary audio frames up (an empty one ends the turn), binary reply audio down, plus
  ``{"type":"speech_start"}`` / ``{"type":"speech_end"}`` text frames; after a silence timeout a
  short beep, then close 1000 "Silence timeout".

Chunk indices count from 0 in every turn (the firmware resets its counter after the final chunk),
so the bookkeeping of a session starts over once its final chunk is taken.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from voxgate.core.errors import ErrorCode, ProtocolError
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    ReplyAudio,
    ReplyStarted,
    SpeechStarted,
    SpeechStopped,
    TurnDone,
)
from voxgate.protocols.closing import Close, CloseCode, Ending
from voxgate.protocols.frames import Outbound

PROTOCOL = "assistant_proxy"
"""The metrics label."""
INPUT_RATE_HZ = 16_000
OUTPUT_RATE_HZ = 24_000
TOKEN_HEADER = "X-Assistant-Token"
ERROR_HEADER = "X-Voxgate-Error"
"""voxgate's addition: why a final chunk got an empty body (``no_speech``, ``rate_limited``...)."""
DOWNLINK_FRAME_MS = 100
"""Reply audio goes down in frames this long, so pacing and barge-in act at a fine grain."""
SPEECH_START_TEXT = '{"type":"speech_start"}'
SPEECH_END_TEXT = '{"type":"speech_end"}'
SILENCE_TIMEOUT_CODE = CloseCode.NORMAL
SILENCE_TIMEOUT_REASON = "Silence timeout"
BEEP_MS = 200
BEEP_HZ = 800.0
MAX_SESSION_ID_CHARS = 128

# Printable ASCII only: the id is echoed in the X-Session-ID header.
_SESSION_ID = re.compile(r"[\x20-\x7e]+")

# -- POST /v1/audio ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One validated ``POST /v1/audio`` body."""

    session_id: str
    chunk_index: int
    pcm: bytes = field(repr=False)
    """PCM16 LE mono at 16 kHz (may be empty, typically for the final chunk)."""
    is_final: bool = False


def parse_audio_chunk(body: bytes | str) -> AudioChunk:
    """The request body as a chunk; ProtocolError says what is wrong with it."""
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise ProtocolError(f"the body is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ProtocolError("the body must be a JSON object")
    return AudioChunk(
        session_id=_session_id(data.get("session_id")),
        chunk_index=_chunk_index(data.get("chunk_index")),
        pcm=_pcm(data.get("pcm_base64")),
        is_final=_is_final(data.get("is_final", False)),
    )


def _session_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError("session_id must be a non-empty string")
    if len(value) > MAX_SESSION_ID_CHARS:
        raise ProtocolError(f"session_id is longer than {MAX_SESSION_ID_CHARS} characters")
    if not _SESSION_ID.fullmatch(value):
        raise ProtocolError("session_id must be printable ASCII")
    return value


def _chunk_index(value: object) -> int:
    # bool is an int in Python, not in JSON.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("chunk_index must be an integer")
    if value < 0:
        raise ProtocolError("chunk_index must not be negative")
    return value


def _pcm(value: object) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("pcm_base64 must be a string (empty for no audio)")
    try:
        pcm = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
        raise ProtocolError(f"pcm_base64 is not valid base64 ({exc})") from exc
    if len(pcm) % 2:
        raise ProtocolError("pcm_base64 must hold whole PCM16 samples (an even number of bytes)")
    return pcm


def _is_final(value: object) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError("is_final must be true or false")
    return value


class ChunkStatus(StrEnum):
    PARTIAL = "partial"
    DUPLICATE = "duplicate"
    FINAL = "final"


class ChunkLedger:
    """Which chunks of a session's current turn were taken: retries are answered, not re-fed.

    ``status`` only looks; ``record`` once the chunk was handled, so a chunk whose handling failed
    can be retried. As in the original, a retried *final* chunk counts as a new turn: the count
    has started over.
    """

    def __init__(self) -> None:
        self.last_index = -1

    def status(self, chunk: AudioChunk) -> ChunkStatus:
        if chunk.chunk_index <= self.last_index:
            return ChunkStatus.DUPLICATE
        return ChunkStatus.FINAL if chunk.is_final else ChunkStatus.PARTIAL

    def record(self, chunk: AudioChunk) -> None:
        # The firmware counts from 0 again in the next turn.
        self.last_index = -1 if chunk.is_final else max(self.last_index, chunk.chunk_index)


def ack(status: ChunkStatus) -> dict[str, str]:
    """The JSON answer to a chunk that is not final (or a duplicate)."""
    return {"status": status.value}


class ReplyPhase(StrEnum):
    IDLE = "idle"
    """No turn is waiting for its reply."""
    AWAITING = "awaiting"
    """The turn ended; transcription runs, no reply yet."""
    REPLYING = "replying"
    DONE = "done"
    """The turn is over (its reply, or an error instead); what it produced waits to be taken."""


class ReplyCollector:
    """The body answering a final chunk, gathered from the session's events.

    The HTTP session reads its events only while a request is in flight, so this keeps the state
    between requests: whether the user is speaking, and the reply of a turn that ended. A turn ends
    with TurnDone, or with an error before its reply started (no speech, STT failure, rate limit).
    Assumes a session without barge-in (one reply at a time), as the HTTP path opens it.
    """

    def __init__(self) -> None:
        self.speaking = False
        self.phase = ReplyPhase.IDLE
        self.error: ErrorCode | None = None
        """The first error of the turn, if any (the reply may still have come)."""
        self.turn_id: int | None = None
        self.audio_ms = 0.0
        """Reply audio gathered in this turn, taken or not."""
        self._audio = bytearray()
        self._discarding = False

    @property
    def expecting(self) -> bool:
        """A turn has ended whose answer (audio, or an error) is due or waiting."""
        return self.phase is not ReplyPhase.IDLE

    @property
    def finished(self) -> bool:
        return self.phase is ReplyPhase.DONE

    @property
    def has_audio(self) -> bool:
        return bool(self._audio)

    def feed(self, event: Event) -> None:
        match event:
            case SpeechStarted():
                self.speaking = True
            case SpeechStopped():
                self.speaking = False
                if self.phase in (ReplyPhase.IDLE, ReplyPhase.DONE):
                    self.phase = ReplyPhase.AWAITING
            case ReplyStarted(turn_id):
                self.phase = ReplyPhase.REPLYING
                self.turn_id = turn_id
            case ReplyAudio():
                if self.phase is ReplyPhase.REPLYING and not self._discarding:
                    self._audio += event.pcm
                    self.audio_ms += event.duration_ms
            case ErrorEvent(code):
                if self.phase in (ReplyPhase.AWAITING, ReplyPhase.REPLYING) and self.error is None:
                    self.error = code
                if self.phase is ReplyPhase.AWAITING:
                    self._end()
            case TurnDone(turn_id):
                if self.phase in (ReplyPhase.AWAITING, ReplyPhase.REPLYING):
                    self.turn_id = turn_id
                    self._end()
            case Interrupted():
                pass

    def take_audio(self) -> bytes:
        audio, self._audio = bytes(self._audio), bytearray()
        return audio

    def reset(self) -> None:
        """The answer was delivered: wait for the next turn."""
        self.phase = ReplyPhase.IDLE
        self.error = None
        self.turn_id = None
        self.audio_ms = 0.0
        self._audio.clear()
        self._discarding = False

    def abandon(self) -> None:
        """The device went away mid-answer: drop the rest of this turn's reply."""
        if self.phase in (ReplyPhase.AWAITING, ReplyPhase.REPLYING):
            self._audio.clear()
            self._discarding = True
        else:
            self.reset()

    def _end(self) -> None:
        if self._discarding:
            self.reset()
        else:
            self.phase = ReplyPhase.DONE


# -- /ws --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UplinkAudio:
    pcm: bytes = field(repr=False)
    """PCM16 LE mono at 16 kHz."""


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """An empty binary frame: the device's legacy "I'm done talking"."""


def parse_ws_message(data: bytes | str) -> UplinkAudio | EndOfTurn:
    if isinstance(data, str):
        raise ProtocolError("text frames are not part of this protocol: send binary PCM16 audio")
    return UplinkAudio(data) if data else EndOfTurn()


class DownlinkEncoder:
    """Session events → /ws frames: speech start/end as text, reply audio as raw PCM16 frames.

    The session must produce audio at :data:`OUTPUT_RATE_HZ`.
    """

    def __init__(self, frame_ms: int = DOWNLINK_FRAME_MS) -> None:
        self._frame_bytes = OUTPUT_RATE_HZ * frame_ms // 1000 * 2

    def encode(self, event: Event) -> list[Outbound]:
        match event:
            case SpeechStarted():
                return [Outbound(SPEECH_START_TEXT)]
            case SpeechStopped():
                return [Outbound(SPEECH_END_TEXT)]
            case ReplyAudio(turn_id=turn_id, pcm=pcm, sample_rate_hz=rate):
                step = self._frame_bytes
                return [
                    Outbound(
                        pcm[offset : offset + step],
                        audio_ms=len(pcm[offset : offset + step]) / 2 / rate * 1000.0,
                        turn_id=turn_id,
                    )
                    for offset in range(0, len(pcm), step)
                ]
        return []


class SilenceWatchdog:
    """When /ws gives up on a device that says nothing (the original proxy: 20 s).

    The device streams audio all the time (silence while muted), so frames are no sign of life:
    speech and replies are. It never fires while the user speaks or a reply is under way; the
    clock restarts when they end. Times are seconds on any monotonic clock.
    """

    def __init__(self, timeout_s: float, now: float) -> None:
        self.timeout_s = timeout_s
        self._last_activity = now
        self._speaking = False
        self._replying = False
        self._reply_started = False

    def note(self, event: Event, now: float) -> None:
        match event:
            case SpeechStarted():
                self._speaking = True
            case SpeechStopped():
                self._speaking = False
                self._replying = True
                self._reply_started = False
            case ReplyStarted():
                self._replying = True
                self._reply_started = True
            case TurnDone():
                self._replying = False
            case ErrorEvent():
                # Before its reply starts, an error ends the turn (nothing was heard, STT failed).
                if not self._reply_started:
                    self._replying = False
            case ReplyAudio() | Interrupted():
                pass
            case _:
                return
        self._last_activity = now

    def remaining_s(self, now: float) -> float:
        """Seconds until the timeout (the full timeout while busy)."""
        if self._speaking or self._replying:
            return self.timeout_s
        return max(0.0, self._last_activity + self.timeout_s - now)

    def expired(self, now: float) -> bool:
        return not (self._speaking or self._replying) and self.remaining_s(now) <= 0.0


def close_for(ending: Ending, detail: str = "") -> Close:
    """How ``/ws`` ends: standard close codes, with the reason in the close frame."""
    match ending:
        case Ending.CLIENT_ENDED | Ending.ASSISTANT_ENDED:
            return Close(CloseCode.NORMAL, "goodbye")
        case Ending.SERVER_SHUTDOWN:
            return Close(CloseCode.GOING_AWAY, "server shutting down")
        case Ending.SHUTTING_DOWN:
            return Close(CloseCode.TRY_AGAIN_LATER, "server shutting down")
        case Ending.RATE_LIMITED:
            return Close(CloseCode.TRY_AGAIN_LATER, "too many connections; try again later")
        case Ending.UNAUTHORIZED:
            return Close(CloseCode.POLICY_VIOLATION, "invalid token")
        case Ending.UNAVAILABLE:
            return Close(CloseCode.TRY_AGAIN_LATER, "cannot check the token now; try again")
        case Ending.SLOW_CLIENT:
            return Close(CloseCode.POLICY_VIOLATION, detail or "the device stopped reading")
        case Ending.BAD_REQUEST:
            return Close(CloseCode.UNSUPPORTED_DATA, detail)
        case Ending.TOO_LARGE:
            return Close(CloseCode.MESSAGE_TOO_BIG, detail)
    return Close(CloseCode.INTERNAL_ERROR, "internal error")


def beep(
    duration_ms: int = BEEP_MS, frequency_hz: float = BEEP_HZ, rate_hz: int = OUTPUT_RATE_HZ
) -> bytes:
    """The silence-timeout beep: a sine at 30 % of full scale with 10 ms fades against clicks."""
    count = rate_hz * duration_ms // 1000
    t = np.arange(count) / rate_hz
    envelope = np.ones(count)
    fade = min(count // 2, rate_hz // 100)
    if fade:
        envelope[:fade] = np.linspace(0.0, 1.0, fade)
        envelope[-fade:] = np.linspace(1.0, 0.0, fade)
    samples = np.sin(2 * np.pi * frequency_hz * t) * envelope * 0.3 * 32767
    return samples.astype("<i2").tobytes()


SILENCE_CLOSE = Close(
    SILENCE_TIMEOUT_CODE, SILENCE_TIMEOUT_REASON, last=beep(), linger_s=BEEP_MS / 1000 + 0.1
)
"""The silence timeout: the beep, time to play it, then the close."""
