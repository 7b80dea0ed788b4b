"""Whisper through faster-whisper (CTranslate2), int8 on the CPU by default."""

from __future__ import annotations

import asyncio

from faster_whisper import WhisperModel

from voxgate.core.capabilities import Float32Array, ModelResolver
from voxgate.core.config import STTSettings
from voxgate.core.errors import ErrorCode, ProviderError

# Whisper invents text on noise ("Thank you."); a segment it thinks is probably not speech and
# has little confidence in is dropped.
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0


class FasterWhisperSTT:
    sample_rate_hz = 16_000

    def __init__(self, model_dir: str, settings: STTSettings) -> None:
        self._settings = settings
        self._model = WhisperModel(
            model_dir,
            device="cpu",
            compute_type=settings.compute_type,
            cpu_threads=settings.threads,
            local_files_only=True,
        )

    async def transcribe(self, audio: Float32Array) -> str:
        if audio.size < self.sample_rate_hz // 10:
            return ""
        try:
            return await asyncio.to_thread(self._transcribe_blocking, audio)
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"transcription failed: {exc}", code=ErrorCode.STT_FAILED) from exc

    def _transcribe_blocking(self, audio: Float32Array) -> str:
        segments, _info = self._model.transcribe(
            audio,
            language=self._settings.language,
            beam_size=self._settings.beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,  # the turn engine's VAD has already cut the utterance
        )
        kept = [
            segment.text.strip()
            for segment in segments
            if not (segment.no_speech_prob > _NO_SPEECH_PROB and segment.avg_logprob < _LOW_LOGPROB)
        ]
        return " ".join(text for text in kept if text)


def create(settings: STTSettings, models: ModelResolver) -> FasterWhisperSTT:
    return FasterWhisperSTT(str(models.resolve(settings.model)), settings)
