"""TTS provider for ElevenLabs' streaming API: ``POST {base_url}/v1/text-to-speech/{voice_id}/stream
?output_format=pcm_24000`` with ``{"text": ..., "model_id": ...}`` and the ``xi-api-key`` header;
the reply is headerless 24 kHz PCM16, passed on as it streams in.

``tts.voice`` is the voice id (from the ElevenLabs voice library); ``tts.model`` the model id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal
from urllib.parse import quote

from voxgate.core.capabilities import Int16Array
from voxgate.core.engine_settings import HttpApiSettings, TTSSettings
from voxgate.core.errors import ErrorCode
from voxgate.providers.http_api import HttpApi
from voxgate.providers.pcm_http import no_audio, stream_pcm

DEFAULT_BASE_URL = "https://api.elevenlabs.io"


class ElevenLabsSettings(TTSSettings, HttpApiSettings):
    """``[tts] provider = "elevenlabs"``."""

    provider: Literal["elevenlabs"] = "elevenlabs"
    base_url: str | None = DEFAULT_BASE_URL
    model: str = "eleven_flash_v2_5"
    """The low-latency model."""
    voice: str = "JBFqnCBsd6RMkjVDRZzb"
    """A voice id from the ElevenLabs voice library (this one: the premade "George")."""

    @property
    def priced_model(self) -> str:
        return self.model


class ElevenLabsTTS:
    """Streams speech from ``POST {base_url}/v1/text-to-speech/{voice}/stream``; one HTTP client
    for all sessions."""

    sample_rate_hz = 24_000

    def __init__(self, settings: ElevenLabsSettings) -> None:
        self._api = HttpApi(
            "tts",
            settings,
            code=ErrorCode.TTS_FAILED,
            provider="elevenlabs",
            example_url=DEFAULT_BASE_URL,
            auth_header=("xi-api-key", ""),
            key_required=True,
        )
        self._voice = settings.voice
        self.model = settings.model
        self._params = {"output_format": f"pcm_{self.sample_rate_hz}"}

    async def aclose(self) -> None:
        await self._api.aclose()

    def url(self, voice: str | None = None) -> str:
        """Where ``voice`` (default: the configured one) is synthesised."""
        return self._api.url(f"/v1/text-to-speech/{quote(voice or self._voice, safe='')}/stream")

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        """``voice``: a voice id from the ElevenLabs voice library."""
        if not text.strip():
            return no_audio()
        return stream_pcm(
            self._api,
            self.url(voice),
            sample_rate_hz=self.sample_rate_hz,
            json={"text": text, "model_id": self.model},
            params=self._params,
        )


def create(settings: ElevenLabsSettings, models: object) -> ElevenLabsTTS:
    """Registry factory; ``models`` (the model store) is unused: ElevenLabs holds the voice."""
    return ElevenLabsTTS(settings)
