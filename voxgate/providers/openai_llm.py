"""LLM provider for any server speaking OpenAI's chat-completions API (OpenAI, Ollama, vLLM,
llama.cpp's server, LM Studio, ...), streamed over server-sent events.

No retries here: a failure becomes a :class:`ProviderError` whose ``retryable`` tells the layer
above (which owns retries and fallback) whether trying again may help.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx

from voxgate.core.capabilities import ChatMessage
from voxgate.core.config import LLMSettings
from voxgate.core.errors import ConfigError, ErrorCode, ProviderError

_BODY_SNIPPET_CHARS = 200


class OpenAICompatibleLLM:
    """Streams replies from ``{base_url}/chat/completions``; one HTTP client for all sessions."""

    def __init__(self, settings: LLMSettings) -> None:
        if not settings.base_url:
            raise ConfigError(
                "the openai LLM provider needs llm.base_url, e.g. http://localhost:11434/v1"
            )
        if not settings.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"llm.base_url must start with http:// or https://, got {settings.base_url!r}"
            )
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._url = f"{self._base_url}/chat/completions"
        self._api_key = settings.api_key.get_secret_value() if settings.api_key else ""
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # Last, so a server wanting another auth scheme (e.g. Azure's ``api-key``) can get it.
        headers.update(settings.extra_headers)
        # One pooled client: sessions reuse connections instead of a TCP/TLS handshake per turn.
        # The read timeout bounds the wait for each next chunk, not the whole reply.
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(settings.timeout_s))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream_reply(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        body = {
            "model": self._settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": self._settings.max_tokens,
            "temperature": self._settings.temperature,
        }
        try:
            # Closing this generator early (aclose, break, cancellation) exits the ``async with``,
            # which drops the half-read connection; servers take that as "stop generating".
            async with self._client.stream("POST", self._url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._http_error(response)
                async for piece in self._pieces(response):
                    yield piece
        except httpx.ConnectError as exc:
            raise ProviderError(
                f"cannot connect to the LLM server at {self._base_url}: {_describe(exc)}",
                code=ErrorCode.LLM_FAILED,
                retryable=True,
            ) from exc
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"the LLM server at {self._base_url} timed out ({_describe(exc)})",
                code=ErrorCode.LLM_FAILED,
                retryable=True,
            ) from exc
        except httpx.HTTPError as exc:
            # Mostly a connection lost mid-reply. Retryable, but the caller may already have used
            # the pieces yielded so far.
            raise ProviderError(
                f"connection to the LLM server at {self._base_url} failed: {_describe(exc)}",
                code=ErrorCode.LLM_FAILED,
                retryable=True,
            ) from exc

    async def _pieces(self, response: httpx.Response) -> AsyncIterator[str]:
        """The non-empty ``delta.content`` of each chunk, until ``data: [DONE]``."""
        finished = False
        async for data in _sse_data(response):
            if data == "[DONE]":
                return  # Do not wait for the server to close: a kept-alive stream may stay open.
            content, finish = self._parse_chunk(data)
            finished = finished or finish
            if content:
                yield content
        if not finished:
            # A close-delimited body that just stops looks like a normal end to HTTP; without a
            # finish_reason or [DONE] the reply is truncated.
            raise ProviderError(
                f"the LLM server at {self._base_url} cut the reply short",
                code=ErrorCode.LLM_FAILED,
                retryable=True,
            )

    def _parse_chunk(self, data: str) -> tuple[str, bool]:
        """``(delta content, whether a finish_reason was given)`` of one chunk."""
        try:
            chunk: Any = json.loads(data)
        except json.JSONDecodeError:
            raise self._malformed(data) from None
        if not isinstance(chunk, dict):
            raise self._malformed(data)
        if "error" in chunk:  # servers report failures after the 200 header inside the stream
            raise ProviderError(
                f"the LLM server at {self._base_url} reported an error: "
                f"{self._snippet(json.dumps(chunk['error']))}",
                code=ErrorCode.LLM_FAILED,
            )
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise self._malformed(data)
        if not choices:  # e.g. the usage chunk at the end
            return "", False
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise self._malformed(data)
        content = delta.get("content")
        return (content if isinstance(content, str) else ""), bool(choice.get("finish_reason"))

    def _malformed(self, data: str) -> ProviderError:
        return ProviderError(
            f"the LLM server at {self._base_url} sent a malformed chunk: {self._snippet(data)}",
            code=ErrorCode.LLM_FAILED,
        )

    def _http_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        retryable = status == 429 or status >= 500
        message = f"the LLM server at {self._base_url} answered HTTP {status}"
        retry_after = response.headers.get("Retry-After")
        if status == 429 and retry_after:
            message += f" (retry after {retry_after.strip()[:40]})"
        body = self._snippet(response.text)
        return ProviderError(
            f"{message}: {body}" if body else message,
            code=ErrorCode.LLM_FAILED,
            retryable=retryable,
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


def _describe(exc: Exception) -> str:
    # Some httpx errors (e.g. a read on a reset socket) have an empty message.
    return str(exc) or type(exc).__name__


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The data of each server-sent event; other fields and comments are skipped."""
    data_lines: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(" ") else value)
        elif not line and data_lines:
            # A blank line ends an event; per the SSE spec its data lines join with newlines.
            yield "\n".join(data_lines)
            data_lines = []
    if data_lines:  # the last event lacked its blank line; be lenient
        yield "\n".join(data_lines)


def create(settings: LLMSettings, models: object) -> OpenAICompatibleLLM:
    """Registry factory; ``models`` (the model store) is unused: the server holds the model."""
    return OpenAICompatibleLLM(settings)
