"""Piper text to speech (GPL-3.0 engine, loaded as a library) with a voice from the model store."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from voxgate.core.audio import resample
from voxgate.core.capabilities import Int16Array, ModelResolver
from voxgate.core.engine_settings import TTSSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.core.threads import Emit, stream_from_thread

if TYPE_CHECKING:
    from piper import PiperVoice

logger = logging.getLogger(__name__)


class PiperSettings(TTSSettings):
    """``[tts] provider = "piper"``: a Piper voice on this machine's CPU."""

    provider: Literal["piper"] = "piper"
    voice: str = "en_US-joe-medium"
    """A name from ``voxgate models`` or a path to a Piper ``.onnx`` voice (its ``.onnx.json``
    beside)."""
    length_scale: float = Field(1.0, gt=0)
    """Above 1 speaks slower, below 1 faster."""
    threads: int | None = Field(None, ge=1)
    """onnxruntime's threads per synthesis (None: one per core)."""

    @property
    def priced_model(self) -> str:
        return self.voice  # a Piper voice is a model of its own


def _load(voice_path: Path, threads: int | None = None) -> PiperVoice:
    import onnxruntime
    from piper import PiperConfig, PiperVoice  # here: loading the settings must not load Piper

    config_path = voice_path.with_name(voice_path.name + ".json")
    if not config_path.is_file():
        raise ProviderError(
            f"Piper voice {voice_path} has no {config_path.name} beside it",
            code=ErrorCode.TTS_FAILED,
        )
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    # Idle onnxruntime threads spin-wait by default: on a small machine they would take the cores
    # from the LLM, which is still writing the reply while its first piece is synthesised.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(
        str(voice_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(config=config, session=session)


class PiperTTS:
    """The configured voice, plus any character's voice (a model-store name or a path), loaded
    on first use and kept; its audio is resampled to the configured voice's rate."""

    def __init__(
        self, voice_path: Path, settings: PiperSettings, models: ModelResolver | None = None
    ) -> None:
        from piper import SynthesisConfig

        self.model = settings.priced_model
        self._default_name = settings.voice
        self._threads = settings.threads
        self._voice = _load(voice_path, settings.threads)
        self._voices: dict[str, PiperVoice | None] = {settings.voice: self._voice}
        self._models = models
        self._loading = threading.Lock()
        self._config = SynthesisConfig(length_scale=settings.length_scale)
        self.sample_rate_hz: int = self._voice.config.sample_rate

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        return self._stream(text, voice)

    def _voice_named(self, name: str | None) -> PiperVoice:
        """Runs on the synthesis thread: loading a voice takes a few hundred ms."""
        if name is None:
            return self._voice
        with self._loading:
            if name not in self._voices:
                try:
                    if self._models is None:
                        raise ValueError("no model store to find it in")
                    self._voices[name] = _load(self._models.resolve(name), self._threads)
                except Exception as exc:  # a voice of another engine, or a missing one
                    logger.warning(
                        "Piper voice %r unusable (%s); using %s", name, exc, self._default_name
                    )
                    self._voices[name] = None
            return self._voices[name] or self._voice

    async def _stream(self, text: str, voice_name: str | None) -> AsyncIterator[Int16Array]:
        if not text.strip():
            return

        def work(emit: Emit[Int16Array], stop: threading.Event) -> None:
            voice = self._voice_named(voice_name)
            rate = voice.config.sample_rate
            # Piper yields one chunk per sentence it finds in the text.
            for chunk in voice.synthesize(text, syn_config=self._config):
                if stop.is_set():
                    return
                audio = np.asarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1)
                if rate != self.sample_rate_hz:
                    audio = resample(audio, rate, self.sample_rate_hz).astype(np.int16)
                emit(audio)

        try:
            async for audio in stream_from_thread(work):
                yield audio
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(
                f"speech synthesis failed: {exc}", code=ErrorCode.TTS_FAILED
            ) from exc


def create(settings: PiperSettings, models: ModelResolver) -> PiperTTS:
    return PiperTTS(models.resolve(settings.voice), settings, models)
