"""STT provider for Cloudflare Workers AI's Whisper models: ``POST {base_url}/{model}``, where
``base_url`` carries the account id (``https://api.cloudflare.com/client/v4/accounts/<id>/ai/run``)
and ``Authorization: Bearer <API token>``. The answer is Cloudflare's envelope,
``{"result": {"text": ...}, "success": true, "errors": [], "messages": []}``.

``@cf/openai/whisper`` (the default) and ``@cf/openai/whisper-tiny-en`` take the audio file as
the body; ``@cf/openai/whisper-large-v3-turbo`` takes JSON, ``{"audio": <base64>}``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import httpx

from voxgate.core.capabilities import Float32Array
from voxgate.core.engine_settings import HttpApiSettings, STTSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.providers.http_api import HttpApi
from voxgate.providers.pcm_http import wav_bytes

EXAMPLE_BASE_URL = "https://api.cloudflare.com/client/v4/accounts/ACCOUNT_ID/ai/run"
_JSON_MODELS = ("@cf/openai/whisper-large-v3-turbo",)
"""Models whose input is JSON with base64 audio rather than the audio file itself."""


class CloudflareSTTSettings(STTSettings, HttpApiSettings):
    """``[stt] provider = "cloudflare"``; ``base_url`` (no default) carries the account id."""

    provider: Literal["cloudflare"] = "cloudflare"
    model: str = "@cf/openai/whisper"
    language: str | None = "en"
    """Sent to the models that take JSON (``@cf/openai/whisper-large-v3-turbo``)."""


class CloudflareSTT:
    """Transcribes with ``POST {base_url}/{model}``; one HTTP client for all sessions."""

    sample_rate_hz = 16_000
    streaming = False

    def __init__(self, settings: CloudflareSTTSettings) -> None:
        self._api = HttpApi(
            "stt",
            settings,
            code=ErrorCode.STT_FAILED,
            accept="application/json",
            provider="cloudflare",
            example_url=EXAMPLE_BASE_URL,
            key_required=True,
        )
        self.model = settings.model
        self._url = self._api.url(f"/{self.model}")
        self._language = settings.language

    async def aclose(self) -> None:
        await self._api.aclose()

    async def transcribe(self, audio: Float32Array) -> str:
        if audio.size == 0:
            return ""
        wav = wav_bytes(audio, self.sample_rate_hz)
        try:
            if self.model in _JSON_MODELS:
                body: dict[str, str] = {"audio": base64.b64encode(wav).decode("ascii")}
                if self._language:
                    body["language"] = self._language
                response = await self._api.client.post(self._url, json=body)
            else:
                response = await self._api.client.post(
                    self._url, content=wav, headers={"Content-Type": "audio/wav"}
                )
        except httpx.HTTPError as exc:
            raise self._api.transport_failure(exc) from exc
        if response.status_code >= 400:
            raise self._api.http_error(response)
        return self._text(response.text)

    def _text(self, body: str) -> str:
        try:
            payload: Any = json.loads(body)
        except json.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and payload.get("success") is False:
            # An error in a 200 envelope: Cloudflare's own errors carry an HTTP status instead.
            raise ProviderError(
                f"{self._api.server} reported a failure: {self._api.snippet(body)}",
                code=ErrorCode.STT_FAILED,
            )
        result = payload.get("result") if isinstance(payload, dict) else None
        text = result.get("text") if isinstance(result, dict) else None
        if not isinstance(text, str):
            raise ProviderError(
                f"{self._api.server} sent a malformed answer: {self._api.snippet(body)}",
                code=ErrorCode.STT_FAILED,
            )
        return text.strip()


def create(settings: CloudflareSTTSettings, models: object) -> CloudflareSTT:
    """Registry factory; ``models`` (the model store) is unused: Cloudflare holds the model."""
    return CloudflareSTT(settings)
