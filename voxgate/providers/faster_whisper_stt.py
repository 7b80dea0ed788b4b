"""Whisper through faster-whisper (CTranslate2), int8 on the CPU by default.

An utterance is short, but Whisper's encoder is normally run on a 30-second window of mostly
padding: on two cores that is ~0.3 s of a ~0.45 s transcription. We encode a window that fits the
utterance plus a second of padding instead, at least 10 s: on the LibriVox clips that gives the
same words at two to three times the speed (see bench/turn.py). Windows shorter than that make
Whisper loop on very short answers ("Okay. Okay. Okay."), and so does a 10 s window now and then:
a transcript that repeats itself is redone on the full 30 s window. Audio longer than 30 s takes
faster-whisper's own path.
"""

from __future__ import annotations

import asyncio
import math
from typing import Literal

import numpy as np
from pydantic import Field

from voxgate.core.capabilities import Float32Array, ModelResolver
from voxgate.core.engine_settings import STTSettings
from voxgate.core.errors import ErrorCode, ProviderError


class FasterWhisperSettings(STTSettings):
    """``[stt] provider = "faster-whisper"``: Whisper on this machine's CPU."""

    provider: Literal["faster-whisper"] = "faster-whisper"
    model: str = "whisper-tiny-en"
    """A name from ``voxgate models`` or a path to a CTranslate2 Whisper directory."""
    language: str | None = "en"
    compute_type: str = "int8"
    beam_size: int = Field(1, ge=1)
    threads: int = Field(2, ge=1)


# Whisper invents text on noise ("Thank you."); a result it thinks is probably not speech and
# has little confidence in is dropped.
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0
_PAD_FRAMES = 100  # one second of mel frames after the speech
_MIN_FRAMES = 1000  # a 10 s window
_TOKENS_PER_SECOND = 8  # generous: fast speech is ~4 tokens a second


class FasterWhisperSTT:
    sample_rate_hz = 16_000
    streaming = False

    def __init__(self, model_dir: str, settings: FasterWhisperSettings) -> None:
        # Imported here: loading the settings must not load CTranslate2.
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self._settings = settings
        self.model = settings.model
        self._model = WhisperModel(
            model_dir,
            device="cpu",
            compute_type=settings.compute_type,
            cpu_threads=settings.threads,
            local_files_only=True,
        )
        multilingual = self._model.model.is_multilingual
        language = (settings.language or "en") if multilingual else None
        tokenizer = Tokenizer(self._model.hf_tokenizer, multilingual, "transcribe", language)
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._max_frames: int = self._model.feature_extractor.nb_max_frames

    async def transcribe(self, audio: Float32Array) -> str:
        if audio.size < self.sample_rate_hz // 10:
            return ""
        try:
            return await asyncio.to_thread(self._transcribe_blocking, audio)
        except Exception as exc:
            raise ProviderError(f"transcription failed: {exc}", code=ErrorCode.STT_FAILED) from exc

    def _transcribe_blocking(self, audio: Float32Array) -> str:
        features = self._model.feature_extractor(audio)
        frames = max(_MIN_FRAMES, math.ceil((features.shape[1] + _PAD_FRAMES) / 100) * 100)
        if frames > self._max_frames:
            return self._transcribe_long(audio)
        text = self._decode(audio, features, frames)
        # A short window makes Whisper loop ("Okay. Okay. Okay."); on a short answer even one
        # repeat is suspect ("Yes, yes."). The full window decides (and keeps a real repeat).
        short = audio.size < _SHORT_UTTERANCE_S * self.sample_rate_hz
        looped = repeats_itself(text) or (short and repeats_itself(text, times=2))
        if looped and frames < self._max_frames:
            text = self._decode(audio, features, self._max_frames)
        return text

    def _decode(self, audio: Float32Array, features: Float32Array, frames: int) -> str:
        import ctranslate2

        window = np.zeros((features.shape[0], frames), dtype=np.float32)
        window[:, : features.shape[1]] = features
        seconds = audio.size / self.sample_rate_hz
        result = self._model.model.generate(
            ctranslate2.StorageView.from_array(window[None]),
            [self._prompt],
            beam_size=self._settings.beam_size,
            max_length=len(self._prompt) + int(seconds * _TOKENS_PER_SECOND) + 10,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = [
            t for t in result.sequences_ids[0] if t < self._model.hf_tokenizer.get_vocab_size()
        ]
        # As faster-whisper does: the score is the length-normalised log probability.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -10.0
        if result.no_speech_prob > _NO_SPEECH_PROB and avg_logprob < _LOW_LOGPROB:
            return ""
        text: str = self._model.hf_tokenizer.decode(tokens)
        return text.strip()

    def _transcribe_long(self, audio: Float32Array) -> str:
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


_SHORT_UTTERANCE_S = 2.0


def repeats_itself(text: str, times: int = 3) -> bool:
    """True when some run of one to four words comes ``times`` times in a row (Whisper looping)."""
    words = [word.strip(".,!?;:").lower() for word in text.split()]
    for size in range(1, 5):
        for start in range(len(words) - size * times + 1):
            gram = words[start : start + size]
            if all(words[start + k * size : start + (k + 1) * size] == gram for k in range(times)):
                return True
    return False


def create(settings: FasterWhisperSettings, models: ModelResolver) -> FasterWhisperSTT:
    return FasterWhisperSTT(str(models.resolve(settings.model)), settings)
