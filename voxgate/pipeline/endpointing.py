"""Deciding when the user's turn starts and ends, from VAD probabilities (sans-I/O).

Feed one speech probability per VAD chunk; get back what happened. Chunk indices count from the
start of the session.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpeechBegan:
    first_chunk: int


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Silence long enough to start the reply speculatively."""

    last_voiced_chunk: int


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """The user went on after a pause: a speculative reply is void."""


@dataclass(frozen=True, slots=True)
class TurnEnded:
    last_voiced_chunk: int
    forced: bool = False
    """True when the utterance hit the length cap or the client committed the turn."""


Decision = SpeechBegan | SpeechPaused | SpeechResumed | TurnEnded


@dataclass(frozen=True, slots=True)
class EndpointerConfig:
    chunk_ms: float
    threshold: float = 0.5
    min_speech_ms: float = 96
    end_of_turn_silence_ms: float = 500
    speculative_start_ms: float | None = None
    max_utterance_ms: float = 30_000

    @property
    def release_threshold(self) -> float:
        # Hysteresis: once speaking, a chunk counts as voiced down to a lower probability.
        return max(0.01, self.threshold - 0.15)


class Endpointer:
    def __init__(self, config: EndpointerConfig) -> None:
        self.config = config
        self._chunk = -1
        self._voiced_run = 0
        self._in_speech = False
        self._first_chunk = 0
        self._last_voiced = 0
        self._voiced_chunks = 0
        self._paused = False

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def voiced_ms(self) -> float:
        """Voiced audio in the current utterance (0 outside speech)."""
        return self._voiced_chunks * self.config.chunk_ms if self._in_speech else 0.0

    def feed(self, probability: float) -> list[Decision]:
        self._chunk += 1
        if not self._in_speech:
            return self._feed_idle(probability)
        return self._feed_speech(probability)

    def commit(self) -> list[Decision]:
        """The client says the turn is over (device-side VAD, push-to-talk release)."""
        if not self._in_speech:
            return []
        self._in_speech = False
        return [TurnEnded(self._last_voiced, forced=True)]

    def _feed_idle(self, probability: float) -> list[Decision]:
        cfg = self.config
        self._voiced_run = self._voiced_run + 1 if probability >= cfg.threshold else 0
        if self._voiced_run * cfg.chunk_ms < cfg.min_speech_ms:
            return []
        self._in_speech = True
        self._paused = False
        self._first_chunk = self._chunk - self._voiced_run + 1
        self._last_voiced = self._chunk
        self._voiced_chunks = self._voiced_run
        self._voiced_run = 0
        return [SpeechBegan(self._first_chunk)]

    def _feed_speech(self, probability: float) -> list[Decision]:
        cfg = self.config
        decisions: list[Decision] = []
        # After a pause only clear speech resumes the turn, so breath noise does not void the
        # speculative reply.
        needed = cfg.threshold if self._paused else cfg.release_threshold
        if probability >= needed:
            self._last_voiced = self._chunk
            self._voiced_chunks += 1
            if self._paused:
                self._paused = False
                decisions.append(SpeechResumed())
        silence_ms = (self._chunk - self._last_voiced) * cfg.chunk_ms
        length_ms = (self._chunk - self._first_chunk + 1) * cfg.chunk_ms
        if silence_ms >= cfg.end_of_turn_silence_ms or length_ms >= cfg.max_utterance_ms:
            self._in_speech = False
            forced = silence_ms < cfg.end_of_turn_silence_ms
            decisions.append(TurnEnded(self._last_voiced, forced=forced))
        elif (
            not self._paused
            and cfg.speculative_start_ms is not None
            and silence_ms >= cfg.speculative_start_ms
        ):
            self._paused = True
            decisions.append(SpeechPaused(self._last_voiced))
        return decisions
