"""Wyoming ``detect``: one connection's audio through the wake-word engine (issue 15's seam,
:class:`voxgate.core.capabilities.WakeWord`), ``detection`` when the word ends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from voxgate.core.audio import StreamResampler
from voxgate.core.capabilities import Int16Array, WakeDetection, WakeWord, WakeWordStream


class NoSuchWakeWord(Exception):
    pass


def choose(engine: WakeWord, asked: Sequence[str] | None, default: str) -> str:
    """The word to listen for: the first one asked for that is installed; none asked, the
    configured default (or the first installed). NoSuchWakeWord if none asked for is here."""
    if asked:
        for name in asked:
            if name in engine.wake_words:
                return name
        raise NoSuchWakeWord(
            f"no wake word of {list(asked)} here (installed: {', '.join(engine.wake_words)})"
        )
    return default if default in engine.wake_words else engine.wake_words[0]


class WakeDetect:
    """One ``detect``: audio in at the client's rate, at most one detection out."""

    def __init__(self, engine: WakeWord, word: str, rate_hz: int) -> None:
        self._engine = engine
        self._stream: WakeWordStream = engine.new_stream(word)
        self._resampler = StreamResampler(rate_hz, engine.sample_rate_hz)
        self.detected = False

    async def hear(self, samples: Int16Array) -> WakeDetection | None:
        """The detection, if the word ended in ``samples`` (and none before)."""
        if self.detected:
            return None  # the client stops sending soon; one detection per request
        audio = self._resampler.process(samples)
        if not audio.size:
            return None
        if self._engine.runs_inline:
            detection = self._stream.process(audio)
        else:
            detection = await asyncio.to_thread(self._stream.process, audio)
        self.detected = detection is not None
        return detection

    def timestamp_ms(self, detection: WakeDetection) -> int:
        """Where the word ended, in milliseconds of the audio this request sent."""
        return round(detection.end_sample * 1000 / self._engine.sample_rate_hz)
