"""LLM provider for any server speaking OpenAI's chat-completions API (OpenAI, Ollama, vLLM,
llama.cpp's server, LM Studio, ...), streamed over server-sent events.

No retries here: a failure becomes a :class:`ProviderError` whose ``retryable`` tells the layer
above (which owns retries and fallback) whether trying again may help.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from voxgate.core.capabilities import TOOLS, ChatMessage, ReplyPiece, ToolCall
from voxgate.core.engine_settings import HttpApiSettings, LLMSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.providers.http_api import HttpApi, describe
from voxgate.providers.token_usage import report_usage


class OpenAILLMSettings(LLMSettings, HttpApiSettings):
    """``[llm] provider = "openai"``: any server speaking OpenAI's chat completions. It has no
    default server or model: ``base_url`` and ``model`` name them."""

    provider: Literal["openai"] = "openai"
    model: str
    """The model id, e.g. ``gpt-4o-mini``, ``llama-3.1-8b-instant`` (Groq), ``llama3.2`` (Ollama)."""
    tools: list[str] = Field(default_factory=list)
    """Tools offered to the LLM: ``end_session`` lets it end the conversation when the user says
    goodbye."""

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: list[str]) -> list[str]:
        unknown = sorted(set(tools) - set(TOOLS))
        if unknown:
            raise ValueError(f"unknown tools {unknown}; voxgate offers {sorted(TOOLS)}")
        return tools


class OpenAICompatibleLLM:
    """Streams replies from ``{base_url}/chat/completions``; one HTTP client for all sessions."""

    def __init__(self, settings: OpenAILLMSettings) -> None:
        self._settings = settings
        self.model = settings.model
        self._api = HttpApi(
            "llm",
            settings,
            accept="text/event-stream",
            code=ErrorCode.LLM_FAILED,
            example_url="http://localhost:11434/v1",
        )
        self._url = self._api.url("/chat/completions")

    async def aclose(self) -> None:
        await self._api.aclose()

    async def stream_reply(
        self, messages: Sequence[ChatMessage]
    ) -> AsyncGenerator[ReplyPiece, None]:
        body: dict[str, Any] = {
            "model": self._settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            # The last chunk then carries exact token counts, for usage and cost.
            "stream_options": {"include_usage": True},
            "max_tokens": self._settings.max_tokens,
            "temperature": self._settings.temperature,
        }
        if self._settings.tools:
            body["tools"] = [_tool(name) for name in self._settings.tools]
        try:
            # Closing this generator early (aclose, break, cancellation) exits the ``async with``,
            # which drops the half-read connection; servers take that as "stop generating".
            async with self._api.client.stream("POST", self._url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._api.http_error(response)
                async for piece in self._pieces(response):
                    yield piece
        except httpx.ConnectError as exc:
            raise ProviderError(
                f"cannot connect to {self._api.server}: {describe(exc)}",
                code=ErrorCode.LLM_FAILED,
                retryable=True,
            ) from exc
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"{self._api.server} timed out ({describe(exc)})",
                code=ErrorCode.LLM_FAILED,
                retryable=True,
            ) from exc
        except httpx.HTTPError as exc:
            # Mostly a connection lost mid-reply. Retryable, but the caller may already have used
            # the pieces yielded so far.
            raise ProviderError(
                f"connection to {self._api.server} failed: {describe(exc)}",
                code=ErrorCode.LLM_FAILED,
                retryable=True,
            ) from exc

    async def _pieces(self, response: httpx.Response) -> AsyncIterator[ReplyPiece]:
        """The non-empty ``delta.content`` of each chunk, until ``data: [DONE]``; then the tools
        it called (a call's name comes in its first chunk, its arguments after)."""
        finished = done = False
        called: list[str] = []
        async for data in _sse_data(response):
            if data == "[DONE]":
                done = True
                break  # Do not wait for the server to close: a kept-alive stream may stay open.
            content, finish, tools = self._parse_chunk(data)
            finished = finished or finish
            called += [name for name in tools if name not in called]
            if content:
                yield content
        if not (done or finished):
            # A close-delimited body that just stops looks like a normal end to HTTP; without a
            # finish_reason or [DONE] the reply is truncated.
            raise ProviderError(
                f"{self._api.server} cut the reply short",
                code=ErrorCode.LLM_FAILED,
                retryable=True,
            )
        for name in called:
            if name in self._settings.tools:  # never act on a tool that was not offered
                yield ToolCall(name)

    def _parse_chunk(self, data: str) -> tuple[str, bool, list[str]]:
        """``(delta content, whether a finish_reason was given, names of tools it starts to
        call)`` of one chunk."""
        try:
            chunk: Any = json.loads(data)
        except json.JSONDecodeError:
            raise self._malformed(data) from None
        if not isinstance(chunk, dict):
            raise self._malformed(data)
        if "error" in chunk:  # servers report failures after the 200 header inside the stream
            raise ProviderError(
                f"{self._api.server} reported an error: "
                f"{self._api.snippet(json.dumps(chunk['error']))}",
                code=ErrorCode.LLM_FAILED,
            )
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            report_usage(usage)
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise self._malformed(data)
        if not choices:  # e.g. the usage chunk at the end
            return "", False, []
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise self._malformed(data)
        content = delta.get("content")
        tools = [
            call["function"]["name"]
            for call in delta.get("tool_calls") or []
            if isinstance(call, dict)
            and isinstance(call.get("function"), dict)
            and isinstance(call["function"].get("name"), str)
        ]
        finish = bool(choice.get("finish_reason"))
        return (content if isinstance(content, str) else ""), finish, tools

    def _malformed(self, data: str) -> ProviderError:
        return ProviderError(
            f"{self._api.server} sent a malformed chunk: {self._api.snippet(data)}",
            code=ErrorCode.LLM_FAILED,
        )


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


def _tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": TOOLS[name],
            "parameters": {"type": "object", "properties": {}},
        },
    }


def create(settings: OpenAILLMSettings, models: object) -> OpenAICompatibleLLM:
    """Registry factory; ``models`` (the model store) is unused: the server holds the model."""
    return OpenAICompatibleLLM(settings)
