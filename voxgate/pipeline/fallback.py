"""Fallback chains: several engines of one capability, tried in order.

An engine is skipped when it fails before producing anything (its circuit breaker, from
:mod:`voxgate.pipeline.resilience`, makes a dead one fail at once); a stream that fails after
yielding is not replayed elsewhere, since the consumer has already used part of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from voxgate.core.audio import StreamResampler, float_to_int16, int16_to_float, resample
from voxgate.core.capabilities import (
    ChatMessage,
    Float32Array,
    Int16Array,
    LanguageModel,
    ReplyPiece,
    SpeechToText,
    STTStream,
    TextToSpeech,
    ToolSpec,
    can_stream,
    open_stt_stream,
)
from voxgate.core.errors import ProviderError
from voxgate.core.threads import close_stream

T = TypeVar("T")


async def _fall_over(makers: Sequence[Callable[[], AsyncIterator[T]]]) -> AsyncIterator[T]:
    last_error: ProviderError | None = None
    for make in makers:
        source = make()
        yielded = False
        try:
            async for item in source:
                yielded = True
                yield item
            return
        except ProviderError as error:
            if yielded:
                raise
            last_error = error
        finally:
            await close_stream(source)
    assert last_error is not None  # the constructors refuse an empty chain
    raise last_error


def _check_chain(engines: Sequence[Any]) -> None:
    if not engines:
        raise ValueError("a fallback chain needs at least one engine")


class FallbackSTT:
    """Tries each engine in order; audio comes at the first engine's rate and is resampled for
    the others (each ``transcribe`` expects its own rate)."""

    def __init__(self, engines: Sequence[SpeechToText]) -> None:
        _check_chain(engines)
        self.engines = list(engines)
        self.sample_rate_hz = self.engines[0].sample_rate_hz
        self.model = self.engines[0].model
        self.streaming = can_stream(self.engines[0])
        """Streams when the first engine does; a stream that fails is not failed over: its user
        falls back to :meth:`transcribe` of the recorded utterance, which is."""

    async def open_stream(self) -> STTStream:
        return await open_stt_stream(self.engines[0])

    async def transcribe(self, audio: Float32Array) -> str:
        last_error: ProviderError | None = None
        for engine in self.engines:
            try:
                return await engine.transcribe(self._at_rate(audio, engine.sample_rate_hz))
            except ProviderError as error:
                last_error = error
        assert last_error is not None
        raise last_error

    def _at_rate(self, audio: Float32Array, rate_hz: int) -> Float32Array:
        if rate_hz == self.sample_rate_hz:
            return audio
        # The audio came in as PCM16, so the round trip through int16 loses nothing it had.
        return int16_to_float(resample(float_to_int16(audio), self.sample_rate_hz, rate_hz))


class FallbackLLM:
    def __init__(self, engines: Sequence[LanguageModel]) -> None:
        _check_chain(engines)
        self.engines = list(engines)
        self.model = self.engines[0].model

    def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyPiece]:
        return _fall_over([_bind_llm(engine, messages, tools) for engine in self.engines])


def _bind_llm(
    engine: LanguageModel, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
) -> Callable[[], AsyncIterator[ReplyPiece]]:
    return lambda: engine.stream_reply(messages, tools)


class FallbackTTS:
    """Tries each engine in order; the consumer always gets the first engine's rate."""

    def __init__(self, engines: Sequence[TextToSpeech]) -> None:
        _check_chain(engines)
        self.engines = list(engines)
        self.sample_rate_hz = self.engines[0].sample_rate_hz
        self.model = self.engines[0].model

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        return _fall_over([self._bind(engine, text, voice) for engine in self.engines])

    def _bind(
        self, engine: TextToSpeech, text: str, voice: str | None
    ) -> Callable[[], AsyncIterator[Int16Array]]:
        if engine.sample_rate_hz == self.sample_rate_hz:
            return lambda: engine.synthesize(text, voice)
        return lambda: _resampled(
            engine.synthesize(text, voice), engine.sample_rate_hz, self.sample_rate_hz
        )


async def _resampled(
    chunks: AsyncIterator[Int16Array], from_hz: int, to_hz: int
) -> AsyncIterator[Int16Array]:
    # A stream resampler, not ``resample`` per chunk: resampling each chunk alone clicks at the
    # chunk edges.
    resampler = StreamResampler(from_hz, to_hz)
    try:
        async for chunk in chunks:
            out = resampler.process(chunk)
            if out.size:
                yield out
        tail = resampler.process(np.zeros(0, dtype=np.int16), last=True)
        if tail.size:
            yield tail
    finally:
        await close_stream(chunks)
