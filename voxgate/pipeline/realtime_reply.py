"""One reply of a :class:`~voxgate.pipeline.realtime_session.RealtimeSession`: its audio at the
device's rate, what was played of it, its text, its usage and timings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from voxgate.core.audio import StreamResampler
from voxgate.core.capabilities import Int16Array
from voxgate.core.config import Price
from voxgate.core.events import ReplyAudio, TurnDone, TurnTimings
from voxgate.core.usage import EngineUsage
from voxgate.pipeline.metering import cost_usd
from voxgate.pipeline.playout import Playout
from voxgate.providers.openai_realtime import RATE_HZ, OpenAIRealtimeSettings, TokenUsage

Clock = Callable[[], float]
"""Seconds on a monotonic clock."""


def pcm_bytes(samples: Int16Array) -> bytes:
    return np.ascontiguousarray(samples, dtype="<i2").tobytes()


@dataclass(slots=True)
class UserTurn:
    """A spoken turn the user ended (the server's VAD, or the client's commit)."""

    item_id: str | None
    """The user's audio item upstream (its transcript comes under this id)."""
    speech_ms: float
    speech_end_at: float | None
    """Clock time the last voiced audio was pushed."""
    turn_end_at: float
    """Clock time the turn was known to be over."""
    answered: bool = False


class RealtimeReply:
    """One response upstream, as one voxgate turn: the whole reply is one "sentence"."""

    def __init__(
        self,
        turn_id: int,
        settings: OpenAIRealtimeSettings,
        prices: Mapping[str, Price],
        output_rate_hz: int,
        clock: Clock,
        *,
        user: UserTurn | None = None,
        user_text: str | None = None,
        greeting: bool = False,
    ) -> None:
        self.turn_id = turn_id
        self.user = user
        self.user_text = user_text
        """Typed turns: the text. Spoken ones: the transcript, once in."""
        self.greeting = greeting
        self._settings = settings
        self._prices = prices
        self._rate_hz = output_rate_hz
        self._clock = clock
        self._resampler = StreamResampler(RATE_HZ, output_rate_hz)
        self._odd_byte = b""
        self._text: list[str] = []
        self._first_chunk = True
        self.requested_at = clock()
        self.started_at: float | None = None
        self.first_audio_at: float | None = None
        self.response_id: str | None = None
        self.item_id: str | None = None
        """The assistant's audio item upstream (what a barge-in truncates)."""
        self.audio_ms = 0.0
        """Reply audio received so far."""
        self.playout = Playout()
        self.usage: tuple[EngineUsage, ...] = ()
        self.heard_text = ""
        self.response_done = False
        self.interrupted = False
        self.refused = False
        """Over the turn rate limit: cancelled at once, never shown."""
        self.recorded = False
        self.done_sent = False
        self.waiting = False
        """Its TurnDone waits for the user's transcript..."""
        self.transcript_late = False
        """...which has not come in time."""

    @property
    def live(self) -> bool:
        """Its audio and text still go to the device."""
        return not (self.interrupted or self.refused or self.done_sent)

    @property
    def generated_text(self) -> str:
        return "".join(self._text).strip()

    def active(self, now: float) -> bool:
        """Asked for, being produced, or (as far as we know) still playing."""
        if self.interrupted or self.refused:
            return False
        return not self.response_done or not self.playout.finished(now)

    # -- audio and text ---------------------------------------------------------------------

    def add_audio(self, item_id: str, pcm: bytes) -> list[ReplyAudio]:
        """A delta of 24 kHz PCM16 as the device's audio (none while the resampler fills)."""
        self.item_id = item_id
        data = self._odd_byte + pcm
        usable = len(data) - len(data) % 2
        self._odd_byte = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2")
        self.audio_ms += samples.size * 1000.0 / RATE_HZ
        return self._audio(self._resampler.process(samples))

    def flush(self) -> list[ReplyAudio]:
        """The end of the reply: what the resampler still holds; the playout gets the full text."""
        events = self._audio(self._resampler.process(np.zeros(0, dtype=np.int16), last=True))
        self._retext()
        return events

    def add_text(self, delta: str) -> None:
        self._text.append(delta)
        self._retext()

    def _retext(self) -> None:
        if self.playout.sentences:  # the playout's clock starts with the first audio, not text
            first = self.playout.sentences[0]
            self.playout.sentences[0] = replace(first, text=self.generated_text)

    def _audio(self, samples: Int16Array) -> list[ReplyAudio]:
        if samples.size == 0:
            return []
        now = self._clock()
        if self.first_audio_at is None:
            self.first_audio_at = now
        event = ReplyAudio(
            turn_id=self.turn_id,
            sentence_index=0,
            sentence_text=self.generated_text,
            sentence_start=self._first_chunk,
            pcm=pcm_bytes(samples),
            sample_rate_hz=self._rate_hz,
        )
        self._first_chunk = False
        self.playout.add_audio(0, self.generated_text, event.duration_ms, now)
        return [event]

    # -- the turn's record ------------------------------------------------------------------

    def bill(self, tokens: TokenUsage) -> None:
        """The response's token counts: text and audio tokens are priced apart (price keys
        ``provider/model`` and ``provider/model:audio``), the input transcription per minute."""
        settings = self._settings
        provider, model = settings.provider, settings.model
        compute_s = self._clock() - (self.started_at or self.requested_at)
        records: list[EngineUsage] = []
        for name, tokens_in, tokens_out in (
            (model, tokens.text_in, tokens.text_out),
            (f"{model}:audio", tokens.audio_in, tokens.audio_out),
        ):
            if tokens_in or tokens_out:
                usage = EngineUsage(
                    "llm",
                    provider,
                    name,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    compute_s=0.0 if records else compute_s,
                )
                records.append(self._priced(usage, f"{provider}/{name}"))
        transcriber = settings.transcription_model
        if transcriber and self.user is not None and self.user.speech_ms > 0:
            usage = EngineUsage("stt", provider, transcriber, audio_s=self.user.speech_ms / 1000)
            # OpenAI bills it as its transcription model: the "openai/..." price applies too.
            records.append(
                self._priced(usage, f"{provider}/{transcriber}", f"openai/{transcriber}")
            )
        self.usage = tuple(records)

    def _priced(self, usage: EngineUsage, *keys: str) -> EngineUsage:
        price = next((self._prices[key] for key in keys if key in self._prices), None)
        if price is None:
            return usage
        return replace(usage, cost_usd=round(cost_usd(usage, price), 8))

    def turn_done(self) -> TurnDone:
        self.done_sent = True
        return TurnDone(
            turn_id=self.turn_id,
            user_text=self.user_text or "",
            reply_text=self.heard_text if self.interrupted else self.generated_text,
            interrupted=self.interrupted,
            timings=self._timings(),
            usage=self.usage,
            generated_text=self.generated_text,
        )

    def _timings(self) -> TurnTimings:
        def between(start: float | None, end: float | None) -> float | None:
            if start is None or end is None:
                return None
            return round((end - start) * 1000.0, 1)

        user = self.user
        speech_end = user.speech_end_at if user is not None else None
        turn_end = user.turn_end_at if user is not None else self.requested_at
        return TurnTimings(
            end_of_turn_wait_ms=between(speech_end, turn_end if user is not None else None),
            speech_end_to_first_audio_ms=between(speech_end, self.first_audio_at),
            turn_end_to_first_audio_ms=between(turn_end, self.first_audio_at),
        )
