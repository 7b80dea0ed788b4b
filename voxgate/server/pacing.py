"""Sending reply audio just ahead of real time.

A device buffers what it receives; everything sent ahead of playback is audio that a barge-in or
SESSION.END cannot take back, and memory held in socket buffers. So the transport sends at most
``prebuffer_ms`` ahead of the playback clock, which starts with the reply's first audio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class AudioPacer:
    def __init__(self, prebuffer_ms: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.prebuffer_ms = prebuffer_ms
        self._clock = clock
        self._started_at: float | None = None
        self.sent_ms = 0.0

    def reset(self) -> None:
        """A new reply: its playback clock starts with its first audio."""
        self._started_at = None
        self.sent_ms = 0.0

    async def before_send(self, audio_ms: float) -> None:
        """Wait until ``audio_ms`` more audio may go out."""
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
        ahead_ms = self.sent_ms - (now - self._started_at) * 1000.0
        if ahead_ms > self.prebuffer_ms:
            await asyncio.sleep((ahead_ms - self.prebuffer_ms) / 1000.0)
        self.sent_ms += audio_ms
