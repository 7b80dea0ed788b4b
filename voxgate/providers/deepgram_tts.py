"""TTS provider for Deepgram Aura: ``POST {base_url}/v1/speak`` with ``{"text": ...}``, asking for
headerless 24 kHz PCM16 (``encoding=linear16&sample_rate=24000&container=none``) and passing it on
as it streams in. The model names the voice (``aura-2-thalia-en``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from voxgate.core.capabilities import Int16Array
from voxgate.core.engine_settings import HttpApiSettings, TTSSettings
from voxgate.core.errors import ErrorCode
from voxgate.providers.http_api import HttpApi
from voxgate.providers.pcm_http import no_audio, stream_pcm

DEFAULT_BASE_URL = "https://api.deepgram.com"


class DeepgramTTSSettings(TTSSettings, HttpApiSettings):
    """``[tts] provider = "deepgram"``: Aura, where the model is the voice (no ``voice``)."""

    provider: Literal["deepgram"] = "deepgram"
    base_url: str | None = DEFAULT_BASE_URL
    model: str = "aura-2-thalia-en"

    @property
    def priced_model(self) -> str:
        return self.model


class DeepgramTTS:
    """Streams speech from ``POST {base_url}/v1/speak``; one HTTP client for all sessions."""

    sample_rate_hz = 24_000

    def __init__(self, settings: DeepgramTTSSettings) -> None:
        self._api = HttpApi(
            "tts",
            settings,
            code=ErrorCode.TTS_FAILED,
            provider="deepgram",
            example_url=DEFAULT_BASE_URL,
            auth_header=("Authorization", "Token "),
            key_required=True,
        )
        self._url = self._api.url("/v1/speak")
        self.model = settings.model
        self._params = {
            "model": self.model,
            "encoding": "linear16",
            "sample_rate": str(self.sample_rate_hz),
            "container": "none",
        }

    async def aclose(self) -> None:
        await self._api.aclose()

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        """``voice``: an Aura model (``aura-2-orion-en``): with Deepgram the model is the voice."""
        if not text.strip():
            return no_audio()
        params = {**self._params, "model": voice} if voice else self._params
        return stream_pcm(
            self._api,
            self._url,
            sample_rate_hz=self.sample_rate_hz,
            json={"text": text},
            params=params,
        )


def create(settings: DeepgramTTSSettings, models: object) -> DeepgramTTS:
    """Registry factory; ``models`` (the model store) is unused: Deepgram holds the voice."""
    return DeepgramTTS(settings)
