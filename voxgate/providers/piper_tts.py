"""Piper text to speech (GPL-3.0 engine, loaded as a library) with a voice from the model store."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from piper import PiperVoice, SynthesisConfig

from voxgate.core.capabilities import Int16Array, ModelResolver
from voxgate.core.config import TTSSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.core.threads import Emit, stream_from_thread


class PiperTTS:
    def __init__(self, voice_path: Path, settings: TTSSettings) -> None:
        config_path = voice_path.with_name(voice_path.name + ".json")
        if not config_path.is_file():
            raise ProviderError(
                f"Piper voice {voice_path} has no {config_path.name} beside it",
                code=ErrorCode.TTS_FAILED,
            )
        self._voice = PiperVoice.load(voice_path, config_path=config_path)
        self._config = SynthesisConfig(length_scale=settings.length_scale)
        self.sample_rate_hz: int = self._voice.config.sample_rate

    def synthesize(self, text: str) -> AsyncIterator[Int16Array]:
        return self._stream(text)

    async def _stream(self, text: str) -> AsyncIterator[Int16Array]:
        if not text.strip():
            return

        def work(emit: Emit[Int16Array], stop: threading.Event) -> None:
            # Piper yields one chunk per sentence it finds in the text.
            for chunk in self._voice.synthesize(text, syn_config=self._config):
                if stop.is_set():
                    return
                emit(np.asarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1))

        try:
            async for audio in stream_from_thread(work):
                yield audio
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(
                f"speech synthesis failed: {exc}", code=ErrorCode.TTS_FAILED
            ) from exc


def create(settings: TTSSettings, models: ModelResolver) -> PiperTTS:
    return PiperTTS(models.resolve(settings.voice), settings)
