"""``voxgate bench quality``: every question to every (LLM, character prompt) pair, scored.

Each question is asked on its own (system prompt + question), as a first turn would be; the system
prompt is cached once per prompt first, as ``voxgate serve`` does at start, so first-token figures
are what a device's first question pays. Fixed sampling seed: runs repeat.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxgate.benchmarks.quality import QUESTIONS, Question, score
from voxgate.core import registry
from voxgate.core.capabilities import ChatMessage, LanguageModel, ModelResolver
from voxgate.core.engine_settings import LLMSettings


@dataclass(frozen=True, slots=True)
class Prompt:
    label: str
    """``default`` (the configuration's character) or a built-in character's slug."""
    system_prompt: str


@dataclass(frozen=True, slots=True)
class Answer:
    question: str
    answer: str
    right: bool
    first_token_ms: float | None
    total_ms: float
    why: str = ""
    """For a wrong answer: what was missing or should not be there."""


@dataclass(slots=True)
class Cell:
    """One LLM with one prompt over all the questions."""

    model: str
    prompt: str
    answers: list[Answer] = field(default_factory=list)

    @property
    def right(self) -> int:
        return sum(a.right for a in self.answers)

    @property
    def fraction_right(self) -> float:
        return self.right / len(self.answers) if self.answers else 0.0

    def summary(self) -> dict[str, Any]:
        first = [a.first_token_ms for a in self.answers if a.first_token_ms is not None]
        words = [len(a.answer.split()) for a in self.answers]
        return {
            "model": self.model,
            "prompt": self.prompt,
            "right": self.right,
            "questions": len(self.answers),
            "fraction_right": round(self.fraction_right, 3),
            "reply_words_median": statistics.median(words) if words else None,
            "first_token_ms_p50": round(statistics.median(first), 1) if first else None,
            "first_token_ms_p95": round(_p95(first), 1) if first else None,
            "reply_ms_median": round(statistics.median(a.total_ms for a in self.answers), 1)
            if self.answers
            else None,
        }


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _why(question: Question, answer: str) -> str:
    verdict = score(question, answer)
    parts = [f"missing {'/'.join(group)}" for group in verdict.missing]
    parts += [f"says {phrase!r}" for phrase in verdict.forbidden]
    return "; ".join(parts)


async def _reply(llm: LanguageModel, system_prompt: str, text: str) -> tuple[str, float | None]:
    """The reply's text and its first token's delay (ms)."""
    messages = [ChatMessage("system", system_prompt), ChatMessage("user", text)]
    started = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    async for piece in llm.stream_reply(messages):
        if isinstance(piece, str) and piece:
            if first is None:
                first = round((time.perf_counter() - started) * 1000.0, 1)
            pieces.append(piece)
    return "".join(pieces).strip(), first


async def ask(llm: LanguageModel, system_prompt: str, question: Question) -> Answer:
    started = time.perf_counter()
    text, first = await _reply(llm, system_prompt, question.text)
    total = round((time.perf_counter() - started) * 1000.0, 1)
    verdict = score(question, text)
    why = "" if verdict.right else _why(question, text)
    return Answer(question.text, text, verdict.right, first, total, why)


async def run_quality(
    models: Sequence[LLMSettings],
    prompts: Sequence[Prompt],
    resolver: ModelResolver,
    questions: Sequence[Question] = QUESTIONS,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Cell]:
    cells: list[Cell] = []
    for settings in models:
        llm: LanguageModel = registry.factory("llm", settings.provider)(settings, resolver)
        for prompt in prompts:
            # Untimed: fills the prompt cache with the system prompt, as serve's warm-up does.
            await _reply(llm, prompt.system_prompt, "Hi!")
            cell = Cell(settings.model or settings.provider, prompt.label)
            for question in questions:
                progress(f"{cell.model} / {prompt.label}: {question.text}")
                cell.answers.append(await ask(llm, prompt.system_prompt, question))
            cells.append(cell)
        del llm  # one model in memory at a time
    return cells


def write_json(cells: Sequence[Cell], path: Path, settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "settings": settings,
        "summary": [cell.summary() for cell in cells],
        "answers": {
            f"{cell.model} / {cell.prompt}": [asdict(a) for a in cell.answers] for cell in cells
        },
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
