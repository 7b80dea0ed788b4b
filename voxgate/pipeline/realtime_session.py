"""Speech-to-speech: a session whose replies come from the OpenAI Realtime API instead of the
VAD → STT → LLM → TTS cascade. Same interface and events as
:class:`~voxgate.pipeline.session.TurnSession` (see :class:`~voxgate.pipeline.voice_session.VoiceSession`).

Each session opens its own upstream WebSocket and never shares it. The server's VAD ends the
user's turns and starts the replies; barge-in stays here, where the playout is known: the reply is
cancelled and its audio item truncated at what the user heard. A lost upstream connection ends the
session (with an error event): it is not silently reopened, since the server-side conversation
would be gone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from voxgate.core.audio import StreamResampler, check_rate
from voxgate.core.capabilities import ToolRunner, ToolSpec
from voxgate.core.config import CharacterSettings, Price, TurnSettings
from voxgate.core.errors import AudioFormatError, ErrorCode, VoxgateError
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    ReplyStarted,
    ReplyTextDelta,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from voxgate.core.turns import ClientCommit, TurnDetection
from voxgate.pipeline.history import Conversation, Exchange
from voxgate.pipeline.outbox import EventOutbox
from voxgate.pipeline.realtime_reply import Clock, RealtimeReply, UserTurn, pcm_bytes
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.providers import openai_realtime as wire

logger = logging.getLogger(__name__)

_MAX_BACKLOG = 500
"""Client events waiting for the socket (~10 s of audio); beyond that, input audio is dropped."""
_MAX_TRANSCRIPTS = 64


class RealtimeSession:
    """Audio and text in, :mod:`voxgate.core.events` out, through one OpenAI Realtime socket.

    The socket opens in the background as the session is created (audio pushed meanwhile is
    sent once it is open); a failure to open it is an :class:`ErrorEvent`, then the end.
    """

    def __init__(
        self,
        settings: wire.OpenAIRealtimeSettings,
        turn: TurnSettings,
        character: CharacterSettings,
        *,
        output_rate_hz: int = 16_000,
        history: Conversation | None = None,
        prices: Mapping[str, Price] | None = None,
        clock: Clock = time.perf_counter,
        turn_gate: Callable[[], bool] | None = None,
        observer: Callable[[Event], None] | None = None,
        detection: TurnDetection | None = None,
    ) -> None:
        self._settings = settings
        self.detection = detection or wire.default_detection(settings)
        # Without server VAD, audio since the last commit is the user's turn in progress.
        self._client_commits = isinstance(self.detection, ClientCommit)
        self._turn = turn
        self._character = character
        self._output_rate_hz = output_rate_hz
        self._prices = prices or {}
        self._clock = clock
        self._turn_gate = turn_gate
        self.history = history if history is not None else Conversation(turn.max_history_turns)
        self._events = EventOutbox(observer)
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # to upstream
        self._turn_ids = itertools.count(1)
        self._odd_byte = b""
        self._resampler: StreamResampler | None = None
        self._sent_ms = 0.0  # input audio sent upstream so far
        self._pushes: deque[tuple[float, float]] = deque(maxlen=4096)  # (sent_ms, clock)
        self._in_speech = False
        self._speech_start_ms = 0.0
        self._user: UserTurn | None = None  # the last turn the user ended
        self._requested: dict[int, RealtimeReply] = {}  # asked for, not yet created
        self._responses: dict[str, RealtimeReply] = {}  # created, TurnDone not yet sent
        self._reply: RealtimeReply | None = None  # the newest reply
        self._transcripts: dict[str, str] = {}
        self._partials: dict[str, str] = {}
        self._failed_items: set[str] = set()
        self._interrupted: deque[int] = deque(maxlen=16)
        self._idle = asyncio.Event()
        self._idle.set()
        self._timers: list[asyncio.TimerHandle] = []
        self._closed = False
        self._dropping = False
        self._task = asyncio.create_task(self._run(), name="voxgate-realtime")

    # -- reading ----------------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Every event, in order, until the session is closed or its upstream is lost."""
        return self._events.events()

    async def next_event(self, timeout_s: float | None = None) -> Event | None:
        """The next event, or None once the session ended (TimeoutError after ``timeout_s``)."""
        return await self._events.next(timeout_s)

    @property
    def undelivered(self) -> int:
        """Events emitted that the reader has not taken yet."""
        return self._events.undelivered

    def _emit(self, event: Event) -> None:
        self._events.emit(event)

    def _send(self, event: dict[str, Any]) -> None:
        if not self._closed:
            self._outbox.put_nowait(event)

    # -- feeding ----------------------------------------------------------------------------

    async def push_audio(self, pcm: bytes, sample_rate_hz: int = 16_000) -> None:
        if self._closed:
            return
        try:
            check_rate(sample_rate_hz)
        except AudioFormatError as exc:
            self._emit(ErrorEvent(ErrorCode.BAD_AUDIO, str(exc)))
            return
        if self._resampler is None or self._resampler.from_hz != sample_rate_hz:
            self._resampler = StreamResampler(sample_rate_hz, wire.RATE_HZ)
        data = self._odd_byte + pcm
        usable = len(data) - len(data) % 2
        self._odd_byte = data[usable:]
        samples = self._resampler.process(np.frombuffer(data[:usable], dtype="<i2"))
        if samples.size == 0:
            return
        if self._outbox.qsize() >= _MAX_BACKLOG:
            if not self._dropping:
                logger.warning("the realtime upstream is not keeping up: dropping input audio")
            self._dropping = True
            return
        self._dropping = False
        if self._client_commits and not self._in_speech:
            self._in_speech = True
            self._speech_start_ms = self._sent_ms
        self._sent_ms += samples.size * 1000.0 / wire.RATE_HZ
        self._pushes.append((self._sent_ms, self._clock()))
        self._send(wire.append_audio(pcm_bytes(samples)))

    def commit_turn(self) -> bool:
        """The client says the user has finished: the buffer is committed and answered.

        False when there was nothing to commit: the server's VAD hears no speech in progress
        (with client commits: no audio came since the last commit)."""
        if self._closed or not self._in_speech:
            return False
        self._in_speech = False
        now = self._clock()
        self._emit(SpeechStopped(at_ms=round(self._sent_ms, 1)))
        self._user = UserTurn(None, self._sent_ms - self._speech_start_ms, now, now, answered=True)
        self.interrupt()
        self._send(wire.commit_audio())
        if self._allowed():
            reply = self._request(user=self._user)
            self._send(wire.create_response(reply.turn_id))
        return True

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
            reply = self._request(user_text=text)
            self._send(wire.user_text(text))
            self._send(wire.create_response(reply.turn_id))

    async def greet(self) -> None:
        """The assistant speaks first: the character's first message, or one it makes up."""
        character = self._character
        if self._closed or (character.first_message is None and character.greeting_prompt is None):
            return
        if character.first_message is not None:
            task = f"Begin by saying exactly this, and nothing else: {character.first_message}"
        else:
            task = character.greeting_prompt or ""
        reply = self._request(greeting=True)
        self._send(wire.create_response(reply.turn_id, f"{character.system_prompt}\n\n{task}"))

    def offer_tools(self, tools: Sequence[ToolSpec], run: ToolRunner) -> bool:
        """Not here: the speech-to-speech provider's session has no tools of a device."""
        return False

    def interrupt(self) -> None:
        """Stop the reply in progress: cancel it upstream, cut its audio item at what was heard."""
        reply = self._reply
        now = self._clock()
        if reply is None or not reply.active(now):
            return
        reply.interrupted = True
        self._interrupted.append(reply.turn_id)
        if not reply.response_done and reply.response_id is not None:
            self._send(wire.cancel_response(reply.response_id))
        heard_ms = reply.playout.heard_ms(now)
        if reply.item_id is not None and heard_ms < reply.audio_ms:
            self._send(wire.truncate(reply.item_id, int(heard_ms)))
        reply.heard_text = reply.playout.heard_text(now)
        self._emit(Interrupted(reply.turn_id, reply.heard_text))
        if reply.recorded:
            self.history.amend_last(Exchange(reply.user_text, reply.heard_text, interrupted=True))

    def was_interrupted(self, turn_id: int) -> bool:
        """True once reply ``turn_id`` was cut short: transports drop its audio still queued."""
        return turn_id in self._interrupted

    def report_playout(self, turn_id: int, played_ms: float) -> None:
        """The consumer has played ``played_ms`` of the reply ``turn_id`` to the user."""
        if self._reply is not None and self._reply.turn_id == turn_id:
            self._reply.playout.report(played_ms)

    async def wait_idle(self) -> None:
        """Until no reply is asked for or being produced."""
        await self._idle.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._end()

    def _end(self) -> None:
        self._closed = True
        self._idle.set()
        self._events.end()

    # -- replies ----------------------------------------------------------------------------

    def _allowed(self) -> bool:
        return self._events.turn_allowed(self._turn_gate)

    def _new_reply(self, **kwargs: Any) -> RealtimeReply:
        reply = RealtimeReply(
            next(self._turn_ids),
            self._settings,
            self._prices,
            self._output_rate_hz,
            self._clock,
            **kwargs,
        )
        self._reply = reply
        self._idle.clear()
        return reply

    def _request(self, **kwargs: Any) -> RealtimeReply:
        reply = self._new_reply(**kwargs)
        self._requested[reply.turn_id] = reply
        return reply

    def _forget(self, reply: RealtimeReply) -> None:
        self._requested.pop(reply.turn_id, None)
        if reply.response_id is not None:
            self._responses.pop(reply.response_id, None)
        if not self._requested and not self._responses:
            self._idle.set()

    def _maybe_finish(self, reply: RealtimeReply) -> None:
        """TurnDone once the response is done and the user's transcript is in (or late)."""
        if reply.done_sent or not reply.response_done:
            return
        item = reply.user.item_id if reply.user is not None else None
        if reply.user_text is None and item is not None:
            if item in self._transcripts:
                reply.user_text = self._transcripts.pop(item)
            elif (
                self._settings.transcription_model
                and item not in self._failed_items
                and not reply.transcript_late
            ):
                if not reply.waiting:
                    reply.waiting = True
                    self._timers.append(
                        asyncio.get_running_loop().call_later(
                            self._settings.transcript_wait_s, self._transcript_late, reply
                        )
                    )
                return
        self._finish(reply)

    def _transcript_late(self, reply: RealtimeReply) -> None:
        if not self._closed:
            reply.transcript_late = True
            self._maybe_finish(reply)

    def _finish(self, reply: RealtimeReply) -> None:
        reply_text = reply.heard_text if reply.interrupted else reply.generated_text
        said = reply.user_text is not None or reply.greeting
        if said and (reply_text or reply.interrupted):
            self.history.record(Exchange(reply.user_text, reply_text, reply.interrupted))
            reply.recorded = True
        self._emit(reply.turn_done())
        self._forget(reply)

    # -- the upstream connection ------------------------------------------------------------

    async def _run(self) -> None:
        try:
            connection = await wire.open_connection(self._settings)
        except VoxgateError as exc:
            self._emit(ErrorEvent(exc.code, str(exc)))
            self._end()
            return
        writer = asyncio.create_task(self._write(connection), name="voxgate-realtime-write")
        try:
            async for message in connection:
                self._receive(message)
            self._lost(f"the OpenAI Realtime server closed the connection ({_why(connection)})")
        except ConnectionClosed:
            self._lost(
                f"the connection to the OpenAI Realtime server was lost ({_why(connection)})"
            )
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await connection.close()

    async def _write(self, connection: ClientConnection) -> None:
        """The session's set-up, its history, then client events in order."""
        instructions = self._character.system_prompt
        earlier = [(e.user_text, e.assistant_text) for e in self.history.exchanges]
        setup = [wire.session_update(self._settings, instructions, self.detection)]
        setup += wire.history_items(
            earlier[-self.history.max_turns :] if self.history.max_turns else []
        )
        try:
            for item in setup:
                await connection.send(json.dumps(item))
            while (event := await self._outbox.get()) is not None:
                await connection.send(json.dumps(event))
        except ConnectionClosed:
            return  # the reader reports it

    def _lost(self, message: str) -> None:
        """The upstream is gone: report it, close the replies in progress, end the session."""
        if self._closed:
            return
        reply = self._reply
        turn_id = reply.turn_id if reply is not None and not reply.done_sent else None
        self._emit(ErrorEvent(wire.CODE, wire.scrub(message, self._settings), turn_id))
        for pending in [*self._requested.values(), *self._responses.values()]:
            if not pending.done_sent:
                pending.response_done = True
                self._finish(pending)
        self._end()

    def _receive(self, message: str | bytes) -> None:
        try:
            event = wire.parse_server_event(message)
        except wire.MalformedEvent as exc:
            self._emit(ErrorEvent(wire.CODE, f"unreadable event from the realtime server: {exc}"))
            return
        try:
            self._handle(event)
        except Exception as exc:  # a bug here must not end the conversation
            logger.exception("handling a realtime %s failed", type(event).__name__)
            self._emit(ErrorEvent(ErrorCode.INTERNAL, f"realtime event failed: {exc}"))

    def _handle(self, event: wire.ServerEvent) -> None:
        match event:
            case wire.SpeechBegan(audio_start_ms):
                self._speech_began(audio_start_ms)
            case wire.SpeechEnded(audio_end_ms, item_id):
                self._speech_ended(audio_end_ms, item_id)
            case wire.InputCommitted(item_id):
                if self._user is not None and self._user.item_id is None:
                    self._user.item_id = item_id
            case wire.InputTranscript() | wire.InputTranscriptFailed():
                self._transcribed(event)
            case wire.ResponseCreated(response_id, turn_id):
                self._created(response_id, turn_id)
            case wire.AudioDelta(response_id, item_id, pcm):
                reply = self._responses.get(response_id)
                if reply is not None and reply.live:
                    for audio in reply.add_audio(item_id, pcm):
                        self._emit(audio)
            case wire.TranscriptDelta(response_id, text):
                reply = self._responses.get(response_id)
                if reply is not None and reply.live:
                    reply.add_text(text)
                    self._emit(ReplyTextDelta(reply.turn_id, text))
            case wire.ResponseDone():
                self._response_done(event)
            case wire.ServerError():
                self._server_error(event)
            case wire.Ignored():
                pass

    def _speech_began(self, audio_start_ms: float) -> None:
        self._in_speech = True
        self._speech_start_ms = audio_start_ms
        self._emit(SpeechStarted(at_ms=round(audio_start_ms, 1)))
        if self._turn.barge_in:
            self.interrupt()

    def _speech_ended(self, audio_end_ms: float, item_id: str | None) -> None:
        if not self._in_speech:
            return  # the client committed this turn already
        self._in_speech = False
        now = self._clock()
        speech_end_at = next((at for sent, at in self._pushes if sent >= audio_end_ms), now)
        self._user = UserTurn(
            item_id, audio_end_ms - self._speech_start_ms, min(speech_end_at, now), now
        )
        self._emit(SpeechStopped(at_ms=round(audio_end_ms, 1)))

    def _transcribed(self, event: wire.InputTranscript | wire.InputTranscriptFailed) -> None:
        if isinstance(event, wire.InputTranscriptFailed):
            self._failed_items.add(event.item_id)
            message = f"the user's speech could not be transcribed: {event.message}"
            self._emit(ErrorEvent(ErrorCode.STT_FAILED, message))
        elif not event.final:
            text = self._partials.get(event.item_id, "") + event.text
            self._partials[event.item_id] = text
            self._emit(Transcript(text.strip(), final=False))
            return
        else:
            self._partials.pop(event.item_id, None)
            self._transcripts[event.item_id] = event.text.strip()
            while len(self._transcripts) > _MAX_TRANSCRIPTS:
                self._transcripts.pop(next(iter(self._transcripts)))
            self._emit(Transcript(event.text.strip(), final=True))
        for reply in list(self._responses.values()):
            if reply.user is not None and reply.user.item_id == event.item_id:
                self._maybe_finish(reply)

    def _created(self, response_id: str, turn_id: int | None) -> None:
        reply = self._requested.pop(turn_id, None) if turn_id is not None else None
        if reply is None:  # started by the server's VAD, for the turn the user just ended
            user = self._user if self._user is not None and not self._user.answered else None
            if user is not None:
                user.answered = True
            refused = not self._allowed()
            reply = self._new_reply(user=user)
            reply.refused = refused
        reply.response_id = response_id
        self._responses[response_id] = reply
        if reply.refused or reply.interrupted:
            self._send(wire.cancel_response(response_id))
            return
        reply.started_at = self._clock()
        self._emit(ReplyStarted(reply.turn_id))

    def _response_done(self, event: wire.ResponseDone) -> None:
        reply = self._responses.get(event.response_id)
        if reply is None:
            return
        reply.response_done = True
        reply.bill(event.usage)
        if reply.refused:
            self._forget(reply)
            return
        if event.status == "failed":
            message = f"the realtime response failed: {event.reason or 'no reason given'}"
            self._emit(ErrorEvent(wire.CODE, wire.scrub(message, self._settings), reply.turn_id))
        if reply.live:
            for audio in reply.flush():
                self._emit(audio)
        self._maybe_finish(reply)

    def _server_error(self, event: wire.ServerError) -> None:
        if event.code == "response_cancel_not_active":
            return  # the response ended just before our cancel reached it
        turn_id = wire.turn_of(event.event_id)
        message = f"the OpenAI Realtime server reported an error: {event.message}"
        if event.code:
            message += f" ({event.code})"
        self._emit(ErrorEvent(wire.CODE, wire.scrub(message, self._settings), turn_id))
        reply = self._requested.get(turn_id) if turn_id is not None else None
        if reply is not None:  # its response.create was refused: no response will come
            reply.response_done = True
            self._finish(reply)


def _why(connection: ClientConnection) -> str:
    code = connection.close_code
    reason = connection.close_reason
    if code is None:
        return "no close frame"
    return f"code {code}, {reason}" if reason else f"code {code}"


def create(
    settings: wire.OpenAIRealtimeSettings,
    turn: TurnSettings,
    character: CharacterSettings,
    **options: Any,
) -> RealtimeSession:
    """Registry factory (capability ``s2s``): one session, with its own upstream connection."""
    return RealtimeSession(settings, turn, character, **options)


if TYPE_CHECKING:
    # mypy checks here that the session keeps to the protocol transports use.
    def _is_voice_session(session: RealtimeSession) -> VoiceSession:
        return session
