"""What a turn used of each engine, and what that cost.

Every engine call made for a turn adds one :class:`EngineUsage` to the turn's :class:`UsageMeter`.
The meter travels in a context variable rather than as an argument: usage is a cross-cutting
concern of every engine wrapper and provider (like a trace), and the reply task that sets it is
the only one that reads it, since asyncio gives each task its own copy of the context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

Capability = Literal["stt", "llm", "tts"]


@dataclass(frozen=True, slots=True)
class EngineUsage:
    """One engine's work for one turn, in the units providers bill by."""

    capability: Capability
    provider: str
    model: str
    audio_s: float = 0.0
    """STT: seconds of audio transcribed. TTS: seconds of audio synthesised."""
    characters: int = 0
    """TTS: characters synthesised."""
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_estimated: bool = False
    """True when the engine did not report token counts and they were estimated from the text."""
    compute_s: float = 0.0
    """Wall-clock seconds spent in the engine (local engines cost nothing but this)."""
    cost_usd: float = 0.0


@dataclass(slots=True)
class UsageMeter:
    """Collects the usage of one turn."""

    records: list[EngineUsage] = field(default_factory=list)
    reported_tokens: tuple[int, int] | None = None
    """Exact ``(in, out)`` token counts of the LLM call in progress, when its engine reports them."""

    def add(self, usage: EngineUsage) -> None:
        self.records.append(usage)

    @property
    def cost_usd(self) -> float:
        return sum(record.cost_usd for record in self.records)


_current: ContextVar[UsageMeter | None] = ContextVar("voxgate_usage_meter", default=None)


@contextmanager
def metering(meter: UsageMeter) -> Iterator[UsageMeter]:
    """Engine calls made in this task (and tasks it starts) are counted on ``meter``."""
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def current_meter() -> UsageMeter | None:
    return _current.get()


def report_tokens(tokens_in: int, tokens_out: int) -> None:
    """An LLM provider's exact token counts for the call in progress (when it knows them)."""
    meter = _current.get()
    if meter is not None:
        meter.reported_tokens = (tokens_in, tokens_out)


def estimate_tokens(text: str) -> int:
    """About four characters a token for English, OpenAI's rule of thumb."""
    return max(1, round(len(text) / 4)) if text else 0
