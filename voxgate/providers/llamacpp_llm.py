"""A local GGUF model through llama.cpp (the ``xllamacpp`` bindings), in process."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from voxgate.core.capabilities import ChatMessage, ModelResolver, ReplyPiece, ToolSpec
from voxgate.core.engine_settings import LLMSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.core.threads import Emit, stream_from_thread
from voxgate.providers.token_usage import report_usage


class LlamaCppSettings(LLMSettings):
    """``[llm] provider = "llamacpp"``: a GGUF model in this process."""

    provider: Literal["llamacpp"] = "llamacpp"
    model: str = "qwen2.5-0.5b-instruct"
    """A name from ``voxgate models`` or a path to a GGUF file."""
    context_tokens: int = Field(2048, ge=256)
    """Per session slot (``max_concurrent`` slots share one model)."""
    threads: int = Field(2, ge=1)
    seed: int | None = None
    """A fixed sampling seed (benchmarks set one so runs repeat); None: random."""


@dataclass(frozen=True, slots=True)
class PromptStats:
    """How llama.cpp handled one request's prompt (from its ``timings``)."""

    prompt_tokens: int
    cached_tokens: int
    """Taken from the KV cache, not evaluated again."""
    evaluated_tokens: int
    prompt_ms: float
    generated_tokens: int


_WORD = re.compile(r"\w+")
_REMEMBERED_REPLIES = 64


def spoken_key(text: str) -> str:
    """What survives of a reply on its way to the history (spoken pieces, markdown and emoji
    dropped, whitespace collapsed): its words."""
    return " ".join(_WORD.findall(text.lower()))


class LlamaCppLLM:
    """llama.cpp keeps the last request's tokens (prompt and reply) in its KV cache and reuses the
    longest common prefix of the next prompt. The history holds the reply as spoken, which can
    differ from the generated text (newlines, markdown, split pieces): such a reply would
    tokenise differently and cost the rest of the prompt again. So replies generated here are
    remembered, and put back in place of their spoken form, byte for byte."""

    def __init__(self, model_path: Path, settings: LlamaCppSettings) -> None:
        import xllamacpp  # here: loading the settings must not load llama.cpp

        self._settings = settings
        self.prompt_stats: deque[PromptStats] = deque(maxlen=256)
        """The newest requests' prompt handling, oldest first: the KV reuse made visible."""
        self._generated: OrderedDict[str, str] = OrderedDict()  # spoken_key → generated text
        self.model = settings.model
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_ctx = settings.context_tokens * settings.max_concurrent
        params.n_parallel = settings.max_concurrent
        params.cpuparams.n_threads = settings.threads
        params.cpuparams_batch.n_threads = settings.threads
        params.verbosity = -1
        params.warmup = False  # warm_up() does it, and fills the prompt cache too
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise ProviderError(
                f"llama.cpp could not load {model_path}: {exc}", code=ErrorCode.LLM_FAILED
            ) from exc

    def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyPiece]:
        # The embedded model is not offered tools: the small models shipped for it do not call
        # them reliably (docs/protocols/xiaozhi.md); an OpenAI-compatible server's model does.
        return self._stream(messages)

    async def _stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ReplyPiece]:
        request = {
            "messages": [{"role": m.role, "content": self._as_generated(m)} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self._settings.max_tokens,
            "temperature": self._settings.temperature,
            # Reuse the KV cache of the shared prefix (system prompt, earlier turns).
            "cache_prompt": True,
        }
        if self._settings.seed is not None:
            request["seed"] = self._settings.seed

        usage: list[dict[str, Any]] = []  # filled on llama.cpp's thread, read back here
        timings: list[dict[str, Any]] = []

        def work(emit: Emit[str], stop: threading.Event) -> None:
            def on_chunk(chunk: dict[str, Any]) -> bool:
                if "error" in chunk or "choices" not in chunk:
                    emit_error(chunk)
                    return True
                if isinstance(chunk.get("usage"), dict):
                    usage.append(chunk["usage"])
                if isinstance(chunk.get("timings"), dict):
                    timings.append(chunk["timings"])
                for choice in chunk["choices"]:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        emit(content)
                return stop.is_set()  # True tells llama.cpp to stop generating

            def emit_error(chunk: dict[str, Any]) -> None:
                detail = chunk.get("error", chunk)
                raise ProviderError(f"llama.cpp error: {detail}", code=ErrorCode.LLM_FAILED)

            errors: list[ProviderError] = []

            def guarded(chunk: dict[str, Any]) -> bool:
                try:
                    return on_chunk(chunk)
                except ProviderError as exc:
                    errors.append(exc)
                    return True

            self._server.handle_chat_completions(request, guarded)
            if errors:
                raise errors[0]

        pieces: list[str] = []
        async for piece in stream_from_thread(work):
            pieces.append(piece)
            yield piece
        self._remember("".join(pieces))
        if usage:
            report_usage(usage[-1])
        if timings:
            self._record(timings[-1])

    def _as_generated(self, message: ChatMessage) -> str:
        if message.role != "assistant":
            return message.content
        return self._generated.get(spoken_key(message.content), message.content)

    def _remember(self, generated: str) -> None:
        key = spoken_key(generated)
        if key and generated != self._generated.get(key):
            self._generated[key] = generated
        if key in self._generated:
            self._generated.move_to_end(key)
        while len(self._generated) > _REMEMBERED_REPLIES:
            self._generated.popitem(last=False)

    def _record(self, timings: dict[str, Any]) -> None:
        cached, evaluated = int(timings.get("cache_n", 0)), int(timings.get("prompt_n", 0))
        stats = PromptStats(
            cached + evaluated,
            cached,
            evaluated,
            float(timings.get("prompt_ms", 0.0)),
            int(timings.get("predicted_n", 0)),
        )
        self.prompt_stats.append(stats)


def create(settings: LlamaCppSettings, models: ModelResolver) -> LlamaCppLLM:
    return LlamaCppLLM(models.resolve(settings.model), settings)
