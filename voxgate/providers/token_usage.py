"""Token counts from the ``usage`` object of OpenAI-style chat completions (OpenAI, llama.cpp...)."""

from __future__ import annotations

from typing import Any

from voxgate.core.usage import report_tokens


def report_usage(usage: dict[str, Any]) -> None:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        report_tokens(prompt, completion)
