"""What the user has heard of a reply, so that an interrupted reply is remembered as heard."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpokenSentence:
    text: str
    start_ms: float
    duration_ms: float


class Playout:
    """The reply's audio timeline and how far the consumer has played it.

    Consumers that know their playback position report it (``report``); for the others the
    audio is assumed to play in real time from the moment the first chunk was handed over.
    """

    def __init__(self) -> None:
        self.sentences: list[SpokenSentence] = []
        self._reported_ms: float | None = None
        self._started_at: float | None = None

    @property
    def audio_ms(self) -> float:
        if not self.sentences:
            return 0.0
        last = self.sentences[-1]
        return last.start_ms + last.duration_ms

    def add_audio(self, sentence_index: int, text: str, duration_ms: float, now: float) -> None:
        if self._started_at is None:
            self._started_at = now
        if sentence_index < len(self.sentences):
            old = self.sentences[sentence_index]
            self.sentences[sentence_index] = SpokenSentence(
                text, old.start_ms, old.duration_ms + duration_ms
            )
        else:
            self.sentences.append(SpokenSentence(text, self.audio_ms, duration_ms))

    def report(self, played_ms: float) -> None:
        self._reported_ms = max(0.0, played_ms)

    def heard_ms(self, now: float) -> float:
        if self._reported_ms is not None:
            return min(self._reported_ms, self.audio_ms)
        if self._started_at is None:
            return 0.0
        return min((now - self._started_at) * 1000.0, self.audio_ms)

    def finished(self, now: float) -> bool:
        return self.heard_ms(now) >= self.audio_ms

    def heard_text(self, now: float) -> str:
        """Whole sentences heard, plus the words of the current one in proportion to its audio."""
        heard = self.heard_ms(now)
        parts: list[str] = []
        for sentence in self.sentences:
            if heard >= sentence.start_ms + sentence.duration_ms:
                parts.append(sentence.text)
                continue
            if heard > sentence.start_ms and sentence.duration_ms > 0:
                words = sentence.text.split()
                fraction = (heard - sentence.start_ms) / sentence.duration_ms
                cut = int(len(words) * fraction)
                if cut:
                    parts.append(" ".join(words[:cut]))
            break
        return " ".join(parts)
