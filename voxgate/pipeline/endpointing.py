"""Deciding when the user's turn starts and ends, from VAD probabilities (sans-I/O).

Feed one speech probability per VAD chunk; get back what happened. Chunk indices count from the
start of the session.

With an end-of-turn model (``end_of_turn_check_ms`` set), a short silence yields
:class:`TurnMaybeEnded`: the caller asks the model and hands its answer back through
:meth:`Endpointer.end_of_turn_probability`, which ends the turn now or leaves it to go on (until
``end_of_turn_fallback_ms`` of silence). The endpointer never waits for the model: an answer that
arrives after the user went on is dropped.
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
class TurnMaybeEnded:
    """Silence long enough to ask the end-of-turn model whether the user has finished."""

    last_voiced_chunk: int
    """Hand it back with the answer, so an answer about an older pause can be told apart."""


@dataclass(frozen=True, slots=True)
class TurnEnded:
    last_voiced_chunk: int
    forced: bool = False
    """True when the utterance hit the length cap or the client committed the turn."""


Decision = SpeechBegan | SpeechPaused | SpeechResumed | TurnMaybeEnded | TurnEnded


@dataclass(frozen=True, slots=True)
class EndpointerConfig:
    chunk_ms: float
    threshold: float = 0.5
    min_speech_ms: float = 96
    end_of_turn_silence_ms: float = 500
    speculative_start_ms: float | None = None
    max_utterance_ms: float = 30_000
    end_of_turn_check_ms: float | None = None
    """Silence after which to ask the end-of-turn model; None: no model, the fixed silence ends
    every turn."""
    end_of_turn_threshold: float = 0.9
    """The model's probability of "finished" at or above which the turn ends at once."""
    end_of_turn_fallback_ms: float = 1_000
    """With the model: the silence that ends the turn anyway (never less than
    ``end_of_turn_silence_ms``)."""
    end_of_turn_min_speech_ms: float = 0
    """Voiced speech the utterance needs before the model is asked; shorter ones (where it is
    least reliable) end after the fixed ``end_of_turn_silence_ms``."""

    def silence_limit_ms(self, voiced_ms: float) -> float:
        """The silence that ends a turn whatever the model says."""
        if not self.asks_model(voiced_ms):
            return self.end_of_turn_silence_ms
        return max(self.end_of_turn_fallback_ms, self.end_of_turn_silence_ms)

    def asks_model(self, voiced_ms: float) -> bool:
        return self.end_of_turn_check_ms is not None and voiced_ms >= self.end_of_turn_min_speech_ms

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
        self._asked = False  # the model was asked about the current silence

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

    def end_of_turn_probability(self, last_voiced_chunk: int, probability: float) -> list[Decision]:
        """The model's answer to :class:`TurnMaybeEnded`: the turn ends now when it is sure
        enough and the user has stayed silent since; otherwise nothing changes."""
        if not self._in_speech or last_voiced_chunk != self._last_voiced:
            return []  # the user went on, or the turn already ended
        if probability < self.config.end_of_turn_threshold:
            return []
        self._in_speech = False
        return [TurnEnded(self._last_voiced)]

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
        self._asked = False
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
            self._asked = False
            if self._paused:
                self._paused = False
                decisions.append(SpeechResumed())
        silence_ms = (self._chunk - self._last_voiced) * cfg.chunk_ms
        length_ms = (self._chunk - self._first_chunk + 1) * cfg.chunk_ms
        voiced_ms = self._voiced_chunks * cfg.chunk_ms
        limit_ms = cfg.silence_limit_ms(voiced_ms)
        if silence_ms >= limit_ms or length_ms >= cfg.max_utterance_ms:
            self._in_speech = False
            decisions.append(TurnEnded(self._last_voiced, forced=silence_ms < limit_ms))
            return decisions
        if (
            not self._paused
            and cfg.speculative_start_ms is not None
            and silence_ms >= cfg.speculative_start_ms
        ):
            self._paused = True
            decisions.append(SpeechPaused(self._last_voiced))
        check_ms = cfg.end_of_turn_check_ms
        if (
            check_ms is not None
            and cfg.asks_model(voiced_ms)
            and not self._asked
            and silence_ms >= check_ms
        ):
            self._asked = True
            decisions.append(TurnMaybeEnded(self._last_voiced))
        return decisions
