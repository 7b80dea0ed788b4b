"""Engine wrappers that count each call's usage and cost on the turn's meter.

One sits around each engine of a fallback chain, so the engine that actually answered is the one
billed; calls made outside a turn (warm-up, benchmarks) have no meter and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

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
from voxgate.core.config import Price
from voxgate.core.threads import close_stream
from voxgate.core.usage import EngineUsage, current_meter, estimate_tokens


def cost_usd(usage: EngineUsage, price: Price) -> float:
    if usage.capability == "llm":
        return (
            usage.tokens_in * price.per_million_tokens_in
            + usage.tokens_out * price.per_million_tokens_out
        ) / 1e6
    return usage.audio_s / 60.0 * price.per_audio_minute + (
        usage.characters * price.per_million_characters / 1e6
    )


class _Metered:
    """Bills under ``provider`` and the model the engine declares it runs."""

    def __init__(self, provider: str, model: str, price: Price) -> None:
        self.provider = provider
        self.model = model
        self.price = price

    def _record(self, usage: EngineUsage) -> None:
        meter = current_meter()
        if meter is not None:
            meter.add(replace(usage, cost_usd=round(cost_usd(usage, self.price), 8)))


class MeteredSTT(_Metered):
    def __init__(self, inner: SpeechToText, provider: str, price: Price) -> None:
        super().__init__(provider, inner.model, price)
        self.inner = inner
        self.sample_rate_hz = inner.sample_rate_hz
        self.streaming = can_stream(inner)

    async def transcribe(self, audio: Float32Array) -> str:
        started = time.perf_counter()
        text = await self.inner.transcribe(audio)
        self._record(
            EngineUsage(
                "stt",
                self.provider,
                self.model,
                audio_s=len(audio) / self.sample_rate_hz,
                compute_s=time.perf_counter() - started,
            )
        )
        return text

    async def open_stream(self) -> STTStream:
        return _MeteredStream(await open_stt_stream(self.inner), self)


class _MeteredStream:
    """Bills at each ``finalize`` all the audio streamed so far. A turn's reply finalizes once
    (a speculative reply that was dropped takes its meter with it), so each turn counts the
    stream's audio once, on the meter of the reply that asked."""

    def __init__(self, inner: STTStream, owner: MeteredSTT) -> None:
        self._inner = inner
        self._owner = owner
        self._samples = 0

    async def push(self, audio: Float32Array) -> None:
        await self._inner.push(audio)
        self._samples += len(audio)

    def interim(self) -> AsyncIterator[str]:
        return self._inner.interim()

    async def finalize(self) -> str:
        started = time.perf_counter()
        text = await self._inner.finalize()
        owner = self._owner
        owner._record(
            EngineUsage(
                "stt",
                owner.provider,
                owner.model,
                audio_s=self._samples / owner.sample_rate_hz,
                compute_s=time.perf_counter() - started,
            )
        )
        return text

    async def aclose(self) -> None:
        await self._inner.aclose()


class MeteredLLM(_Metered):
    def __init__(self, inner: LanguageModel, provider: str, price: Price) -> None:
        super().__init__(provider, inner.model, price)
        self.inner = inner

    async def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyPiece]:
        meter = current_meter()
        if meter is not None:
            meter.reported_tokens = None
        started = time.perf_counter()
        written: list[str] = []
        pieces = self.inner.stream_reply(messages, tools)
        try:
            async for piece in pieces:
                if isinstance(piece, str):
                    written.append(piece)
                yield piece
        finally:
            await close_stream(pieces)
            # Also when the reply was cut short: the tokens generated so far are billed.
            self._bill(messages, "".join(written), started)

    def _bill(self, messages: Sequence[ChatMessage], written: str, started: float) -> None:
        meter = current_meter()
        reported = meter.reported_tokens if meter is not None else None
        if reported is None and not written:
            return  # it failed before writing anything: nothing to bill
        if reported is not None:
            tokens_in, tokens_out = reported
        else:
            tokens_in = sum(estimate_tokens(m.content) + 4 for m in messages)
            tokens_out = estimate_tokens(written)
        self._record(
            EngineUsage(
                "llm",
                self.provider,
                self.model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                tokens_estimated=reported is None,
                compute_s=time.perf_counter() - started,
            )
        )


class MeteredTTS(_Metered):
    def __init__(self, inner: TextToSpeech, provider: str, price: Price) -> None:
        super().__init__(provider, inner.model, price)
        self.inner = inner
        self.sample_rate_hz = inner.sample_rate_hz

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        started = time.perf_counter()
        samples = 0
        chunks = self.inner.synthesize(text, voice)
        try:
            async for chunk in chunks:
                samples += len(chunk)
                yield chunk
        finally:
            await close_stream(chunks)
            if samples:
                self._record(
                    EngineUsage(
                        "tts",
                        self.provider,
                        self.model,
                        audio_s=samples / self.sample_rate_hz,
                        characters=len(text),
                        compute_s=time.perf_counter() - started,
                    )
                )
