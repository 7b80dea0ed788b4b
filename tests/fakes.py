"""Small, deterministic stand-ins for the engines, and helpers to drive a TurnSession with them.

The fakes satisfy the Protocols in :mod:`voxgate.core.capabilities`:

- :class:`FakeVAD` calls a chunk speech when it is loud (RMS above a threshold), so tests speak
  with tone bursts and are silent with zeros;
- :class:`FakeSTT` returns scripted text, or describes the length of the audio it got;
- :class:`FakeLLM` streams scripted pieces and records what it was asked and whether it was
  stopped early;
- :class:`FakeTTS` returns a constant tone per word.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from voxgate.core.capabilities import ChatMessage, Float32Array, Int16Array, ToolSpec
from voxgate.core.config import CharacterSettings, TurnSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.core.events import Event
from voxgate.pipeline.engines import Engines, LimitedLLM, LimitedSTT, LimitedTTS
from voxgate.pipeline.session import TurnSession

E = TypeVar("E")
T = TypeVar("T")

RATE_HZ = 16_000
TONE_AMPLITUDE = 0.3
"""Tone bursts are this loud (of full scale); the fake VAD hears anything above ~1 % as speech."""

# ---------------------------------------------------------------------------------------------
# Audio


def tone(ms: float, rate_hz: int = RATE_HZ, *, amplitude: float = TONE_AMPLITUDE) -> Int16Array:
    """A 220 Hz sine: "speech" for :class:`FakeVAD`."""
    t = np.arange(round(rate_hz * ms / 1000)) / rate_hz
    return (np.sin(2 * np.pi * 220.0 * t) * amplitude * 32767).astype(np.int16)


def silence(ms: float, rate_hz: int = RATE_HZ) -> Int16Array:
    return np.zeros(round(rate_hz * ms / 1000), dtype=np.int16)


def concat(*parts: Int16Array) -> Int16Array:
    return np.concatenate(parts).astype(np.int16)


def pcm_bytes(samples: Int16Array) -> bytes:
    return samples.astype("<i2").tobytes()


async def feed(
    session: TurnSession, samples: Int16Array, rate_hz: int = RATE_HZ, *, frame_ms: float = 20
) -> None:
    """Push ``samples`` in frames of ``frame_ms``, as fast as the session takes them."""
    frame = max(1, round(rate_hz * frame_ms / 1000))
    for offset in range(0, len(samples), frame):
        await session.push_audio(pcm_bytes(samples[offset : offset + frame]), rate_hz)


# ---------------------------------------------------------------------------------------------
# Engines


class _FakeVADStream:
    def __init__(self, vad: FakeVAD) -> None:
        self._vad = vad

    def speech_probabilities(self, chunks: Float32Array) -> Float32Array:
        rms = np.sqrt(np.mean(np.square(chunks, dtype=np.float64), axis=1))
        return np.where(rms > self._vad.rms_threshold, 0.9, 0.05).astype(np.float32)

    def reset(self) -> None:
        pass


class FakeVAD:
    sample_rate_hz = 16_000
    chunk_samples = 512
    runs_inline = False  # like Silero: exercise the thread hop

    def __init__(self, rms_threshold: float = 0.01) -> None:
        self.rms_threshold = rms_threshold

    def new_stream(self) -> _FakeVADStream:
        return _FakeVADStream(self)


def describe_length(audio: Float32Array, rate_hz: int = RATE_HZ) -> str:
    """FakeSTT's default transcript: how long the utterance was, to the chunk."""
    return f"I spoke for {len(audio) / rate_hz * 1000:.0f} milliseconds"


class FakeSTT:
    """Each call takes the next item of ``script`` (a text, or an exception to raise); once the
    script is used up, it answers ``default(audio)``."""

    sample_rate_hz = 16_000
    streaming = False
    model = "fake-stt"

    def __init__(
        self,
        script: Sequence[str | Exception] = (),
        *,
        default: Callable[[Float32Array], str] = describe_length,
        delay_s: float = 0.0,
    ) -> None:
        self.script = list(script)
        self.default = default
        self.delay_s = delay_s
        self.calls: list[Float32Array] = []
        self.active = 0
        self.max_active = 0

    @property
    def call_ms(self) -> list[float]:
        """Length of the audio of each call."""
        return [len(audio) / self.sample_rate_hz * 1000 for audio in self.calls]

    async def transcribe(self, audio: Float32Array) -> str:
        self.calls.append(audio.copy())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            item = self.script.pop(0) if self.script else self.default(audio)
            if isinstance(item, Exception):
                raise item
            return item
        finally:
            self.active -= 1


Reply = Sequence[str | Exception]
"""What FakeLLM writes for one request: pieces of text; an exception is raised at its place."""


class FakeLLM:
    """Call ``n`` streams ``replies[n]`` (the last one again once they run out)."""

    model = "fake-llm"

    def __init__(self, *replies: Reply, delay_s: float = 0.0) -> None:
        self.replies = list(replies) or [["Okay."]]
        self.delay_s = delay_s
        self.calls: list[list[ChatMessage]] = []
        self.completed = 0
        self.closed_early = 0
        """Streams stopped by the consumer (closed or cancelled) before their end."""

    async def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str]:
        index = len(self.calls)
        self.calls.append(list(messages))
        reply = self.replies[min(index, len(self.replies) - 1)]
        try:
            for piece in reply:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if isinstance(piece, Exception):
                    raise piece
                yield piece
        except (GeneratorExit, asyncio.CancelledError):
            self.closed_early += 1
            raise
        self.completed += 1


def llm_failure(message: str = "model crashed") -> ProviderError:
    return ProviderError(message, code=ErrorCode.LLM_FAILED)


def stt_failure(message: str = "decoder crashed") -> ProviderError:
    return ProviderError(message, code=ErrorCode.STT_FAILED)


class FakeTTS:
    """``ms_per_word`` of a constant tone per word, one chunk per word."""

    LEVEL = 1000
    model = "fake-tts"

    def __init__(
        self, *, sample_rate_hz: int = 22_050, ms_per_word: float = 100, delay_s: float = 0.0
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.ms_per_word = ms_per_word
        self.delay_s = delay_s
        self.sentences: list[str] = []
        self.voices: list[str | None] = []

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        self.sentences.append(text)
        self.voices.append(voice)
        samples = round(self.sample_rate_hz * self.ms_per_word / 1000)
        for _ in text.split():
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield np.full(samples, self.LEVEL, dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# Sessions


@dataclass
class Fakes:
    vad: FakeVAD = field(default_factory=FakeVAD)
    stt: FakeSTT = field(default_factory=FakeSTT)
    llm: FakeLLM = field(default_factory=FakeLLM)
    tts: FakeTTS = field(default_factory=FakeTTS)

    def engines(self, *, stt_limit: int = 1, llm_limit: int = 1, tts_limit: int = 1) -> Engines:
        return Engines(
            vad=self.vad,
            stt=LimitedSTT(self.stt, stt_limit),
            llm=LimitedLLM(self.llm, llm_limit),
            tts=LimitedTTS(self.tts, tts_limit),
        )


SYSTEM_PROMPT = "You are a test assistant."


def make_session(
    engines: Engines,
    *,
    output_rate_hz: int = 16_000,
    character: CharacterSettings | None = None,
    **turn: Any,
) -> TurnSession:
    """A session with ``TurnSettings(**turn)`` and a short system prompt."""
    return TurnSession(
        engines,
        TurnSettings(**turn),
        character or CharacterSettings(system_prompt=SYSTEM_PROMPT),
        output_rate_hz=output_rate_hz,
    )


class EventLog:
    """Reads a session's events in the background, so tests can wait for and inspect them."""

    def __init__(self, session: TurnSession) -> None:
        self.events: list[Event] = []
        self.ended = False
        self._task = asyncio.create_task(self._read(session))

    async def _read(self, session: TurnSession) -> None:
        async for event in session.events():
            self.events.append(event)
        self.ended = True

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    def kinds(self) -> list[str]:
        return [type(event).__name__ for event in self.events]

    async def wait_for_event(self, kind: type[E], count: int = 1, timeout_s: float = 5.0) -> E:
        """The ``count``-th event of ``kind``, once it has come."""
        await wait_until(lambda: len(self.of(kind)) >= count, timeout_s)
        return self.of(kind)[count - 1]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` (any state of the fakes or the log, which have no event to await)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


def bounded(
    seconds: float,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Fail an async test that runs longer than ``seconds`` instead of letting it hang."""

    def decorate(test: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(test)
        async def run(*args: Any, **kwargs: Any) -> T:
            async with asyncio.timeout(seconds):
                return await test(*args, **kwargs)

        return run

    return decorate
