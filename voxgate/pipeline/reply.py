"""One assistant reply: transcript → LLM (streamed) → sentences → TTS → audio events.

A reply may start speculatively, during the end-of-turn silence wait: its events are held until
the session commits it, and dropped if the user goes on talking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from voxgate.core.audio import resample
from voxgate.core.capabilities import ChatMessage, Float32Array, ToolCall, ToolRunner, ToolSpec
from voxgate.core.config import CharacterSettings, TurnSettings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    LateUsage,
    ReplyAudio,
    ReplyStarted,
    ReplyTextDelta,
    SessionEndRequested,
    Transcript,
    TurnDone,
    TurnTimings,
)
from voxgate.core.usage import UsageMeter, metering
from voxgate.pipeline.engines import Engines
from voxgate.pipeline.history import Conversation, Exchange
from voxgate.pipeline.playout import Playout
from voxgate.pipeline.sentences import SentenceSplitter, speakable

Clock = Callable[[], float]
"""Seconds on a monotonic clock."""

logger = logging.getLogger(__name__)

ERROR_REPLY_TEXT = "Sorry, I can't answer right now."
MAX_TOOL_ROUNDS = 3
"""LLM calls of one reply that may call the session's tools (then one more, to answer)."""


@dataclass
class SessionTools:
    """The tools a session offers its LLM besides voxgate's own (a device's, over MCP), and
    how to run them; none until the transport offers some."""

    specs: tuple[ToolSpec, ...] = ()
    run: ToolRunner | None = None

    def offers(self, name: str) -> bool:
        return self.run is not None and any(spec.name == name for spec in self.specs)


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    turn_id: int
    audio: Float32Array | None = None
    """A spoken turn: the utterance at the STT's rate."""
    text: str | None = None
    """A typed turn, or the fixed greeting when ``greeting`` is set."""
    speech_end_at: float | None = None
    """Clock time of the last voiced sample (spoken turns)."""
    greeting: bool = False
    transcribe: Callable[[Float32Array], Awaitable[str]] | None = None
    """How to transcribe ``audio``: a streaming STT's finalized text (falling back to the batch
    STT itself); None: the STT's ``transcribe``."""


@dataclass(frozen=True, slots=True)
class ReplyContext:
    engines: Engines
    turn: TurnSettings
    character: CharacterSettings
    history: Conversation
    output_rate_hz: int
    sink: Callable[[Event], None]
    clock: Clock = time.perf_counter
    tools: SessionTools = field(default_factory=SessionTools)


class ReplyRun:
    def __init__(self, request: ReplyRequest, context: ReplyContext, *, committed: bool) -> None:
        self.request = request
        self._ctx = context
        self.playout = Playout()
        self.user_text: str | None = request.text if not request.greeting else None
        self.closed = False
        self._held: list[Event] = []
        self._committed_at: float | None = context.clock() if committed else None
        self._committed = asyncio.Event()
        if committed:
            self._committed.set()
        self._spoken: list[str] = []
        self._end_session = False  # the LLM called end_session
        self._recorded = False
        self._done_sent = False
        self._stamps: dict[str, float] = {}
        self._created_at = context.clock()
        self._meter = UsageMeter()
        self._usage_reported = 0  # meter records already sent in the TurnDone
        self.task = asyncio.create_task(self._guarded(), name=f"voxgate-reply-{request.turn_id}")

    @property
    def committed(self) -> bool:
        return self._committed.is_set()

    def commit(self) -> None:
        if self.closed or self.committed:
            return
        self._committed_at = self._ctx.clock()
        self._committed.set()
        held, self._held = self._held, []
        for event in held:
            self._forward(event)

    def abandon(self) -> None:
        """A speculative reply whose turn went on: forget it without a trace."""
        self.closed = True
        self.task.cancel()

    def active(self) -> bool:
        """Still being produced or (as far as we know) still playing."""
        if self.closed or not self.committed:
            return False
        return not self.task.done() or not self.playout.finished(self._ctx.clock())

    def report_playout(self, played_ms: float) -> None:
        self.playout.report(played_ms)

    def interrupt(self) -> None:
        """Barge-in: stop now and remember only what the user heard."""
        if self.closed:
            return
        self.closed = True
        self.task.cancel()
        if not self.committed:
            return
        heard = self.playout.heard_text(self._ctx.clock())
        exchange = Exchange(self.user_text, heard, interrupted=True)
        if self._recorded:
            self._ctx.history.amend_last(exchange)
        elif self.user_text is not None or self.request.greeting:
            self._ctx.history.record(exchange)
        self._ctx.sink(Interrupted(self.request.turn_id, heard))
        if not self._done_sent:
            self._send_done(heard, interrupted=True)
            # The cancelled LLM and TTS calls bill what they did as they unwind.
            self.task.add_done_callback(lambda _: self._report_late_usage())

    # -- the work -------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if self.closed:
            return
        if self.committed:
            self._forward(event)
        else:
            self._held.append(event)

    def _forward(self, event: Event) -> None:
        if isinstance(event, ReplyAudio):
            self.playout.add_audio(
                event.sentence_index, event.sentence_text, event.duration_ms, self._ctx.clock()
            )
        self._ctx.sink(event)

    def _stamp(self, name: str) -> None:
        self._stamps.setdefault(name, self._ctx.clock())

    async def _guarded(self) -> None:
        """A bug in an engine ends this reply with an error event, never the session."""
        try:
            with metering(self._meter):
                await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("reply %d failed", self.request.turn_id)
            self._emit(ErrorEvent(ErrorCode.INTERNAL, f"reply failed: {exc}", self.request.turn_id))
            await self._committed.wait()
            if not self._done_sent and not self.closed:
                self._send_done(" ".join(self._spoken), interrupted=False)
            self.closed = True

    async def _run(self) -> None:
        request = self.request
        if request.audio is not None:
            text = await self._transcribe(request.audio)
            if text is None:
                return
            self.user_text = text
        messages = self._messages()
        self._emit(ReplyStarted(request.turn_id))
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(sentences))
        try:
            if messages is None:  # a fixed greeting: nothing to ask the LLM
                self._emit(ReplyTextDelta(request.turn_id, request.text or ""))
                await sentences.put(speakable(request.text or ""))
            else:
                await self._think(messages, sentences)
            await sentences.put(None)
            await speaker
        finally:
            speaker.cancel()
        await self._committed.wait()
        reply_text = " ".join(self._spoken)
        self._ctx.history.record(Exchange(self.user_text, reply_text))
        self._recorded = True
        self._send_done(reply_text, interrupted=False)
        if self._end_session:
            self._ctx.sink(SessionEndRequested(self.request.turn_id))

    async def _transcribe(self, audio: Float32Array) -> str | None:
        started = self._ctx.clock()
        try:
            transcribe = self.request.transcribe or self._ctx.engines.stt.transcribe
            text = (await transcribe(audio)).strip()
        except Exception as exc:
            await self._fail(self._error(exc))
            return None
        self._stamps["stt"] = (self._ctx.clock() - started) * 1000.0
        if not text:
            await self._fail(
                ErrorEvent(ErrorCode.NO_SPEECH, "heard nothing intelligible", self.request.turn_id)
            )
            return None
        self._emit(Transcript(text, final=True))
        return text

    async def _fail(self, error: ErrorEvent) -> None:
        """End the turn without a reply; the error goes out once the turn is committed."""
        self._emit(error)
        await self._committed.wait()
        self.closed = True

    def _messages(self) -> list[ChatMessage] | None:
        character = self._ctx.character
        history = self._ctx.history
        if not self.request.greeting:
            return history.messages(character.system_prompt, self.user_text)
        if self.request.text:
            return None
        return [
            ChatMessage("system", character.system_prompt),
            ChatMessage(
                "user", character.greeting_prompt or "Greet the user in one short sentence."
            ),
        ]

    async def _think(
        self, messages: list[ChatMessage], sentences: asyncio.Queue[str | None]
    ) -> None:
        turn = self._ctx.turn
        splitter = SentenceSplitter(turn.first_clause_min_words, turn.first_piece_max_words)
        self._stamp("llm_start")
        wrote_any = False
        tools = self._ctx.tools
        for round_index in range(MAX_TOOL_ROUNDS + 1):
            # The last round offers no tools: it must answer.
            offered = tools.specs if round_index < MAX_TOOL_ROUNDS else ()
            calls: list[ToolCall] = []
            written: list[str] = []
            try:
                async for delta in self._ctx.engines.llm.stream_reply(messages, offered):
                    if isinstance(delta, ToolCall):
                        if tools.offers(delta.name):
                            calls.append(delta)
                        self._end_session = self._end_session or delta.name == "end_session"
                        continue
                    self._stamp("llm_first_token")
                    wrote_any = wrote_any or bool(delta.strip())
                    written.append(delta)
                    self._emit(ReplyTextDelta(self.request.turn_id, delta))
                    for sentence in splitter.push(delta):
                        self._stamp("first_sentence")
                        await sentences.put(sentence)
            except Exception as exc:
                self._emit(self._error(exc))
                if not wrote_any:
                    await sentences.put(ERROR_REPLY_TEXT)
                    return
                break
            if not calls:
                break
            messages = [*messages, *await self._run_tools(calls, "".join(written))]
        for sentence in splitter.flush():
            self._stamp("first_sentence")
            await sentences.put(sentence)
        if not wrote_any and self._end_session:
            await sentences.put(self._ctx.turn.goodbye_text)
        elif not wrote_any:
            self._emit(
                ErrorEvent(ErrorCode.LLM_EMPTY, "the LLM returned no text", self.request.turn_id)
            )
            await sentences.put(self._ctx.turn.empty_reply_text)

    async def _run_tools(self, calls: list[ToolCall], written: str) -> list[ChatMessage]:
        """Runs the session's tools the LLM called, in order; what the LLM is told next. Plain
        messages, not OpenAI's tool-call turns, so that every engine can read them."""
        run = self._ctx.tools.run
        assert run is not None, "only offered tools are called"
        results = []
        for call in calls:
            arguments = json.dumps(dict(call.arguments), ensure_ascii=False)
            results.append(f"{call.name}({arguments}) returned: {await run(call)}")
        told = [ChatMessage("assistant", written)] if written.strip() else []
        return [
            *told,
            ChatMessage(
                "system",
                "You called tools. "
                + " ".join(results)
                + " Now tell the user, briefly, what happened; call another tool only if the "
                "request still needs one.",
            ),
        ]

    async def _speak(self, sentences: asyncio.Queue[str | None]) -> None:
        tts = self._ctx.engines.tts
        index = 0
        while (sentence := await sentences.get()) is not None:
            if not sentence:
                continue
            self._stamp("tts_start")
            first_chunk = True
            try:
                async for audio in tts.synthesize(sentence, self._ctx.character.voice):
                    self._stamp("first_audio")
                    pcm = resample(audio, tts.sample_rate_hz, self._ctx.output_rate_hz)
                    self._emit(
                        ReplyAudio(
                            turn_id=self.request.turn_id,
                            sentence_index=index,
                            sentence_text=sentence,
                            sentence_start=first_chunk,
                            pcm=np.ascontiguousarray(pcm, dtype="<i2").tobytes(),
                            sample_rate_hz=self._ctx.output_rate_hz,
                        )
                    )
                    first_chunk = False
            except Exception as exc:
                self._emit(self._error(exc))
                continue
            self._spoken.append(sentence)
            index += 1

    def _error(self, exc: Exception) -> ErrorEvent:
        """An engine's failure as an event. Anything but a ProviderError is a bug: logged in full."""
        if isinstance(exc, ProviderError):
            return ErrorEvent(exc.code, str(exc), self.request.turn_id)
        logger.error("engine failed in turn %d", self.request.turn_id, exc_info=exc)
        return ErrorEvent(ErrorCode.INTERNAL, f"engine failed: {exc}", self.request.turn_id)

    def _report_late_usage(self) -> None:
        late = tuple(self._meter.records[self._usage_reported :])
        if late:
            self._ctx.sink(LateUsage(self.request.turn_id, late))

    def _send_done(self, reply_text: str, *, interrupted: bool) -> None:
        self._done_sent = True
        self._usage_reported = len(self._meter.records)
        self._ctx.sink(
            TurnDone(
                turn_id=self.request.turn_id,
                user_text=self.user_text or "",
                reply_text=reply_text,
                interrupted=interrupted,
                timings=self._timings(),
                usage=tuple(self._meter.records),
                generated_text=" ".join(self._spoken),
            )
        )

    def _timings(self) -> TurnTimings:
        s = self._stamps

        def between(start: float | None, end: float | None) -> float | None:
            if start is None or end is None:
                return None
            return round((end - start) * 1000.0, 1)

        committed = self._committed_at
        first_audio = s.get("first_audio")
        heard_at = max(first_audio, committed) if first_audio and committed else None
        speech_end = self.request.speech_end_at
        return TurnTimings(
            end_of_turn_wait_ms=between(speech_end, committed),
            stt_ms=round(s["stt"], 1) if "stt" in s else None,
            llm_first_token_ms=between(s.get("llm_start"), s.get("llm_first_token")),
            first_sentence_ms=between(s.get("llm_start"), s.get("first_sentence")),
            tts_first_audio_ms=between(s.get("tts_start"), first_audio),
            speech_end_to_first_audio_ms=between(speech_end, heard_at),
            turn_end_to_first_audio_ms=between(committed, heard_at),
            speculative=committed is not None and self._created_at < committed,
        )
