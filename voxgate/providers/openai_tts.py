"""TTS provider for any server speaking OpenAI's ``/audio/speech`` API (OpenAI, speaches, Kokoro
FastAPI, LocalAI, ...), asking for raw PCM and passing it on as it streams in.

OpenAI's ``pcm`` format is headerless 24 kHz 16-bit little-endian mono. No retries here: a failure
becomes a :class:`ProviderError` whose ``retryable`` tells the layer above whether to try again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Literal

import httpx
import numpy as np

from voxgate.core.capabilities import Int16Array
from voxgate.core.engine_settings import HttpApiSettings, TTSSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.providers.http_api import HttpApi

MIN_CHUNK_MS = 50
"""Audio is passed on in pieces at least this long (but the last): network reads can be tiny."""


class OpenAITTSSettings(TTSSettings, HttpApiSettings):
    """``[tts] provider = "openai"``: any server speaking OpenAI's speech API; ``base_url`` (no
    default) names it."""

    provider: Literal["openai"] = "openai"
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"

    @property
    def priced_model(self) -> str:
        return self.model


class OpenAICompatibleTTS:
    """Streams speech from ``POST {base_url}/audio/speech``; one HTTP client for all sessions."""

    sample_rate_hz = 24_000

    def __init__(self, settings: OpenAITTSSettings) -> None:
        self._settings = settings
        self.model = settings.model
        self._api = HttpApi("tts", settings, code=ErrorCode.TTS_FAILED)
        self._url = self._api.url("/audio/speech")
        self._min_chunk_bytes = self.sample_rate_hz * MIN_CHUNK_MS // 1000 * 2

    async def aclose(self) -> None:
        await self._api.aclose()

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        return self._stream(text, voice or self._settings.voice)

    async def _stream(self, text: str, voice: str) -> AsyncGenerator[Int16Array, None]:
        if not text.strip():
            return
        body = {
            "model": self.model,
            "input": text,
            "voice": voice,
            "response_format": "pcm",
        }
        try:
            # Closing this generator early (a barge-in) exits the ``async with``, which drops the
            # half-read connection instead of downloading audio nobody will hear.
            async with self._api.client.stream("POST", self._url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._api.http_error(response)
                self._check_is_audio(response)
                async for chunk in self._chunks(response):
                    yield chunk
        except httpx.ConnectError as exc:
            raise self._api.failure(f"cannot connect to {self._api.server}", exc) from exc
        except httpx.TimeoutException as exc:
            raise self._api.failure(f"{self._api.server} timed out", exc) from exc
        except httpx.HTTPError as exc:
            # Mostly a connection lost mid-reply; the caller may have played what came before.
            raise self._api.failure(f"connection to {self._api.server} failed", exc) from exc

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[Int16Array]:
        pending = bytearray()
        async for data in response.aiter_bytes():
            pending += data
            if len(pending) >= self._min_chunk_bytes:
                # A network read can end inside a sample: its odd byte waits for the next read.
                whole = len(pending) - len(pending) % 2
                yield _samples(pending[:whole])
                del pending[:whole]
        if len(pending) % 2:
            raise ProviderError(
                f"{self._api.server} ended its audio in the middle of a sample",
                code=ErrorCode.TTS_FAILED,
                retryable=True,
            )
        if pending:
            yield _samples(pending)

    def _check_is_audio(self, response: httpx.Response) -> None:
        # A server that does not know ``pcm`` may answer 200 with JSON or text: played as PCM,
        # that would be loud noise.
        content_type = response.headers.get("Content-Type", "").lower()
        if content_type.startswith(("application/json", "text/")):
            raise ProviderError(
                f"{self._api.server} answered {content_type.split(';')[0]} instead of PCM audio",
                code=ErrorCode.TTS_FAILED,
            )


def _samples(data: bytes | bytearray) -> Int16Array:
    return np.frombuffer(bytes(data), dtype="<i2").astype(np.int16)


def create(settings: OpenAITTSSettings, models: object) -> OpenAICompatibleTTS:
    """Registry factory; ``models`` (the model store) is unused: the server holds the voice."""
    return OpenAICompatibleTTS(settings)
