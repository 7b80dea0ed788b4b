"""The loaded engines, shared by every session, each behind a fair concurrency limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxgate.core import registry
from voxgate.core.capabilities import (
    BatchingVAD,
    ChatMessage,
    EndOfTurnModel,
    Float32Array,
    Int16Array,
    LanguageModel,
    ModelResolver,
    ReplyPiece,
    SpeechToText,
    STTStream,
    TextToSpeech,
    ToolSpec,
    VADStream,
    VoiceActivityDetector,
    WakeWord,
    can_batch,
    can_stream,
    open_stt_stream,
)
from voxgate.core.config import EngineSettings, Price, ServiceSettings, Settings
from voxgate.core.errors import ConfigError
from voxgate.core.threads import close_stream
from voxgate.pipeline.fallback import FallbackLLM, FallbackSTT, FallbackTTS
from voxgate.pipeline.metering import MeteredLLM, MeteredSTT, MeteredTTS
from voxgate.pipeline.resilience import (
    CircuitBreaker,
    ResilientLLM,
    ResilientSTT,
    ResilientTTS,
    RetryPolicy,
)
from voxgate.pipeline.vad_batch import VADBatcher


class LimitedSTT:
    """At most ``limit`` transcriptions at once; asyncio.Semaphore queues waiters first come,
    first served, so sessions take turns instead of thrashing the CPU."""

    def __init__(self, inner: SpeechToText, limit: int) -> None:
        self.inner = inner
        self.sample_rate_hz = inner.sample_rate_hz
        self.streaming = can_stream(inner)
        self.model = inner.model
        self._slots = asyncio.Semaphore(limit)

    async def transcribe(self, audio: Float32Array) -> str:
        async with self._slots:
            return await self.inner.transcribe(audio)

    async def open_stream(self) -> STTStream:
        # A stream takes no slot: it is a connection held while the user speaks, not work on
        # this machine, and holding a slot that long would make the other sessions wait.
        return await open_stt_stream(self.inner)


class LimitedLLM:
    def __init__(self, inner: LanguageModel, limit: int) -> None:
        self.inner = inner
        self.model = inner.model
        self._slots = asyncio.Semaphore(limit)

    async def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyPiece]:
        async with self._slots:
            pieces = self.inner.stream_reply(messages, tools)
            try:
                async for piece in pieces:
                    yield piece
            finally:
                await close_stream(pieces)


class LimitedTTS:
    def __init__(self, inner: TextToSpeech, limit: int) -> None:
        self.inner = inner
        self.sample_rate_hz = inner.sample_rate_hz
        self.model = inner.model
        self._slots = asyncio.Semaphore(limit)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        async with self._slots:
            chunks = self.inner.synthesize(text, voice)
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                await close_stream(chunks)


@dataclass
class Engines:
    vad: VoiceActivityDetector
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    # VAD is cheap (~0.2 ms a chunk) but frequent: one thread of its own keeps it off the event
    # loop without queueing behind a transcription in the default pool.
    _vad_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="voxgate-vad")
    )
    end_of_turn: EndOfTurnModel | None = None
    """None: turns end after a fixed silence."""
    # One thread for the end-of-turn model too: sessions take turns (first come, first served)
    # instead of running several ~50 ms inferences at once against the LLM and TTS.
    _turn_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="voxgate-turn")
    )
    wake_word: WakeWord | None = None
    """Listens for the wake word (sessions in ``wake_word`` listening mode); None: no session
    can (set-ups built in code without one)."""

    _vad_batcher: VADBatcher | None = field(default=None, init=False, repr=False)

    async def speech_probabilities(self, stream: VADStream, chunks: Float32Array) -> Float32Array:
        vad = self.vad
        if vad.runs_inline:
            return stream.speech_probabilities(chunks)
        if can_batch(vad):
            return await self.vad_batcher(vad).speech_probabilities(stream, chunks)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._vad_thread, stream.speech_probabilities, chunks)

    def vad_batcher(self, vad: BatchingVAD) -> VADBatcher:
        """The one batcher of this VAD (made on first use: tests swap ``vad`` after building)."""
        if self._vad_batcher is None or self._vad_batcher.vad is not vad:
            self._vad_batcher = VADBatcher(vad, self._vad_thread)
        return self._vad_batcher

    async def end_of_turn_probability(self, audio: Float32Array) -> float:
        if self.end_of_turn is None:
            raise RuntimeError("no end-of-turn model loaded")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._turn_thread, self.end_of_turn.complete_probability, audio
        )

    def close(self) -> None:
        self._vad_thread.shutdown(wait=False)
        self._turn_thread.shutdown(wait=False)

    async def aclose(self) -> None:
        """:meth:`close`, and close the cloud engines' HTTP clients too."""
        self.close()
        for engine in {
            id(e): e for root in (self.stt, self.llm, self.tts) for e in _parts(root)
        }.values():
            closer = getattr(engine, "aclose", None)
            if closer is not None:
                await closer()


def _parts(engine: object) -> Iterator[object]:
    """An engine and everything it wraps (limits, retries, metering, fallback chains)."""
    yield engine
    inner = getattr(engine, "inner", None)
    if inner is not None:
        yield from _parts(inner)
    for member in getattr(engine, "engines", ()):
        yield from _parts(member)


def load_engines(settings: Settings, models: ModelResolver) -> Engines:
    """Load every configured engine once (in parallel: the loads are mostly I/O and native code),
    each fallback too, and wrap them: retries, breaker and timeouts innermost, then usage metering,
    then the concurrency limit (so timeouts and compute time measure the engine, not the queue),
    then the fallback chain."""
    chains: dict[str, list[ServiceSettings]] = {
        "stt": [settings.stt, *settings.stt.fallbacks],
        "llm": [settings.llm, *settings.llm.fallbacks],
        "tts": [settings.tts, *settings.tts.fallbacks],
    }
    # The end-of-turn model judges what the VAD heard; the stand-in VAD (load tests, model-free
    # set-ups) hears nothing real, so it gets none, nor a wake-word engine unless one is named.
    model_free = settings.vad.provider == "standin"
    semantic = settings.turn.semantic_end_of_turn and not model_free
    wake = not model_free or "wake_word" in settings.model_fields_set
    jobs: list[tuple[str, EngineSettings]] = [("vad", settings.vad)]
    jobs += [("wake", settings.wake_word)] if wake else []
    first_service = len(jobs)
    jobs += [(cap, s) for cap, chain in chains.items() for s in chain]
    for capability, section in jobs:
        _check_engine(capability, section)
    with ThreadPoolExecutor(len(jobs) + 1, thread_name_prefix="voxgate-load") as pool:
        futures = [
            pool.submit(registry.factory(capability, section.provider), section, models)
            for capability, section in jobs
        ]
        end_of_turn = (
            pool.submit(registry.factory("turn", "smart-turn"), settings.turn, models)
            if semantic
            else None
        )
        loaded = [future.result() for future in futures]
        end_of_turn_model = end_of_turn.result() if end_of_turn is not None else None
    engines = iter(loaded[first_service:])

    def guarded(capability: str, section: ServiceSettings) -> Any:
        engine = next(engines)
        policy = RetryPolicy(**section.retry.model_dump())
        breaker = CircuitBreaker(**section.breaker.model_dump())
        name = f"{capability} {section.provider}"
        # Priced by the model the engine declares it runs (its settings' own default if unset).
        price = settings.prices.get(f"{section.provider}/{engine.model}", Price())
        first_byte, total = section.timeout_s_first_byte, section.timeout_s_total
        if capability == "stt":
            resilient_stt = ResilientSTT(engine, policy, breaker, total, name=name)
            metered_stt = MeteredSTT(resilient_stt, section.provider, price)
            return LimitedSTT(metered_stt, section.max_concurrent)
        if capability == "llm":
            resilient_llm = ResilientLLM(engine, policy, breaker, first_byte, total, name=name)
            metered_llm = MeteredLLM(resilient_llm, section.provider, price)
            return LimitedLLM(metered_llm, section.max_concurrent)
        resilient_tts = ResilientTTS(engine, policy, breaker, first_byte, total, name=name)
        metered_tts = MeteredTTS(resilient_tts, section.provider, price)
        return LimitedTTS(metered_tts, section.max_concurrent)

    wrapped = {cap: [guarded(cap, section) for section in chain] for cap, chain in chains.items()}
    return Engines(
        vad=loaded[0],
        wake_word=loaded[1] if wake else None,
        end_of_turn=end_of_turn_model,
        stt=wrapped["stt"][0] if len(wrapped["stt"]) == 1 else FallbackSTT(wrapped["stt"]),
        llm=wrapped["llm"][0] if len(wrapped["llm"]) == 1 else FallbackLLM(wrapped["llm"]),
        tts=wrapped["tts"][0] if len(wrapped["tts"]) == 1 else FallbackTTS(wrapped["tts"]),
    )


def _check_engine(capability: str, section: EngineSettings) -> None:
    """Settings changed in code with ``model_copy`` are not validated again: another engine's
    settings under a new ``provider`` would reach a factory that cannot read them."""
    expected = registry.settings_model(capability, section.provider)
    if not isinstance(section, expected):
        raise ConfigError(
            f"{capability} provider {section.provider!r} takes {expected.__name__}, not "
            f"{type(section).__name__}: build the section with engine_settings("
            f"{capability!r}, {{...}}) instead of copying another engine's settings"
        )


async def warm_up(engines: Engines, system_prompt: str) -> None:
    """Run each engine once, together, so the first user does not pay for lazy initialisation,
    and the LLM's prompt cache already holds the system prompt."""
    stream = engines.vad.new_stream()
    silence = np.zeros((8, engines.vad.chunk_samples), dtype=np.float32)
    noise = np.random.default_rng(0).normal(0, 0.01, engines.stt.sample_rate_hz).astype(np.float32)

    async def first_token() -> None:
        messages = [ChatMessage("system", system_prompt), ChatMessage("user", "Hi")]
        async for _ in engines.llm.stream_reply(messages):
            break

    async def first_audio() -> None:
        async for _ in engines.tts.synthesize("Ready."):
            pass

    async def end_of_turn() -> None:
        if engines.end_of_turn is not None:
            await engines.end_of_turn_probability(noise)

    await asyncio.gather(
        engines.speech_probabilities(stream, silence),
        end_of_turn(),
        engines.stt.transcribe(noise),
        first_token(),
        first_audio(),
    )
