"""TTS provider for Deepgram Aura on Cloudflare Workers AI: ``POST {base_url}/{model}`` (default
``@cf/deepgram/aura-1``), where ``base_url`` carries the account id
(``https://api.cloudflare.com/client/v4/accounts/<id>/ai/run``), ``Authorization: Bearer <API
token>``, JSON ``{"text": ..., "encoding": "linear16", "container": "none", "sample_rate": 24000}``.

The reply is the audio itself, passed on as it streams in. Should Cloudflare wrap it in its JSON
envelope instead (``{"result": {"audio": <base64>}, "success": true}``, as for some other TTS
models), that is decoded too; an envelope with ``"success": false`` is an error.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import httpx

from voxgate.core.capabilities import Int16Array
from voxgate.core.engine_settings import HttpApiSettings, TTSSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.providers.http_api import HttpApi
from voxgate.providers.pcm_http import no_audio, pcm_chunks, samples

EXAMPLE_BASE_URL = "https://api.cloudflare.com/client/v4/accounts/ACCOUNT_ID/ai/run"


class CloudflareTTSSettings(TTSSettings, HttpApiSettings):
    """``[tts] provider = "cloudflare"``; ``base_url`` (no default) carries the account id."""

    provider: Literal["cloudflare"] = "cloudflare"
    model: str = "@cf/deepgram/aura-1"
    voice: str | None = None
    """Aura's ``speaker`` (``angus``, ``asteria``, ``luna``, ...); None: Cloudflare's default."""

    @property
    def priced_model(self) -> str:
        return self.model


class CloudflareTTS:
    """Streams speech from ``POST {base_url}/{model}``; one HTTP client for all sessions.

    ``tts.voice``, when set, is Aura's ``speaker`` (``angus``, ``asteria``, ``luna``, ...)."""

    sample_rate_hz = 24_000

    def __init__(self, settings: CloudflareTTSSettings) -> None:
        self._api = HttpApi(
            "tts",
            settings,
            code=ErrorCode.TTS_FAILED,
            provider="cloudflare",
            example_url=EXAMPLE_BASE_URL,
            key_required=True,
        )
        self.model = settings.model
        self._url = self._api.url(f"/{self.model}")
        self._options: dict[str, Any] = {
            "encoding": "linear16",
            "container": "none",
            "sample_rate": self.sample_rate_hz,
        }
        if settings.voice:
            self._options["speaker"] = settings.voice

    async def aclose(self) -> None:
        await self._api.aclose()

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        """``voice``: an Aura ``speaker`` (``angus``, ``asteria``, ``luna``, ...)."""
        if not text.strip():
            return no_audio()
        return self._stream(text, voice)

    async def _stream(self, text: str, voice: str | None) -> AsyncGenerator[Int16Array, None]:
        body = {"text": text, **self._options}
        if voice:
            body["speaker"] = voice
        try:
            async with self._api.client.stream("POST", self._url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._api.http_error(response)
                content_type = response.headers.get("Content-Type", "").lower()
                if content_type.startswith("application/json"):
                    yield self._enveloped_audio(await response.aread())
                    return
                if content_type.startswith("text/"):
                    raise ProviderError(
                        f"{self._api.server} answered {content_type.split(';')[0]} "
                        "instead of PCM audio",
                        code=ErrorCode.TTS_FAILED,
                    )
                async for chunk in pcm_chunks(self._api, response, self.sample_rate_hz):
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._api.transport_failure(exc) from exc

    def _enveloped_audio(self, raw: bytes) -> Int16Array:
        text = raw.decode("utf-8", "replace")
        try:
            payload: Any = json.loads(text)
        except json.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and payload.get("success") is False:
            raise ProviderError(
                f"{self._api.server} reported a failure: {self._api.snippet(text)}",
                code=ErrorCode.TTS_FAILED,
            )
        result = payload.get("result") if isinstance(payload, dict) else None
        encoded = result.get("audio") if isinstance(result, dict) else None
        try:
            pcm = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
        except binascii.Error:
            pcm = None
        if pcm is None or len(pcm) % 2:
            raise ProviderError(
                f"{self._api.server} answered JSON without PCM audio: {self._api.snippet(text)}",
                code=ErrorCode.TTS_FAILED,
            )
        return samples(pcm)


def create(settings: CloudflareTTSSettings, models: object) -> CloudflareTTS:
    """Registry factory; ``models`` (the model store) is unused: Cloudflare holds the voice."""
    return CloudflareTTS(settings)
