"""The turn engine's event vocabulary: what a session tells the transport.

Events are frozen dataclasses with units in their field names. Times given as ``*_ms`` without
further qualification are milliseconds on the session's monotonic clock, relative to the moment the
session started.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxgate.core.errors import ErrorCode
from voxgate.core.usage import EngineUsage


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The VAD heard the user start speaking."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The user's turn ended (trailing silence long enough, or the client committed it)."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the user said; ``final`` is False for interim guesses while they are still talking."""

    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class ReplyStarted:
    """The assistant starts a reply; audio and text deltas with this ``turn_id`` follow."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class ReplyTextDelta:
    """A piece of the reply text, as the LLM writes it."""

    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class ReplyAudio:
    """A chunk of reply audio: PCM16 little-endian mono at ``sample_rate_hz``.

    Audio comes sentence by sentence; ``sentence_index`` counts from 0 within the reply, and the
    first chunk of each sentence carries ``sentence_start=True``.
    """

    turn_id: int
    sentence_index: int
    sentence_text: str
    sentence_start: bool
    pcm: bytes = field(repr=False)
    sample_rate_hz: int

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate_hz * 1000.0


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The user barged in; the reply stopped and only ``heard_text`` stays in the history."""

    turn_id: int
    heard_text: str


@dataclass(frozen=True, slots=True)
class TurnTimings:
    """Where the time of one turn went, in milliseconds. ``None``: the stage did not run."""

    end_of_turn_wait_ms: float | None = None
    """Last voiced sample → the turn was declared over."""
    stt_ms: float | None = None
    """Transcription of the utterance."""
    llm_first_token_ms: float | None = None
    """LLM request sent → first text token."""
    first_sentence_ms: float | None = None
    """LLM request sent → first complete sentence (or clause) handed to TTS."""
    tts_first_audio_ms: float | None = None
    """First sentence handed to TTS → its first audio."""
    speech_end_to_first_audio_ms: float | None = None
    """Last voiced sample → first reply audio ready (the latency the user hears)."""
    turn_end_to_first_audio_ms: float | None = None
    """End of turn declared → first reply audio ready (the above minus the end-of-turn wait)."""
    speculative: bool = False
    """True when transcription and reply started during the end-of-turn silence wait."""


@dataclass(frozen=True, slots=True)
class TurnDone:
    """A turn is over: what was said, what was answered (and heard), and where the time went."""

    turn_id: int
    user_text: str
    reply_text: str
    interrupted: bool
    timings: TurnTimings
    usage: tuple[EngineUsage, ...] = ()
    """Each engine call of the turn (the engine that answered, after any fallback), with its cost."""
    generated_text: str = ""
    """The reply as far as it was generated; more than ``reply_text`` when interrupted."""

    @property
    def cost_usd(self) -> float:
        return sum(record.cost_usd for record in self.usage)


@dataclass(frozen=True, slots=True)
class LateUsage:
    """Usage of turn ``turn_id`` that came in after its TurnDone: an interrupted reply's engine
    calls finish (and are billed) just after the interruption is reported. Not for devices."""

    turn_id: int
    usage: tuple[EngineUsage, ...]


@dataclass(frozen=True, slots=True)
class SessionEndRequested:
    """The assistant ended the conversation (its LLM called ``end_session``) after reply
    ``turn_id``; transports close the session once that reply has been sent."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something went wrong; the session goes on."""

    code: ErrorCode
    message: str
    turn_id: int | None = None


@dataclass(frozen=True, slots=True)
class WakeWordHeard:
    """A session in ``wake_word`` listening mode heard its wake word: from now on its audio is a
    conversation (transcribed, answered, stored, billed); before, none of it was."""

    wake_word: str
    at_ms: float
    """Session audio time at which the engine fired (a little after the word ended)."""


@dataclass(frozen=True, slots=True)
class WakeWordWaiting:
    """The session waits for its wake word again; nothing it hears is transcribed until then."""

    reason: str
    """``"turn_done"`` (one turn per wake word) or ``"silence"`` (the conversation went quiet)."""


Event = (
    SpeechStarted
    | SpeechStopped
    | Transcript
    | ReplyStarted
    | ReplyTextDelta
    | ReplyAudio
    | Interrupted
    | TurnDone
    | LateUsage
    | SessionEndRequested
    | ErrorEvent
    | WakeWordHeard
    | WakeWordWaiting
)
