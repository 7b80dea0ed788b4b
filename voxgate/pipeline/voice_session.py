"""What a transport needs of a session: :class:`~voxgate.pipeline.session.TurnSession` (the
cascade) is one, and so is a speech-to-speech provider's session
(:class:`~voxgate.pipeline.realtime_session.RealtimeSession`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol

from voxgate.core.capabilities import ToolRunner, ToolSpec
from voxgate.core.events import Event
from voxgate.pipeline.history import Conversation

if TYPE_CHECKING:
    from voxgate.pipeline.session import TurnSession


class VoiceSession(Protocol):
    """One connection's conversation: PCM16 and text in, :mod:`voxgate.core.events` out."""

    history: Conversation
    """The exchanges so far (what the user heard of each reply); a transport may replace them
    before the first turn, to resume a conversation."""

    def events(self) -> AsyncIterator[Event]:
        """Every event, in order, until the session ends."""
        ...

    async def next_event(self, timeout_s: float | None = None) -> Event | None: ...

    @property
    def undelivered(self) -> int:
        """Events emitted that the reader has not taken yet (shutdown waits for them)."""
        ...

    async def push_audio(self, pcm: bytes, sample_rate_hz: int = 16_000) -> None: ...

    def commit_turn(self) -> bool:
        """The client says the user has finished; False when no speech was in progress."""
        ...

    async def say(self, text: str) -> None: ...

    async def greet(self) -> None: ...

    def offer_tools(self, tools: Sequence[ToolSpec], run: ToolRunner) -> bool:
        """Offer the LLM the session's own ``tools`` (a device's), run by ``run``; False where
        the session cannot (a speech-to-speech provider's)."""
        ...

    def interrupt(self) -> None: ...

    def was_interrupted(self, turn_id: int) -> bool: ...

    def report_playout(self, turn_id: int, played_ms: float) -> None: ...

    async def wait_idle(self) -> None: ...

    async def close(self) -> None: ...


if TYPE_CHECKING:
    # mypy checks here that the cascade keeps to the protocol (providers check theirs).
    def _cascade(session: TurnSession) -> VoiceSession:
        return session
