"""TTS provider for any server speaking OpenAI's ``/audio/speech`` API (OpenAI, speaches, Kokoro
FastAPI, LocalAI, ...), asking for raw PCM and passing it on as it streams in.

OpenAI's ``pcm`` format is headerless 24 kHz 16-bit little-endian mono. No retries here: a failure
becomes a :class:`ProviderError` whose ``retryable`` tells the layer above whether to try again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import numpy as np

from voxgate.core.capabilities import Int16Array
from voxgate.core.config import TTSSettings
from voxgate.core.errors import ConfigError, ErrorCode, ProviderError

DEFAULT_MODEL = "gpt-4o-mini-tts"
MIN_CHUNK_MS = 50
"""Audio is passed on in pieces at least this long (but the last): network reads can be tiny."""

_BODY_SNIPPET_CHARS = 200


class OpenAICompatibleTTS:
    """Streams speech from ``POST {base_url}/audio/speech``; one HTTP client for all sessions."""

    sample_rate_hz = 24_000

    def __init__(self, settings: TTSSettings) -> None:
        if not settings.base_url:
            raise ConfigError(
                "the openai TTS provider needs tts.base_url, e.g. https://api.openai.com/v1"
            )
        if not settings.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"tts.base_url must start with http:// or https://, got {settings.base_url!r}"
            )
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._url = f"{self._base_url}/audio/speech"
        self._api_key = settings.api_key.get_secret_value() if settings.api_key else ""
        self._min_chunk_bytes = self.sample_rate_hz * MIN_CHUNK_MS // 1000 * 2
        headers: dict[str, str] = {}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        headers.update(settings.extra_headers)  # last: another auth scheme can replace ours
        # The read timeout bounds the wait for each next piece of audio, not the whole reply.
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(settings.timeout_s))

    async def aclose(self) -> None:
        await self._client.aclose()

    def synthesize(self, text: str) -> AsyncIterator[Int16Array]:
        return self._stream(text)

    async def _stream(self, text: str) -> AsyncGenerator[Int16Array, None]:
        if not text.strip():
            return
        body = {
            "model": self._settings.model or DEFAULT_MODEL,
            "input": text,
            "voice": self._settings.voice,
            "response_format": "pcm",
        }
        try:
            # Closing this generator early (a barge-in) exits the ``async with``, which drops the
            # half-read connection instead of downloading audio nobody will hear.
            async with self._client.stream("POST", self._url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._http_error(response)
                self._check_is_audio(response)
                async for chunk in self._chunks(response):
                    yield chunk
        except httpx.ConnectError as exc:
            raise self._failure(
                f"cannot connect to the TTS server at {self._base_url}", exc
            ) from exc
        except httpx.TimeoutException as exc:
            raise self._failure(f"the TTS server at {self._base_url} timed out", exc) from exc
        except httpx.HTTPError as exc:
            # Mostly a connection lost mid-reply; the caller may have played what came before.
            raise self._failure(
                f"connection to the TTS server at {self._base_url} failed", exc
            ) from exc

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
                f"the TTS server at {self._base_url} ended its audio in the middle of a sample",
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
                f"the TTS server at {self._base_url} answered {content_type.split(';')[0]} "
                "instead of PCM audio",
                code=ErrorCode.TTS_FAILED,
            )

    def _failure(self, message: str, exc: httpx.HTTPError) -> ProviderError:
        # Some httpx errors (e.g. a read on a reset socket) have an empty message.
        detail = self._snippet(str(exc)) or type(exc).__name__
        return ProviderError(f"{message}: {detail}", code=ErrorCode.TTS_FAILED, retryable=True)

    def _http_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        message = f"the TTS server at {self._base_url} answered HTTP {status}"
        retry_after = response.headers.get("Retry-After")
        if status == 429 and retry_after:
            message += f" (retry after {retry_after.strip()[:40]})"
        body = self._snippet(response.text)
        return ProviderError(
            f"{message}: {body}" if body else message,
            code=ErrorCode.TTS_FAILED,
            retryable=status == 429 or status >= 500,
        )

    def _snippet(self, text: str) -> str:
        """A short, single-line piece of server text, with the API key blanked out: some servers
        echo the key they rejected, and error messages end up in logs and client events."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        text = " ".join(text.split())
        if len(text) > _BODY_SNIPPET_CHARS:
            text = text[:_BODY_SNIPPET_CHARS] + "..."
        return text


def _samples(data: bytes | bytearray) -> Int16Array:
    return np.frombuffer(bytes(data), dtype="<i2").astype(np.int16)


def create(settings: TTSSettings, models: object) -> OpenAICompatibleTTS:
    """Registry factory; ``models`` (the model store) is unused: the server holds the voice."""
    return OpenAICompatibleTTS(settings)
