"""The voxgate relay protocol, sans-I/O (schema: ``docs/protocols/relay.md``).

Uplink: JSON text in → typed client events (:class:`RelayDecoder`); binary frames are PCM16 audio.
Downlink: turn-engine events → :class:`~voxgate.protocols.frames.Outbound` frames
(:class:`RelayEncoder`), then :class:`RelaySequencer` numbers each text message as it goes out.
The connection's rules (``session.start`` first, ``seq`` gaps, how each failure closes) are
:class:`RelayConnection`'s, so that they are tested on literals.

Numbering happens at send time, not at encode time, because the event pump drops frames of an
interrupted reply after encoding them: numbering earlier would leave gaps the client would report.
For the same reason a ``tts.audio`` header and its binary audio travel through the pump as one
frame (an internal envelope) and are split only when sent, so neither half can go without the other.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from voxgate.core.errors import ErrorCode, ProtocolError
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    LateUsage,
    ReplyAudio,
    ReplyStarted,
    ReplyTextDelta,
    SessionEndRequested,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TurnDone,
    WakeWordHeard,
    WakeWordWaiting,
)
from voxgate.core.listening import FollowUp, ListeningMode
from voxgate.protocols.closing import Close, CloseCode, Ending
from voxgate.protocols.frames import Outbound

PROTOCOL_VERSION = "1.1"
"""Major.minor: a minor version only adds events or payload fields, which clients must ignore."""
DEFAULT_INPUT_RATE_HZ = 16_000
DEFAULT_OUTPUT_RATE_HZ = 24_000
MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 48_000
AUDIO_FORMAT_PCM16 = "pcm16"
RESERVED_AUDIO_FORMATS = frozenset({"opus"})
"""Named in the schema as planned; asking for one now is a ``bad_request``."""
MAX_TEXT_CHARS = 2_000
MAX_PROMPT_CHARS = 8_000
MAX_NAME_CHARS = 100
MAX_TOKEN_CHARS = 512
MAX_SILENCE_S = 3_600


class TurnDetection(StrEnum):
    SERVER_VAD = "server_vad"
    CLIENT = "client"
    """The client commits each turn with ``input.commit`` (its own VAD, push-to-talk)."""


# -- client → server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CharacterOverrides:
    id: str | None = None
    """A stored character, by its id (``GET /api/characters``); the fields below adjust it."""
    name: str | None = None
    system_prompt: str | None = None
    first_message: str | None = None


@dataclass(frozen=True, slots=True)
class Listening:
    """``session.start``'s ``listening`` (1.1): how the session listens; None fields: the
    server's settings."""

    mode: ListeningMode | None = None
    wake_word: str | None = None
    follow_up: FollowUp | None = None
    silence_s: float | None = None


@dataclass(frozen=True, slots=True)
class SessionStart:
    token: str | None = None
    input_rate_hz: int = DEFAULT_INPUT_RATE_HZ
    output_rate_hz: int = DEFAULT_OUTPUT_RATE_HZ
    turn_detection: TurnDetection = TurnDetection.SERVER_VAD
    partial_transcripts: bool | None = None
    """None: the server's setting."""
    character: CharacterOverrides = field(default_factory=CharacterOverrides)
    greeting: bool = True
    resume_session_id: str | None = None
    listening: Listening = field(default_factory=Listening)


@dataclass(frozen=True, slots=True)
class InputCommit:
    """The user's turn is over (client-side VAD or push-to-talk)."""


@dataclass(frozen=True, slots=True)
class ReplyInterrupt:
    """Barge-in: stop the reply now."""


@dataclass(frozen=True, slots=True)
class TextInput:
    text: str


@dataclass(frozen=True, slots=True)
class PlaybackPosition:
    turn_id: int
    played_ms: float
    """Milliseconds of reply ``turn_id`` the client has played."""


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """The client is done; the server answers ``session.end`` and closes (1000)."""


@dataclass(frozen=True, slots=True)
class AudioFrame:
    pcm: bytes = field(repr=False)
    """PCM16 LE mono at the negotiated input rate; any length."""


ClientEvent = (
    SessionStart
    | InputCommit
    | ReplyInterrupt
    | TextInput
    | PlaybackPosition
    | SessionEnd
    | AudioFrame
)


@dataclass(frozen=True, slots=True)
class Received:
    event: ClientEvent
    seq: int | None
    """None for binary frames, which are not numbered."""
    expected_seq: int | None = None
    """Set when ``seq`` was not the one expected: messages were lost, repeated or reordered."""


class RelayDecoder:
    """Parses what the client sends and follows its ``seq`` numbering."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.next_seq = 1

    def receive_bytes(self, data: bytes) -> Received:
        self._check_size(len(data))
        return Received(AudioFrame(data), seq=None)

    def receive_text(self, text: str) -> Received:
        # Characters never outnumber UTF-8 bytes: the cheap test first.
        if len(text) > self.max_message_bytes:
            self._check_size(len(text))
        self._check_size(len(text.encode("utf-8", "surrogatepass")))
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"not valid JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ProtocolError("a message must be a JSON object")
        name, seq = message.get("event"), message.get("seq")
        payload = message.get("payload", {})
        if not isinstance(name, str):
            raise ProtocolError('"event" must be a string')
        if type(seq) is not int or seq < 0:
            raise ProtocolError('"seq" must be a non-negative integer')
        if not isinstance(payload, dict):
            raise ProtocolError('"payload" must be a JSON object')
        expected = None if seq == self.next_seq else self.next_seq
        self.next_seq = seq + 1
        parse = _PARSERS.get(name)
        if parse is None:
            raise ProtocolError(f"unknown event {name[:64]!r}", code=ErrorCode.UNKNOWN_EVENT)
        return Received(parse(_Payload(name, payload)), seq=seq, expected_seq=expected)

    def _check_size(self, size: int) -> None:
        if size > self.max_message_bytes:
            raise ProtocolError(
                f"message of {size} bytes exceeds {self.max_message_bytes}",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )


_Choice = TypeVar("_Choice", bound=StrEnum)


class _Payload:
    """Typed access to a payload's fields, each failure a ProtocolError naming the field."""

    def __init__(self, event: str, data: dict[str, Any]) -> None:
        self.event = event
        self.data = data

    def _fail(self, key: str, expected: str) -> ProtocolError:
        return ProtocolError(f"{self.event}: {key!r} must be {expected}")

    def text(self, key: str, max_chars: int) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > max_chars:
            raise self._fail(key, f"a string of at most {max_chars} characters")
        try:  # JSON may escape a lone surrogate, which could never be sent back as UTF-8
            value.encode()
        except UnicodeEncodeError:
            raise self._fail(key, "valid Unicode text") from None
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.data.get(key, default)
        if type(value) is not int or not low <= value <= high:
            raise self._fail(key, f"an integer in {low}..{high}")
        return value

    def number(self, key: str) -> float:
        value = self.data.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._fail(key, "a number")
        try:
            number = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits
            raise self._fail(key, "a finite number ≥ 0 (this one is out of range)") from None
        if not math.isfinite(number) or number < 0:
            raise self._fail(key, "a finite number ≥ 0")
        return number

    def flag(self, key: str, default: bool | None) -> bool | None:
        value = self.data.get(key, default)
        if value is not None and not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def section(self, key: str) -> _Payload:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return _Payload(f"{self.event}.{key}", value)

    def choice(self, key: str, kind: type[_Choice]) -> _Choice | None:
        value = self.data.get(key)
        if value is None:
            return None
        names = {member.value for member in kind}
        if not isinstance(value, str) or value not in names:
            raise self._fail(key, " or ".join(f'"{name}"' for name in sorted(names)))
        return kind(value)

    def audio_rate(self, key: str, default: int) -> int:
        audio = self.section(key)
        audio_format = audio.data.get("audio_format", AUDIO_FORMAT_PCM16)
        if audio_format in RESERVED_AUDIO_FORMATS:
            raise ProtocolError(
                f"{audio.event}: audio_format {audio_format!r} is planned, not yet served"
            )
        if audio_format != AUDIO_FORMAT_PCM16:
            raise audio._fail("audio_format", f"{AUDIO_FORMAT_PCM16!r}")
        if audio.data.get("channels", 1) != 1:
            raise audio._fail("channels", "1")
        return audio.integer("sample_rate_hz", default, MIN_RATE_HZ, MAX_RATE_HZ)


def _session_start(p: _Payload) -> SessionStart:
    detection = p.data.get("turn_detection", TurnDetection.SERVER_VAD.value)
    # A list or an object is no mode (and cannot be looked up in a set: TypeError).
    if not isinstance(detection, str) or detection not in {mode.value for mode in TurnDetection}:
        raise p._fail("turn_detection", '"server_vad" or "client"')
    character = p.section("character")
    return SessionStart(
        token=p.text("token", MAX_TOKEN_CHARS),
        input_rate_hz=p.audio_rate("input", DEFAULT_INPUT_RATE_HZ),
        output_rate_hz=p.audio_rate("output", DEFAULT_OUTPUT_RATE_HZ),
        turn_detection=TurnDetection(detection),
        partial_transcripts=p.flag("partial_transcripts", None),
        character=CharacterOverrides(
            id=character.text("id", MAX_NAME_CHARS),
            name=character.text("name", MAX_NAME_CHARS),
            system_prompt=character.text("system_prompt", MAX_PROMPT_CHARS),
            first_message=character.text("first_message", MAX_TEXT_CHARS),
        ),
        greeting=bool(p.flag("greeting", True)),
        resume_session_id=p.text("resume_session_id", MAX_NAME_CHARS),
        listening=_listening(p.section("listening")),
    )


def _listening(p: _Payload) -> Listening:
    silence_s = p.number("silence_s") if "silence_s" in p.data else None
    if silence_s is not None and not 1 <= silence_s <= MAX_SILENCE_S:
        raise p._fail("silence_s", f"a number of seconds in 1..{MAX_SILENCE_S}")
    return Listening(
        mode=p.choice("mode", ListeningMode),
        wake_word=p.text("wake_word", MAX_NAME_CHARS),
        follow_up=p.choice("follow_up", FollowUp),
        silence_s=silence_s,
    )


def _text_input(p: _Payload) -> TextInput:
    text = p.text("text", MAX_TEXT_CHARS)
    if text is None or not text.strip():
        raise p._fail("text", "a non-empty string")
    return TextInput(text)


def _playback_position(p: _Payload) -> PlaybackPosition:
    return PlaybackPosition(p.integer("turn_id", -1, 0, 2**31), p.number("played_ms"))


_PARSERS: dict[str, Callable[[_Payload], ClientEvent]] = {
    "session.start": _session_start,
    "input.commit": lambda p: InputCommit(),
    "reply.interrupt": lambda p: ReplyInterrupt(),
    "text.input": _text_input,
    "playback.position": _playback_position,
    "session.end": lambda p: SessionEnd(),
}


# -- server → client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """``session.ready``: the first message of every session, with what was negotiated."""

    session_id: str
    device: str
    input_rate_hz: int
    output_rate_hz: int
    turn_detection: TurnDetection
    partial_transcripts: bool
    barge_in: bool
    character_name: str
    greeting: bool
    resumed_turns: int | None
    """Exchanges restored from ``resume_session_id``; None when nothing was resumed."""
    max_message_bytes: int
    listening_mode: ListeningMode = ListeningMode.PUSH_TO_TALK
    wake_word: str | None = None
    """In ``wake_word`` mode: the word (``"hey_jarvis"``)."""
    follow_up: FollowUp | None = None
    silence_s: float | None = None


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _message(name: str, payload: dict[str, Any]) -> str:
    """A text message without its ``seq``; :class:`RelaySequencer` adds it when it is sent."""
    return _dumps({"event": name, "payload": payload})


def _audio(rate_hz: int) -> dict[str, Any]:
    return {"audio_format": AUDIO_FORMAT_PCM16, "sample_rate_hz": rate_hz, "channels": 1}


def ready_message(ready: Ready) -> str:
    return _message(
        "session.ready",
        {
            "protocol_version": PROTOCOL_VERSION,
            "session_id": ready.session_id,
            "device": ready.device,
            "input": _audio(ready.input_rate_hz),
            "output": _audio(ready.output_rate_hz),
            "turn_detection": ready.turn_detection.value,
            "partial_transcripts": ready.partial_transcripts,
            "barge_in": ready.barge_in,
            "character": {"name": ready.character_name},
            "greeting": ready.greeting,
            "resumed": ready.resumed_turns is not None,
            "resumed_turns": ready.resumed_turns or 0,
            "max_message_bytes": ready.max_message_bytes,
            "listening": _listening_payload(ready),
        },
    )


def _listening_payload(ready: Ready) -> dict[str, Any]:
    if ready.listening_mode is ListeningMode.PUSH_TO_TALK:
        return {"mode": ready.listening_mode.value}
    return {
        "mode": ready.listening_mode.value,
        "wake_word": ready.wake_word,
        "follow_up": ready.follow_up.value if ready.follow_up else None,
        "silence_s": ready.silence_s,
        "state": "waiting",
    }


def error_message(
    code: ErrorCode, message: str, *, turn_id: int | None = None, fatal: bool = False
) -> str:
    # The version rides along so that a refusal, sent instead of session.ready, states it too.
    return _message(
        "error",
        {
            "code": code.value,
            "message": message,
            "turn_id": turn_id,
            "fatal": fatal,
            "protocol_version": PROTOCOL_VERSION,
        },
    )


def session_end_message(reason: str) -> str:
    return _message("session.end", {"reason": reason})


def _done(event: TurnDone) -> Outbound:
    payload = {
        "turn_id": event.turn_id,
        "user_text": event.user_text,
        "reply_text": event.reply_text,
        "interrupted": event.interrupted,
        "timings": asdict(event.timings),
        "usage": {
            "cost_usd": round(event.cost_usd, 8),
            "engines": [asdict(record) for record in event.usage],
        },
    }
    return Outbound(_message("turn.done", payload))


_ENVELOPE = struct.Struct(">I")  # header length; internal to this module, never on the wire


class RelayEncoder:
    """Turn-engine events → relay frames (an :class:`~voxgate.protocols.frames.EventEncoder`).

    ``was_interrupted`` (the session's) lets ``turn.done`` stay the last message of a turn: a
    reply fully generated but cut short while playing has its TurnDone queued before the
    Interrupted event; that TurnDone is held and sent after ``reply.interrupted``, as heard.
    """

    def __init__(self, was_interrupted: Callable[[int], bool] | None = None) -> None:
        self._was_interrupted = was_interrupted
        self._held: dict[int, TurnDone] = {}

    def encode(self, event: Event) -> list[Outbound]:
        match event:
            case SpeechStarted(at_ms):
                return [Outbound(_message("speech.started", {"at_ms": at_ms}))]
            case SpeechStopped(at_ms):
                return [Outbound(_message("speech.stopped", {"at_ms": at_ms}))]
            case Transcript(text, final):
                name = "asr.final" if final else "asr.partial"
                return [Outbound(_message(name, {"text": text}))]
            case ReplyStarted(turn_id):
                return [Outbound(_message("reply.started", {"turn_id": turn_id}), turn_id=turn_id)]
            case ReplyTextDelta(turn_id, text):
                payload = {"turn_id": turn_id, "text": text}
                return [Outbound(_message("llm.token", payload), turn_id=turn_id)]
            case ReplyAudio():
                return [self._audio(event)]
            case Interrupted(turn_id, heard_text):
                payload = {"turn_id": turn_id, "heard_text": heard_text}
                out = [Outbound(_message("reply.interrupted", payload))]
                held = self._held.pop(turn_id, None)
                if held is not None:
                    out.append(_done(replace(held, reply_text=heard_text, interrupted=True)))
                return out
            case TurnDone():
                interrupted = self._was_interrupted is not None and self._was_interrupted(
                    event.turn_id
                )
                if interrupted and not event.interrupted:
                    self._held[event.turn_id] = event
                    return []
                return [_done(event)]
            case ErrorEvent(code, message, turn_id):
                return [Outbound(error_message(code, message, turn_id=turn_id))]
            case SessionEndRequested():
                return [Outbound(session_end_message("assistant"))]
            case LateUsage():
                return []  # kept by the server, not the device's business
            case WakeWordHeard(wake_word, at_ms):
                payload = {"wake_word": wake_word, "at_ms": at_ms, "state": "listening"}
                return [Outbound(_message("wake.detected", payload))]
            case WakeWordWaiting(reason):
                return [Outbound(_message("wake.waiting", {"reason": reason, "state": "waiting"}))]
        raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover

    @staticmethod
    def _audio(event: ReplyAudio) -> Outbound:
        header = _message(
            "tts.audio",
            {
                "turn_id": event.turn_id,
                "sentence_index": event.sentence_index,
                "sentence_text": event.sentence_text,
                "sentence_start": event.sentence_start,
                "audio_format": AUDIO_FORMAT_PCM16,
                "sample_rate_hz": event.sample_rate_hz,
                "bytes": len(event.pcm),
                "duration_ms": round(event.duration_ms, 3),
            },
        ).encode()
        envelope = _ENVELOPE.pack(len(header)) + header + event.pcm
        return Outbound(envelope, audio_ms=event.duration_ms, turn_id=event.turn_id)


class RelaySequencer:
    """Numbers outgoing text messages (1, 2, 3, ...) and unpacks audio envelopes, at send time."""

    def __init__(self) -> None:
        self.next_seq = 1

    def frames(self, data: str | bytes) -> list[str | bytes]:
        """What actually goes on the wire for one frame of :class:`RelayEncoder` (or a
        ``*_message`` function): one numbered text message, or a ``tts.audio`` header and its
        binary audio."""
        if isinstance(data, str):
            return [self._stamp(data)]
        (size,) = _ENVELOPE.unpack_from(data)
        header = data[_ENVELOPE.size : _ENVELOPE.size + size].decode()
        return [self._stamp(header), data[_ENVELOPE.size + size :]]

    def _stamp(self, text: str) -> str:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        message = json.loads(text)  # one of ours: {"event": ..., "payload": ...}
        return _dumps({"event": message["event"], "seq": seq, "payload": message["payload"]})


# -- the connection's rules --------------------------------------------------------------------

_FATAL: dict[Ending, tuple[CloseCode, ErrorCode, str]] = {
    # ending: (close code, error code, message when the caller gives none)
    Ending.SHUTTING_DOWN: (
        CloseCode.TRY_AGAIN_LATER,
        ErrorCode.SHUTTING_DOWN,
        "the server is shutting down",
    ),
    Ending.UNAUTHORIZED: (CloseCode.UNAUTHORIZED, ErrorCode.UNAUTHORIZED, "invalid token"),
    Ending.UNAVAILABLE: (
        CloseCode.TRY_AGAIN_LATER,
        ErrorCode.UNAVAILABLE,
        "cannot check the token now; try again",
    ),
    Ending.RATE_LIMITED: (
        CloseCode.RATE_LIMITED,
        ErrorCode.RATE_LIMITED,
        "too many connections for this device",
    ),
    Ending.BAD_REQUEST: (CloseCode.PROTOCOL_VIOLATION, ErrorCode.BAD_REQUEST, "bad request"),
    Ending.TIMEOUT: (CloseCode.TIMEOUT, ErrorCode.BAD_REQUEST, "no session.start in time"),
    Ending.TOO_LARGE: (CloseCode.MESSAGE_TOO_BIG, ErrorCode.MESSAGE_TOO_LARGE, "too large"),
    Ending.INTERNAL: (CloseCode.INTERNAL_ERROR, ErrorCode.INTERNAL, "internal error"),
}


def close_for(ending: Ending, detail: str = "") -> Close:
    """The schema's close table: how the relay ends a connection, and what it says first."""
    match ending:
        case Ending.CLIENT_ENDED:
            return Close(CloseCode.NORMAL, last=session_end_message("client"))
        case Ending.ASSISTANT_ENDED:  # its session.end went out with the goodbye
            return Close(CloseCode.NORMAL)
        case Ending.SERVER_SHUTDOWN:
            return Close(CloseCode.GOING_AWAY, last=session_end_message("server_shutdown"))
        case Ending.SLOW_CLIENT:  # it reads nothing: a last message would not get through
            return Close(CloseCode.TIMEOUT)
    close_code, code, default = _FATAL[ending]
    message = default
    if ending is Ending.RATE_LIMITED and detail:
        message = f"{default}; {detail}"
    elif detail:
        message = detail
    last = error_message(code, message, fatal=True)
    return Close(close_code, reason=message, last=last, error=code)


@dataclass(frozen=True, slots=True)
class Inbound:
    """What one client message amounts to."""

    events: tuple[ClientEvent, ...] = ()
    """For the session, in order."""
    errors: tuple[tuple[ErrorCode, str], ...] = ()
    """To tell the client (``error`` messages that do not end the session), before the events."""
    close: Close | None = None
    """The connection ends (its ``last`` message says why)."""


class RelayConnection:
    """One relay connection's rules, without I/O: client text and bytes in → :class:`Inbound`;
    downlink messages → numbered frames out (:meth:`frames`).

    ``session.start`` comes first: anything else before it is answered with an error, except
    audio, which closes with 4400. A second ``session.start`` is an error; a ``seq`` that is not
    the one expected is reported (``seq_gap``) and the message still taken; ``session.end``
    closes normally. A message over the size limit closes with 1009.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self._decoder = RelayDecoder(max_message_bytes)
        self._sequencer = RelaySequencer()
        self.start: SessionStart | None = None
        """The client's ``session.start``, once it has come."""
        self.closed = False

    def receive_text(self, text: str) -> Inbound:
        return self._receive(self._decoder.receive_text, text)

    def receive_bytes(self, data: bytes) -> Inbound:
        return self._receive(self._decoder.receive_bytes, data)

    def frames(self, data: str | bytes) -> list[str | bytes]:
        """What goes on the wire for one downlink message, numbered now (at send time)."""
        return self._sequencer.frames(data)

    def _receive(self, decode: Callable[[Any], Received], data: str | bytes) -> Inbound:
        if self.closed:
            return Inbound()
        try:
            received = decode(data)
        except ProtocolError as exc:
            if exc.code == ErrorCode.MESSAGE_TOO_LARGE:
                return self._close(close_for(Ending.TOO_LARGE, str(exc)))
            return Inbound(errors=((exc.code, str(exc)),))
        event = received.event
        if self.start is None:
            if isinstance(event, SessionStart):
                self.start = event
                return Inbound((event,))
            if isinstance(event, AudioFrame):
                return self._close(close_for(Ending.BAD_REQUEST, "audio before session.start"))
            return Inbound(errors=((ErrorCode.BAD_REQUEST, "send session.start first"),))
        errors: list[tuple[ErrorCode, str]] = []
        if received.expected_seq is not None:
            gap = f"expected seq {received.expected_seq}, got {received.seq}"
            errors.append((ErrorCode.SEQ_GAP, gap))
        if isinstance(event, SessionStart):
            errors.append((ErrorCode.BAD_REQUEST, "the session has already started"))
            return Inbound(errors=tuple(errors))
        if isinstance(event, SessionEnd):
            self.closed = True
            return Inbound(errors=tuple(errors), close=close_for(Ending.CLIENT_ENDED))
        return Inbound((event,), tuple(errors))

    def _close(self, close: Close) -> Inbound:
        self.closed = True
        return Inbound(close=close)
