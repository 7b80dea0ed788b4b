"""The per-connection turn engine. It owns the conversation state; transports feed it and read
its events."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

from voxgate.core.capabilities import (
    Float32Array,
    StreamingSpeechToText,
    ToolRunner,
    ToolSpec,
    can_stream,
)
from voxgate.core.config import CharacterSettings, TurnSettings
from voxgate.core.errors import AudioFormatError, ErrorCode
from voxgate.core.events import ErrorEvent, Event, SpeechStarted, SpeechStopped, Transcript
from voxgate.core.turns import ServerVAD, TurnDetection
from voxgate.pipeline.audio_input import AudioInput, UtteranceRecorder
from voxgate.pipeline.endpointing import (
    Decision,
    Endpointer,
    EndpointerConfig,
    SpeechBegan,
    SpeechPaused,
    SpeechResumed,
    TurnEnded,
    TurnMaybeEnded,
)
from voxgate.pipeline.engines import Engines
from voxgate.pipeline.history import Conversation
from voxgate.pipeline.outbox import EventOutbox
from voxgate.pipeline.reply import Clock, ReplyContext, ReplyRequest, ReplyRun
from voxgate.pipeline.stt_stream import UtteranceStream

logger = logging.getLogger(__name__)


def _endpointer_config(
    turn: TurnSettings, detection: TurnDetection, chunk_ms: float
) -> EndpointerConfig:
    """Server VAD ends the turn on silence (and may start the reply early); with client commits
    silence never does: the VAD only finds the speech, and a monologue is still cut at
    ``max_utterance_ms``."""
    server_vad = detection if isinstance(detection, ServerVAD) else None
    return EndpointerConfig(
        chunk_ms=chunk_ms,
        threshold=detection.threshold,
        min_speech_ms=turn.min_speech_ms,
        end_of_turn_silence_ms=server_vad.silence_ms if server_vad else math.inf,
        speculative_start_ms=turn.speculative_start_ms if server_vad else None,
        max_utterance_ms=turn.max_utterance_ms,
    )


class TurnSession:
    """Audio and text in, :mod:`voxgate.core.events` out, one turn after another.

    Feed PCM16 frames with :meth:`push_audio` (any size, any rate) or typed text with
    :meth:`say`; read events with ``async for event in session.events()``.
    """

    def __init__(
        self,
        engines: Engines,
        turn: TurnSettings,
        character: CharacterSettings,
        *,
        output_rate_hz: int = 16_000,
        history: Conversation | None = None,
        clock: Clock = time.perf_counter,
        turn_gate: Callable[[], bool] | None = None,
        observer: Callable[[Event], None] | None = None,
        detection: TurnDetection | None = None,
    ) -> None:
        """``detection``: who ends the user's turn (default: the server, after
        ``turn.end_of_turn_silence_ms`` of silence)."""
        self._engines = engines
        self._turn = turn
        self._turn_gate = turn_gate  # False: the device is over its turn rate limit
        self._clock = clock
        self.history = history if history is not None else Conversation(turn.max_history_turns)
        self._outbox = EventOutbox(observer)  # the observer sees every event (persistence)
        self._context = ReplyContext(
            engines=engines,
            turn=turn,
            character=character,
            history=self.history,
            output_rate_hz=output_rate_hz,
            sink=self._emit,
            clock=clock,
        )
        vad = engines.vad
        chunk_ms = vad.chunk_samples / vad.sample_rate_hz * 1000.0
        self._chunk_ms = chunk_ms
        self._input = AudioInput(vad.sample_rate_hz, vad.chunk_samples)
        self._vad = vad.new_stream()
        self.detection = detection or ServerVAD(turn.end_of_turn_silence_ms)
        config = _endpointer_config(turn, self.detection, chunk_ms)
        self._endpointer = Endpointer(
            _with_end_of_turn_model(config, turn, self.detection, engines)
        )
        pre_roll = math.ceil((turn.pre_roll_ms + turn.min_speech_ms) / chunk_ms) + 1
        self._recorder = UtteranceRecorder(pre_roll)
        self._chunk_index = -1
        self._last_voiced_at: float | None = None
        self._started_at = clock()
        self._turn_ids = itertools.count(1)
        self._reply: ReplyRun | None = None
        self._pending: ReplyRun | None = None  # speculative, not yet committed
        self._ignoring = False  # half duplex: the current utterance began over the reply
        self._closed = False
        self._utterance = 0  # counts utterances, so a late partial transcript can be dropped
        self._partial: asyncio.Task[None] | None = None
        self._interrupted: deque[int] = deque(maxlen=16)
        self._partial_from_ms = 0.0  # voiced audio at the last partial transcript
        # A streaming STT hears each utterance as it is spoken (see pipeline/stt_stream.py).
        self._streaming_stt: StreamingSpeechToText | None = (
            engines.stt if can_stream(engines.stt) else None
        )
        self._stream: UtteranceStream | None = None
        self._stream_closers: set[asyncio.Task[None]] = set()
        self._end_of_turn_check: asyncio.Task[None] | None = None

    # -- reading ----------------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Every event, in order, until the session is closed."""
        return self._outbox.events()

    @property
    def undelivered(self) -> int:
        """Events emitted that the reader has not taken yet."""
        return self._outbox.undelivered

    async def next_event(self, timeout_s: float | None = None) -> Event | None:
        """The next event, or None when the session closed (TimeoutError after ``timeout_s``)."""
        return await self._outbox.next(timeout_s)

    def _emit(self, event: Event) -> None:
        self._outbox.emit(event)

    # -- feeding ----------------------------------------------------------------------------

    async def push_audio(self, pcm: bytes, sample_rate_hz: int = 16_000) -> None:
        if self._closed:
            return
        try:
            chunks = self._input.push(pcm, sample_rate_hz)
        except AudioFormatError as exc:
            self._emit(ErrorEvent(ErrorCode.BAD_AUDIO, str(exc)))
            return
        if len(chunks) == 0:
            return
        probabilities = await self._engines.speech_probabilities(self._vad, chunks)
        now = self._clock()
        for chunk, probability in zip(chunks, probabilities, strict=True):
            self._chunk_index += 1
            self._recorder.add(self._chunk_index, chunk)
            if self._stream is not None:
                self._stream.push(chunk)
            was_voiced_at = self._endpointer.voiced_ms
            decisions = self._endpointer.feed(float(probability))
            if self._endpointer.in_speech and self._endpointer.voiced_ms > was_voiced_at:
                self._last_voiced_at = now
            for decision in decisions:
                self._decide(decision, now)
            self._check_barge_in()
            self._maybe_transcribe_partial()

    def commit_turn(self) -> bool:
        """The client says the user has finished (its own VAD, or push-to-talk released).

        False when there was nothing to commit: no speech heard since the last turn."""
        decisions = self._endpointer.commit()
        for decision in decisions:
            self._decide(decision, self._clock())
        return bool(decisions)

    async def say(self, text: str) -> None:
        """A typed turn: answered like a spoken one, interrupting any reply in progress."""
        if self._closed:
            return
        text = text.strip()
        if not text:
            self._emit(ErrorEvent(ErrorCode.BAD_REQUEST, "empty text turn"))
            return
        self.interrupt()
        if self._allowed():
            self._start(ReplyRequest(next(self._turn_ids), text=text), committed=True)

    async def greet(self) -> None:
        """The assistant speaks first: the character's first message, or one the LLM writes."""
        character = self._context.character
        if self._closed or (character.first_message is None and character.greeting_prompt is None):
            return
        request = ReplyRequest(next(self._turn_ids), text=character.first_message, greeting=True)
        self._start(request, committed=True)

    def offer_tools(self, tools: Sequence[ToolSpec], run: ToolRunner) -> bool:
        """The LLM may call ``tools`` (run by ``run``) from the next reply on."""
        self._context.tools.specs = tuple(tools)
        self._context.tools.run = run
        return True

    def interrupt(self) -> None:
        """Stop the reply in progress (a barge-in button, or the client's own VAD)."""
        if self._reply is not None:
            # A reply already produced and played out is over: nothing to interrupt.
            if self._replying():
                self._reply.interrupt()
                self._interrupted.append(self._reply.request.turn_id)
            self._reply = None

    def was_interrupted(self, turn_id: int) -> bool:
        """True once reply ``turn_id`` was cut short: transports drop its audio still queued."""
        return turn_id in self._interrupted

    def report_playout(self, turn_id: int, played_ms: float) -> None:
        """The consumer has played ``played_ms`` of the reply ``turn_id`` to the user."""
        if self._reply is not None and self._reply.request.turn_id == turn_id:
            self._reply.report_playout(played_ms)

    async def wait_idle(self) -> None:
        """Until no reply is being produced (for tools and tests that run one turn at a time)."""
        for run in (self._pending, self._reply):
            if run is not None:
                await asyncio.gather(run.task, return_exceptions=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for run in (self._pending, self._reply):
            if run is not None:
                run.abandon()
                await asyncio.gather(run.task, return_exceptions=True)
        for task in (self._partial, self._end_of_turn_check):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        if self._stream is not None:
            await self._stream.aclose()
        await asyncio.gather(*self._stream_closers, return_exceptions=True)
        self._outbox.end()

    # -- deciding ---------------------------------------------------------------------------

    def _ms(self, chunk_index: int) -> float:
        """Session time at the start of a chunk."""
        return round(chunk_index * self._chunk_ms, 1)

    def _replying(self) -> bool:
        return self._reply is not None and self._reply.active()

    def _decide(self, decision: Decision, now: float) -> None:
        match decision:
            case SpeechBegan(first_chunk):
                self._recorder.start(first_chunk)
                self._ignoring = self._blocked()
                if self._ignoring:
                    return  # half duplex: the user's speech over the reply is not a turn
                self._utterance += 1
                self._partial_from_ms = 0.0
                self._emit(SpeechStarted(at_ms=self._ms(first_chunk)))
                self._open_stream()
            case SpeechPaused(last_voiced):
                if self._pending is None and not self._ignoring and not self._blocked():
                    self._pending = self._start(self._request(last_voiced), committed=False)
            case SpeechResumed():
                if self._pending is not None:
                    self._pending.abandon()
                    self._pending = None
                    if self._stream is not None:
                        self._stream.resume()
            case TurnMaybeEnded(last_voiced):
                self._check_end_of_turn(last_voiced)
            case TurnEnded(last_voiced, forced):
                if self._ignoring or self._blocked():
                    # Even if the reply has ended meanwhile: this speech began over it.
                    self._ignoring = False
                    self._end_stream(None)
                    self._recorder.stop()
                    return
                self._emit(SpeechStopped(at_ms=self._ms(last_voiced + 1)))
                self.interrupt()  # a short utterance that did not barge in still ends the old reply
                pending, self._pending = self._pending, None
                committed: ReplyRun | None = None
                if not self._allowed():
                    if pending is not None:
                        pending.abandon()
                elif pending is not None and not forced:
                    pending.commit()
                    self._reply = committed = pending
                else:
                    if pending is not None:
                        pending.abandon()
                    committed = self._start(self._request(last_voiced), committed=True)
                self._end_stream(committed)
                self._recorder.stop()

    def _check_end_of_turn(self, last_voiced: int) -> None:
        """Ask the end-of-turn model, off the event loop; its answer may end the turn early."""
        if self._ignoring or self._engines.end_of_turn is None:
            return  # speech over the reply is not a turn: let the fallback silence pass
        audio = self._recorder.audio_until(self._chunk_index)
        self._end_of_turn_check = asyncio.create_task(self._end_of_turn(last_voiced, audio))

    async def _end_of_turn(self, last_voiced: int, audio: Float32Array) -> None:
        try:
            probability = await self._engines.end_of_turn_probability(audio)
        except Exception:  # the fixed silence still ends the turn
            logger.warning("end-of-turn model failed", exc_info=True)
            return
        if self._closed:
            return
        for decision in self._endpointer.end_of_turn_probability(last_voiced, probability):
            self._decide(decision, self._clock())

    def _allowed(self) -> bool:
        return self._outbox.turn_allowed(self._turn_gate)

    def _blocked(self) -> bool:
        return self._replying() and not self._turn.barge_in

    def _request(self, last_voiced: int) -> ReplyRequest:
        return ReplyRequest(
            turn_id=next(self._turn_ids),
            audio=self._recorder.audio_until(last_voiced),
            speech_end_at=self._last_voiced_at,
            transcribe=self._stream.transcript() if self._stream is not None else None,
        )

    def _open_stream(self) -> None:
        """Speech began: a streaming STT starts hearing it, the pre-roll first."""
        if self._streaming_stt is None:
            return
        self._end_stream(None)
        utterance = self._utterance

        def interim(text: str) -> None:
            if text and self._partial_wanted(utterance):
                self._emit(Transcript(text, final=False))

        pre_roll = self._recorder.audio_until(self._chunk_index)
        self._stream = UtteranceStream(self._streaming_stt, pre_roll, interim)

    def _end_stream(self, committed: ReplyRun | None) -> None:
        """The turn is over: the stream closes once ``committed`` has its transcript."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        closer = stream.end(committed.task if committed is not None else None)
        self._stream_closers.add(closer)
        closer.add_done_callback(self._stream_closers.discard)

    def _partial_wanted(self, utterance: int) -> bool:
        """A partial transcript of ``utterance`` still says something: it is the current one,
        the user is still talking and no reply is being prepared."""
        still_talking = self._endpointer.in_speech and self._pending is None
        return utterance == self._utterance and still_talking and not self._closed

    def _start(self, request: ReplyRequest, *, committed: bool) -> ReplyRun:
        run = ReplyRun(request, self._context, committed=committed)
        if committed:
            self._reply = run
        return run

    def _maybe_transcribe_partial(self) -> None:
        """While the user talks, transcribe what they said so far every ``partial_interval_ms``
        of speech; one at a time, and only while no reply is being prepared."""
        turn = self._turn
        endpointer = self._endpointer
        if not turn.partial_transcripts or not endpointer.in_speech or self._ignoring:
            return
        if self._streaming_stt is not None:
            return  # the stream's interim results are the partials
        if self._partial is not None and not self._partial.done():
            return
        if self._pending is not None or endpointer.voiced_ms - self._partial_from_ms < (
            turn.partial_interval_ms
        ):
            return
        self._partial_from_ms = endpointer.voiced_ms
        audio = self._recorder.audio_until(self._chunk_index)
        self._partial = asyncio.create_task(self._transcribe_partial(audio, self._utterance))

    async def _transcribe_partial(self, audio: Float32Array, utterance: int) -> None:
        try:
            text = await self._engines.stt.transcribe(audio)
        except Exception:  # a partial is only a preview; the final transcript reports errors
            logger.debug("partial transcription failed", exc_info=True)
            return
        if text and self._partial_wanted(utterance):
            self._emit(Transcript(text, final=False))

    def _check_barge_in(self) -> None:
        if not self._turn.barge_in or self._reply is None:
            return
        if not self._endpointer.in_speech:
            return
        if self._endpointer.voiced_ms >= self._turn.barge_in_min_speech_ms and self._replying():
            self.interrupt()


def _with_end_of_turn_model(
    config: EndpointerConfig, turn: TurnSettings, detection: TurnDetection, engines: Engines
) -> EndpointerConfig:
    """Server-VAD turns ask the end-of-turn model, when one is loaded and wanted; where the
    client commits turns silence never ends one, and neither may the model."""
    wanted = turn.semantic_end_of_turn and isinstance(detection, ServerVAD)
    if engines.end_of_turn is None or not wanted:
        return config
    return dataclasses.replace(
        config,
        end_of_turn_check_ms=turn.end_of_turn_check_ms,
        end_of_turn_threshold=turn.end_of_turn_threshold,
        end_of_turn_fallback_ms=turn.end_of_turn_fallback_ms,
        end_of_turn_min_speech_ms=turn.end_of_turn_min_speech_ms,
    )
