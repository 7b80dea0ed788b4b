"""STT provider for any server speaking OpenAI's ``/audio/transcriptions`` API (OpenAI, Groq,
speaches, LocalAI, ...): one multipart upload of a WAV per utterance.

No retries here: a failure becomes a :class:`ProviderError` whose ``retryable`` tells the layer
above (which owns retries and fallback) whether trying again may help.
"""

from __future__ import annotations

import io
import json
import wave
from typing import Any, Literal

import httpx

from voxgate.core.audio import float_to_int16
from voxgate.core.capabilities import Float32Array
from voxgate.core.engine_settings import HttpApiSettings, STTSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.providers.http_api import HttpApi


class OpenAISTTSettings(STTSettings, HttpApiSettings):
    """``[stt] provider = "openai"``: any server speaking OpenAI's transcriptions API. It has no
    default server or model: ``base_url`` and ``model`` name them (``whisper-1`` at OpenAI,
    ``whisper-large-v3-turbo`` at Groq)."""

    provider: Literal["openai"] = "openai"
    model: str
    language: str | None = "en"


class OpenAICompatibleSTT:
    """Transcribes with ``POST {base_url}/audio/transcriptions``; one HTTP client for all sessions."""

    sample_rate_hz = 16_000
    streaming = False

    def __init__(self, settings: OpenAISTTSettings) -> None:
        self._settings = settings
        self.model = settings.model
        self._api = HttpApi("stt", settings, accept="application/json", code=ErrorCode.STT_FAILED)
        self._url = self._api.url("/audio/transcriptions")

    async def aclose(self) -> None:
        await self._api.aclose()

    async def transcribe(self, audio: Float32Array) -> str:
        if audio.size == 0:
            return ""
        form = {"model": self._settings.model, "response_format": "json"}
        if self._settings.language:
            form["language"] = self._settings.language
        files = {"file": ("utterance.wav", _wav_bytes(audio, self.sample_rate_hz), "audio/wav")}
        try:
            response = await self._api.client.post(self._url, data=form, files=files)
        except httpx.ConnectError as exc:
            raise self._api.failure(f"cannot connect to {self._api.server}", exc) from exc
        except httpx.TimeoutException as exc:
            raise self._api.failure(f"{self._api.server} timed out", exc) from exc
        except httpx.HTTPError as exc:
            raise self._api.failure(f"connection to {self._api.server} failed", exc) from exc
        if response.status_code >= 400:
            raise self._api.http_error(response)
        return self._text(response.text)

    def _text(self, body: str) -> str:
        try:
            payload: Any = json.loads(body)
        except json.JSONDecodeError:
            payload = None
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            # A server speaking another format will not start speaking this one on a retry.
            raise ProviderError(
                f"{self._api.server} sent a malformed answer: {self._api.snippet(body)}",
                code=ErrorCode.STT_FAILED,
            )
        return text.strip()


def _wav_bytes(audio: Float32Array, sample_rate_hz: int) -> bytes:
    """A mono PCM16 WAV file of ``audio``, built in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(float_to_int16(audio).astype("<i2").tobytes())
    return buffer.getvalue()


def create(settings: OpenAISTTSettings, models: object) -> OpenAICompatibleSTT:
    """Registry factory; ``models`` (the model store) is unused: the server holds the model."""
    return OpenAICompatibleSTT(settings)
