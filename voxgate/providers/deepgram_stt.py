"""STT provider for Deepgram's pre-recorded API: ``POST {base_url}/v1/listen`` with the utterance
as a WAV body, ``Authorization: Token <key>``; the transcript is
``results.channels[0].alternatives[0].transcript``. With ``stt.streaming`` it also streams
(:meth:`DeepgramSTT.open_stream`, the live API in :mod:`voxgate.providers.deepgram_stream`).

No retries here: a failure becomes a :class:`ProviderError` whose ``retryable`` tells the layer
above (which owns retries and fallback) whether trying again may help.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx

from voxgate.core.capabilities import Float32Array
from voxgate.core.engine_settings import HttpApiSettings, STTSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.providers.deepgram_stream import DeepgramStream, connect_stream, listen_url
from voxgate.providers.http_api import HttpApi
from voxgate.providers.pcm_http import wav_bytes

DEFAULT_BASE_URL = "https://api.deepgram.com"


class DeepgramSTTSettings(STTSettings, HttpApiSettings):
    """``[stt] provider = "deepgram"``."""

    provider: Literal["deepgram"] = "deepgram"
    base_url: str | None = DEFAULT_BASE_URL
    """Without ``/v1``."""
    model: str = "nova-3"
    language: str | None = "en"
    """``""`` or None: Deepgram's default."""
    streaming: bool = False
    """Transcribe while the user speaks, over one connection per utterance; interim results
    become partial transcripts, and the reply's transcript is the stream's final one instead of a
    second, batch request."""


class DeepgramSTT:
    """Transcribes with ``POST {base_url}/v1/listen``; one HTTP client for all sessions."""

    sample_rate_hz = 16_000

    def __init__(self, settings: DeepgramSTTSettings) -> None:
        self._api = HttpApi(
            "stt",
            settings,
            code=ErrorCode.STT_FAILED,
            accept="application/json",
            provider="deepgram",
            example_url=DEFAULT_BASE_URL,
            auth_header=("Authorization", "Token "),
            key_required=True,
        )
        self._url = self._api.url("/v1/listen")
        self.model = settings.model
        self._params = {"model": self.model, "smart_format": "true"}
        if settings.language:
            self._params["language"] = settings.language
        self.streaming = settings.streaming
        self._stream_url = listen_url(self._api.base_url, self.model, settings.language)
        self._stream_headers = dict(settings.extra_headers)
        if settings.api_key is not None:
            self._stream_headers["Authorization"] = f"Token {settings.api_key.get_secret_value()}"
        self._timeout_s = settings.timeout_s

    async def open_stream(self) -> DeepgramStream:
        """One live stream (``wss://.../v1/listen``) for one utterance."""
        return await connect_stream(
            self._stream_url,
            self._stream_headers,
            server=self._api.server,
            scrub=self._api.snippet,
            timeout_s=self._timeout_s,
        )

    async def aclose(self) -> None:
        await self._api.aclose()

    async def transcribe(self, audio: Float32Array) -> str:
        if audio.size == 0:
            return ""
        body = wav_bytes(audio, self.sample_rate_hz)
        try:
            response = await self._api.client.post(
                self._url,
                params=self._params,
                content=body,
                headers={"Content-Type": "audio/wav"},
            )
        except httpx.HTTPError as exc:
            raise self._api.transport_failure(exc) from exc
        if response.status_code >= 400:
            raise self._api.http_error(response)
        return self._transcript(response.text)

    def _transcript(self, body: str) -> str:
        try:
            payload: Any = json.loads(body)
            transcript = payload["results"]["channels"][0]["alternatives"][0]["transcript"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            transcript = None
        if not isinstance(transcript, str):
            # A server speaking another format will not start speaking this one on a retry.
            raise ProviderError(
                f"{self._api.server} sent a malformed answer: {self._api.snippet(body)}",
                code=ErrorCode.STT_FAILED,
            )
        return transcript.strip()


def create(settings: DeepgramSTTSettings, models: object) -> DeepgramSTT:
    """Registry factory; ``models`` (the model store) is unused: Deepgram holds the model."""
    return DeepgramSTT(settings)
