"""TTS provider for Deepgram Aura: ``POST {base_url}/v1/speak`` with ``{"text": ...}``, asking for
headerless 24 kHz PCM16 (``encoding=linear16&sample_rate=24000&container=none``) and passing it on
as it streams in. The model names the voice (``aura-2-thalia-en``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from voxgate.core.capabilities import Int16Array
from voxgate.core.config import TTSSettings
from voxgate.core.errors import ErrorCode
from voxgate.providers.http_api import HttpApi, own_default
from voxgate.providers.pcm_http import no_audio, stream_pcm

DEFAULT_BASE_URL = "https://api.deepgram.com"
DEFAULT_MODEL = "aura-2-thalia-en"


class DeepgramTTS:
    """Streams speech from ``POST {base_url}/v1/speak``; one HTTP client for all sessions."""

    sample_rate_hz = 24_000

    def __init__(self, settings: TTSSettings) -> None:
        self._api = HttpApi(
            "tts",
            settings,
            code=ErrorCode.TTS_FAILED,
            provider="deepgram",
            default_base_url=DEFAULT_BASE_URL,
            example_url=DEFAULT_BASE_URL,
            auth_header=("Authorization", "Token "),
            key_required=True,
        )
        self._url = self._api.url("/v1/speak")
        self.model = own_default(settings, "model", DEFAULT_MODEL)  # also what is billed
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


def create(settings: TTSSettings, models: object) -> DeepgramTTS:
    """Registry factory; ``models`` (the model store) is unused: Deepgram holds the voice."""
    return DeepgramTTS(settings)
