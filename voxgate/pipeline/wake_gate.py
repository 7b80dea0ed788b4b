"""A session that listens for its wake word first: the privacy gate in front of a voice session.

While it waits, the device's audio goes only to the wake-word engine (and a short ring buffer of
the last ``pre_roll_ms``): the session inside hears none of it, so nothing is transcribed, stored
or billed, and no VAD or STT runs. When the word is heard the gate says so (:class:`WakeWordHeard`)
and the audio from then on (with the pre-roll) goes to the session inside. It waits again after the
reply (``follow_up = "turn"``) or after ``silence_s`` without speech or reply (``"conversation"``).

Silence is counted in the device's audio, not wall time (a stalled stream is not silence), and
only while nothing is happening: from the session's ``speech.started`` until the transport takes
that turn's ``turn.done`` (or error) nothing is counted; the transport sends reply audio paced, so
that is about when the reply has played.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import AsyncIterator, Sequence

import numpy as np

from voxgate.core.audio import StreamResampler
from voxgate.core.capabilities import ToolRunner, ToolSpec, WakeWord, WakeWordStream
from voxgate.core.errors import AudioFormatError, ErrorCode
from voxgate.core.events import (
    ErrorEvent,
    Event,
    ReplyStarted,
    SpeechStarted,
    SpeechStopped,
    TurnDone,
    WakeWordHeard,
    WakeWordWaiting,
)
from voxgate.core.listening import FollowUp, WakeListening
from voxgate.pipeline.history import Conversation
from voxgate.pipeline.outbox import EventOutbox
from voxgate.pipeline.voice_session import VoiceSession


class WakeGatedSession:
    """A :class:`VoiceSession` that passes audio to ``inner`` only after the wake word."""

    def __init__(self, inner: VoiceSession, engine: WakeWord, listening: WakeListening) -> None:
        self.inner = inner
        self.listening = listening
        self._engine = engine
        self._stream: WakeWordStream = engine.new_stream(listening.wake_word)
        self._resampler: StreamResampler | None = None
        self._pre_roll: deque[tuple[bytes, int]] = deque()  # (pcm, samples), newest last
        self._pre_roll_samples = 0
        self._rate_hz = 0
        self._odd = b""  # a frame's odd byte waits for the next: samples stay aligned
        self.waiting = True
        self._audio_s = 0.0  # the session's audio so far (its clock, as at_ms elsewhere)
        # The session inside hears only what follows a wake word: its clock runs behind ours
        # by the audio it did not hear. Its at_ms are moved onto ours (the device's) by this.
        self._inner_s = 0.0
        self._offset_s = 0.0
        self._fed = 0  # samples the stream has been given: its detections count in these
        self._idle_s = 0.0
        self._speaking = False
        self._replying = False
        self._out = EventOutbox()
        self._forward = asyncio.create_task(self._forward_events())

    @property
    def history(self) -> Conversation:
        return self.inner.history

    @history.setter
    def history(self, value: Conversation) -> None:
        self.inner.history = value

    # -- events: the inner session's, and the gate's own, in order ---------------------------

    async def _forward_events(self) -> None:
        async for event in self.inner.events():
            self._track(event)
            if isinstance(event, SpeechStarted | SpeechStopped):
                event = dataclasses.replace(
                    event, at_ms=round(event.at_ms + self._offset_s * 1000.0, 1)
                )
            self._out.emit(event)
        self._out.end()

    def _track(self, event: Event) -> None:
        """Speech and replies starting, as the session inside says so (not paced)."""
        match event:
            case SpeechStarted():
                self._speaking, self._idle_s = True, 0.0
            case SpeechStopped() | ReplyStarted():
                # The turn is being answered: busy until its turn.done (or error) is taken.
                self._speaking, self._replying = False, True

    async def events(self) -> AsyncIterator[Event]:
        while (event := await self.next_event()) is not None:
            yield event

    async def next_event(self, timeout_s: float | None = None) -> Event | None:
        event = await self._out.next(timeout_s)
        if event is not None:
            self._follow(event)
        return event

    @property
    def undelivered(self) -> int:
        return self._out.undelivered + self.inner.undelivered

    def _follow(self, event: Event) -> None:
        """A reply is over when the transport takes its end: it sends reply audio paced, so
        that is about when the device has played it."""
        if isinstance(event, TurnDone | ErrorEvent):
            self._replying, self._idle_s = False, 0.0
            if isinstance(event, TurnDone) and self.listening.follow_up == FollowUp.TURN:
                self._wait_again("turn_done")

    def _wait_again(self, reason: str) -> None:
        if self.waiting:
            return
        self.waiting = True
        self._speaking = self._replying = False
        self._stream.reset()
        self._out.emit(WakeWordWaiting(reason))

    # -- audio -------------------------------------------------------------------------------

    async def push_audio(self, pcm: bytes, sample_rate_hz: int = 16_000) -> None:
        data = self._odd + pcm
        whole = len(data) // 2 * 2
        pcm, self._odd = data[:whole], data[whole:]
        started_s = self._audio_s
        self._audio_s += len(pcm) // 2 / sample_rate_hz
        if not self.waiting:
            await self._to_inner(pcm, sample_rate_hz)
            await asyncio.sleep(0)  # what the session said about this audio is tracked first
            self._count_silence(len(pcm) // 2 / sample_rate_hz)
            return
        samples = np.frombuffer(pcm, dtype="<i2")
        self._keep(pcm, len(samples), sample_rate_hz)
        if self._resampler is None or self._resampler.from_hz != sample_rate_hz:
            try:
                self._resampler = StreamResampler(sample_rate_hz, self._engine.sample_rate_hz)
            except AudioFormatError as exc:  # as the session inside would say it
                self._out.emit(ErrorEvent(ErrorCode.BAD_AUDIO, str(exc)))
                return
        heard = self._resampler.process(samples)
        fed_before, self._fed = self._fed, self._fed + len(heard)
        if self._engine.runs_inline:  # declared by the engine: cheap enough for the loop
            detection = self._stream.process(heard)
        else:
            detection = await asyncio.to_thread(self._stream.process, heard)
        if detection is None:
            return
        into_frame_s = (detection.end_sample - fed_before) / self._engine.sample_rate_hz
        self._open(detection.wake_word, max(0.0, started_s + into_frame_s))
        # The question may follow the word without a pause: the session hears the last moments.
        pre_roll, self._pre_roll = b"".join(p for p, _ in self._pre_roll), deque()
        self._pre_roll_samples = 0
        self._offset_s = self._audio_s - len(pre_roll) / 2 / sample_rate_hz - self._inner_s
        await self._to_inner(pre_roll, sample_rate_hz)

    async def _to_inner(self, pcm: bytes, sample_rate_hz: int) -> None:
        self._inner_s += len(pcm) / 2 / sample_rate_hz
        await self.inner.push_audio(pcm, sample_rate_hz)

    def heard(self, wake_word: str) -> None:
        """The device heard its wake word itself (a board with its own engine): listen now."""
        if self.waiting:
            self._pre_roll.clear()
            self._pre_roll_samples = 0
            self._offset_s = self._audio_s - self._inner_s
            self._open(wake_word, self._audio_s)

    def _open(self, wake_word: str, at_s: float) -> None:
        self.waiting, self._idle_s = False, 0.0
        self._out.emit(WakeWordHeard(wake_word, round(at_s * 1000.0, 1)))

    def _keep(self, pcm: bytes, samples: int, rate_hz: int) -> None:
        """The last ``pre_roll_ms`` of audio as sent (whole frames, so a little more)."""
        if rate_hz != self._rate_hz:
            self._pre_roll.clear()
            self._pre_roll_samples, self._rate_hz = 0, rate_hz
        self._pre_roll.append((pcm, samples))
        self._pre_roll_samples += samples
        limit = self.listening.pre_roll_ms * rate_hz // 1000
        while self._pre_roll and self._pre_roll_samples - self._pre_roll[0][1] >= limit:
            self._pre_roll_samples -= self._pre_roll.popleft()[1]

    def _count_silence(self, seconds: float) -> None:
        if self.listening.follow_up != FollowUp.CONVERSATION:
            return
        if self._speaking or self._replying:
            return
        self._idle_s += seconds
        if self._idle_s >= self.listening.silence_s:
            self._wait_again("silence")

    # -- the rest goes to the session inside ------------------------------------------------

    def commit_turn(self) -> bool:
        return False if self.waiting else self.inner.commit_turn()

    async def say(self, text: str) -> None:
        """A typed turn: a deliberate act, answered whether or not the word was heard."""
        self._idle_s = 0.0
        await self.inner.say(text)

    async def greet(self) -> None:
        await self.inner.greet()

    def offer_tools(self, tools: Sequence[ToolSpec], run: ToolRunner) -> bool:
        return self.inner.offer_tools(tools, run)

    def interrupt(self) -> None:
        self.inner.interrupt()

    def was_interrupted(self, turn_id: int) -> bool:
        return self.inner.was_interrupted(turn_id)

    def report_playout(self, turn_id: int, played_ms: float) -> None:
        self._idle_s = 0.0  # the reply is still playing
        self.inner.report_playout(turn_id, played_ms)

    async def wait_idle(self) -> None:
        await self.inner.wait_idle()

    async def close(self) -> None:
        await self.inner.close()
        await self._forward
