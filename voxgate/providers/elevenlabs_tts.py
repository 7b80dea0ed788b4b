"""TTS provider for ElevenLabs' streaming API: ``POST {base_url}/v1/text-to-speech/{voice_id}/stream
?output_format=pcm_24000`` with ``{"text": ..., "model_id": ...}`` and the ``xi-api-key`` header;
the reply is headerless 24 kHz PCM16, passed on as it streams in.

``tts.voice`` is the voice id (from the ElevenLabs voice library); ``tts.model`` the model id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

from voxgate.core.capabilities import Int16Array
from voxgate.core.config import TTSSettings
from voxgate.core.errors import ErrorCode
from voxgate.providers.http_api import HttpApi, own_default
from voxgate.providers.pcm_http import no_audio, stream_pcm

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_MODEL = "eleven_flash_v2_5"
"""The low-latency model, used when ``tts.model`` is not set."""
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"
"""A premade voice ("George"), used when ``tts.voice`` is not set (its default names a Piper voice)."""


class ElevenLabsTTS:
    """Streams speech from ``POST {base_url}/v1/text-to-speech/{voice}/stream``; one HTTP client
    for all sessions."""

    sample_rate_hz = 24_000

    def __init__(self, settings: TTSSettings) -> None:
        self._api = HttpApi(
            "tts",
            settings,
            code=ErrorCode.TTS_FAILED,
            provider="elevenlabs",
            default_base_url=DEFAULT_BASE_URL,
            example_url=DEFAULT_BASE_URL,
            auth_header=("xi-api-key", ""),
            key_required=True,
        )
        self._voice = own_default(settings, "voice", DEFAULT_VOICE)
        self.model = own_default(settings, "model", DEFAULT_MODEL)  # also what is billed
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


def create(settings: TTSSettings, models: object) -> ElevenLabsTTS:
    """Registry factory; ``models`` (the model store) is unused: ElevenLabs holds the voice."""
    return ElevenLabsTTS(settings)
