"""A local GGUF model through llama.cpp (the ``xllamacpp`` bindings), in process."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from voxgate.core.capabilities import ChatMessage, ModelResolver, ReplyPiece
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


class LlamaCppLLM:
    def __init__(self, model_path: Path, settings: LlamaCppSettings) -> None:
        import xllamacpp  # here: loading the settings must not load llama.cpp

        self._settings = settings
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

    def stream_reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ReplyPiece]:
        return self._stream(messages)

    async def _stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ReplyPiece]:
        request = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self._settings.max_tokens,
            "temperature": self._settings.temperature,
            # Reuse the KV cache of the shared prefix (system prompt, earlier turns).
            "cache_prompt": True,
        }

        usage: list[dict[str, Any]] = []  # filled on llama.cpp's thread, read back here

        def work(emit: Emit[str], stop: threading.Event) -> None:
            def on_chunk(chunk: dict[str, Any]) -> bool:
                if "error" in chunk or "choices" not in chunk:
                    emit_error(chunk)
                    return True
                if isinstance(chunk.get("usage"), dict):
                    usage.append(chunk["usage"])
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

        async for piece in stream_from_thread(work):
            yield piece
        if usage:
            report_usage(usage[-1])


def create(settings: LlamaCppSettings, models: ModelResolver) -> LlamaCppLLM:
    return LlamaCppLLM(models.resolve(settings.model), settings)
