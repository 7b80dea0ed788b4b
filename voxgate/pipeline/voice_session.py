"""What a transport needs of a session: :class:`~voxgate.pipeline.session.TurnSession` (the
cascade) and :class:`~voxgate.pipeline.realtime_session.RealtimeSession` (speech-to-speech) both
are one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from voxgate.core.events import Event
from voxgate.pipeline.history import Conversation

if TYPE_CHECKING:
    from voxgate.pipeline.realtime_session import RealtimeSession
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

    async def push_audio(self, pcm: bytes, sample_rate_hz: int = 16_000) -> None: ...

    def commit_turn(self) -> bool:
        """The client says the user has finished; False when no speech was in progress."""
        ...

    async def say(self, text: str) -> None: ...

    async def greet(self) -> None: ...

    def interrupt(self) -> None: ...

    def was_interrupted(self, turn_id: int) -> bool: ...

    def report_playout(self, turn_id: int, played_ms: float) -> None: ...

    async def wait_idle(self) -> None: ...

    async def close(self) -> None: ...


if TYPE_CHECKING:
    # mypy checks here that both sessions keep to the protocol.
    def _cascade(session: TurnSession) -> VoiceSession:
        return session

    def _speech_to_speech(session: RealtimeSession) -> VoiceSession:
        return session
