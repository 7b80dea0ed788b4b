"""STT provider for any server speaking OpenAI's ``/audio/transcriptions`` API (OpenAI, Groq,
speaches, LocalAI, ...): one multipart upload of a WAV per utterance.

No retries here: a failure becomes a :class:`ProviderError` whose ``retryable`` tells the layer
above (which owns retries and fallback) whether trying again may help.
"""

from __future__ import annotations

import io
import json
import wave
from typing import Any

import httpx

from voxgate.core.audio import float_to_int16
from voxgate.core.capabilities import Float32Array
from voxgate.core.config import STTSettings
from voxgate.core.errors import ConfigError, ErrorCode, ProviderError

_BODY_SNIPPET_CHARS = 200


class OpenAICompatibleSTT:
    """Transcribes with ``POST {base_url}/audio/transcriptions``; one HTTP client for all sessions."""

    sample_rate_hz = 16_000

    def __init__(self, settings: STTSettings) -> None:
        if not settings.base_url:
            raise ConfigError(
                "the openai STT provider needs stt.base_url, e.g. https://api.openai.com/v1"
            )
        if not settings.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"stt.base_url must start with http:// or https://, got {settings.base_url!r}"
            )
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._url = f"{self._base_url}/audio/transcriptions"
        self._api_key = settings.api_key.get_secret_value() if settings.api_key else ""
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # Last, so a server wanting another auth scheme (e.g. Azure's ``api-key``) can get it.
        headers.update(settings.extra_headers)
        # One pooled client: turns reuse connections instead of a TCP/TLS handshake each.
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(settings.timeout_s))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def transcribe(self, audio: Float32Array) -> str:
        if audio.size == 0:
            return ""
        form = {"model": self._settings.model, "response_format": "json"}
        if self._settings.language:
            form["language"] = self._settings.language
        files = {"file": ("utterance.wav", _wav_bytes(audio, self.sample_rate_hz), "audio/wav")}
        try:
            response = await self._client.post(self._url, data=form, files=files)
        except httpx.ConnectError as exc:
            raise self._failure(
                f"cannot connect to the STT server at {self._base_url}", exc
            ) from exc
        except httpx.TimeoutException as exc:
            raise self._failure(f"the STT server at {self._base_url} timed out", exc) from exc
        except httpx.HTTPError as exc:
            raise self._failure(
                f"connection to the STT server at {self._base_url} failed", exc
            ) from exc
        if response.status_code >= 400:
            raise self._http_error(response)
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
                f"the STT server at {self._base_url} sent a malformed answer: {self._snippet(body)}",
                code=ErrorCode.STT_FAILED,
            )
        return text.strip()

    def _failure(self, message: str, exc: httpx.HTTPError) -> ProviderError:
        # Some httpx errors (e.g. a read on a reset socket) have an empty message.
        detail = self._snippet(str(exc)) or type(exc).__name__
        return ProviderError(f"{message}: {detail}", code=ErrorCode.STT_FAILED, retryable=True)

    def _http_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        message = f"the STT server at {self._base_url} answered HTTP {status}"
        retry_after = response.headers.get("Retry-After")
        if status == 429 and retry_after:
            message += f" (retry after {retry_after.strip()[:40]})"
        body = self._snippet(response.text)
        return ProviderError(
            f"{message}: {body}" if body else message,
            code=ErrorCode.STT_FAILED,
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


def _wav_bytes(audio: Float32Array, sample_rate_hz: int) -> bytes:
    """A mono PCM16 WAV file of ``audio``, built in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(float_to_int16(audio).astype("<i2").tobytes())
    return buffer.getvalue()


def create(settings: STTSettings, models: object) -> OpenAICompatibleSTT:
    """Registry factory; ``models`` (the model store) is unused: the server holds the model."""
    return OpenAICompatibleSTT(settings)
