"""Instant stand-in engines, for load tests of everything around the models.

``VOXGATE_VAD__PROVIDER=standin`` (and the same for ``STT``, ``LLM``, ``TTS``) runs voxgate with
no model at all: the VAD calls loud audio speech, the STT and LLM answer a fixed text at once, the
TTS speaks a tone. Never a default.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal

import numpy as np

from voxgate.core.capabilities import (
    ChatMessage,
    Float32Array,
    Int16Array,
    ModelResolver,
    ReplyPiece,
    ToolSpec,
)
from voxgate.core.engine_settings import LLMSettings, STTSettings, TTSSettings, VADSettings

_SPEECH_RMS = 0.02
_TONE_MS_PER_WORD = 200


class StandinVADSettings(VADSettings):
    provider: Literal["standin"] = "standin"


class StandinSTTSettings(STTSettings):
    provider: Literal["standin"] = "standin"
    model: str = "standin"
    """Only a name, for usage records and prices."""


class StandinLLMSettings(LLMSettings):
    provider: Literal["standin"] = "standin"
    model: str = "standin"
    """Only a name, for usage records and prices."""


class StandinTTSSettings(TTSSettings):
    provider: Literal["standin"] = "standin"
    voice: str = "standin"
    """Only a name, for usage records and prices."""

    @property
    def priced_model(self) -> str:
        return self.voice


class EnergyVAD:
    sample_rate_hz = 16_000
    chunk_samples = 512
    runs_inline = True

    def new_stream(self) -> EnergyStream:
        return EnergyStream()


class EnergyStream:
    def speech_probabilities(self, chunks: Float32Array) -> Float32Array:
        rms = np.sqrt(np.mean(np.square(chunks), axis=1))
        return np.where(rms > _SPEECH_RMS, 0.95, 0.02).astype(np.float32)

    def reset(self) -> None:
        pass


class FixedSTT:
    sample_rate_hz = 16_000
    streaming = False

    def __init__(self, model: str) -> None:
        self.model = model

    async def transcribe(self, audio: Float32Array) -> str:
        return "hello there" if audio.size else ""


class FixedLLM:
    def __init__(self, model: str) -> None:
        self.model = model

    def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyPiece]:
        return self._stream()  # a fixed reply: no tools

    async def _stream(self) -> AsyncIterator[ReplyPiece]:
        for piece in ("Hello", " to", " you", " too", "."):
            yield piece


class ToneTTS:
    sample_rate_hz = 16_000

    def __init__(self, model: str) -> None:
        self.model = model

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        return self._stream(text)

    async def _stream(self, text: str) -> AsyncIterator[Int16Array]:
        samples = self.sample_rate_hz * _TONE_MS_PER_WORD * max(1, len(text.split())) // 1000
        t = np.arange(samples) / self.sample_rate_hz
        yield (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


def create_vad(settings: StandinVADSettings, models: ModelResolver) -> EnergyVAD:
    return EnergyVAD()


def create_stt(settings: StandinSTTSettings, models: ModelResolver) -> FixedSTT:
    return FixedSTT(settings.model)


def create_llm(settings: StandinLLMSettings, models: ModelResolver) -> FixedLLM:
    return FixedLLM(settings.model)


def create_tts(settings: StandinTTSSettings, models: ModelResolver) -> ToneTTS:
    return ToneTTS(settings.priced_model)
