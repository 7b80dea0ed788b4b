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

from voxgate.core.capabilities import TOOLS, ChatMessage, ReplyPiece, ToolCall, ToolSpec
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
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
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
        offered = [_tool(name) for name in self._settings.tools] + [_spec(t) for t in tools]
        if offered:
            body["tools"] = offered
        try:
            # Closing this generator early (aclose, break, cancellation) exits the ``async with``,
            # which drops the half-read connection; servers take that as "stop generating".
            async with self._api.client.stream("POST", self._url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._api.http_error(response)
                names = {*self._settings.tools, *(t.name for t in tools)}
                async for piece in self._pieces(response, names):
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

    async def _pieces(
        self, response: httpx.Response, offered: set[str]
    ) -> AsyncIterator[ReplyPiece]:
        """The non-empty ``delta.content`` of each chunk, until ``data: [DONE]``; then the tools
        it called (a call's name comes in its first chunk, its arguments after, in pieces)."""
        finished = done = False
        called: dict[int, list[str]] = {}  # index -> [name, arguments so far]
        async for data in _sse_data(response):
            if data == "[DONE]":
                done = True
                break  # Do not wait for the server to close: a kept-alive stream may stay open.
            content, finish, tools = self._parse_chunk(data)
            finished = finished or finish
            for index, name, arguments in tools:
                call = called.setdefault(index, ["", ""])
                call[0] = call[0] or name
                call[1] += arguments
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
        for name, arguments in called.values():
            if name in offered:  # never act on a tool that was not offered
                yield ToolCall(name, _arguments(arguments))

    def _parse_chunk(self, data: str) -> tuple[str, bool, list[tuple[int, str, str]]]:
        """``(delta content, whether a finish_reason was given, the pieces of tool calls in it
        as (index, name or "", arguments fragment))`` of one chunk."""
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
        pieces = [_call_piece(n, call) for n, call in enumerate(delta.get("tool_calls") or [])]
        tools = [piece for piece in pieces if piece is not None]
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


def _spec(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


def _call_piece(position: int, call: object) -> tuple[int, str, str] | None:
    """One tool call's piece in a chunk: the first names it, later ones add to its arguments
    (``index`` says which call; servers that leave it out send one call at a time)."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return None
    function = call["function"]
    index = call.get("index", position)
    name = function.get("name")
    arguments = function.get("arguments")
    return (
        index if isinstance(index, int) else position,
        name if isinstance(name, str) else "",
        arguments if isinstance(arguments, str) else "",
    )


def _arguments(text: str) -> dict[str, Any]:
    """A call's arguments; what is not a JSON object is no arguments (the tool says what it
    misses)."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def create(settings: OpenAILLMSettings, models: object) -> OpenAICompatibleLLM:
    """Registry factory; ``models`` (the model store) is unused: the server holds the model."""
    return OpenAICompatibleLLM(settings)
