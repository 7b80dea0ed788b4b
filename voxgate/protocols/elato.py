"""The ElatoAI device protocol, sans-I/O (spec: ``shared/protocols/elato.md``).

Device → server: binary frames of raw PCM16 LE mono 16 kHz of any size, and (from other clients)
text ``instruction`` messages. Server → device: JSON text messages (``auth``, then ``server``
messages) and binary Opus packets, 24 kHz, 120 ms a packet.

Also the device tokens: HS256 JWTs shaped like the ones ElatoAI issues (Supabase-style claims,
no ``exp``), carrying the device's id and MAC address.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import jwt

from voxgate.core.errors import ErrorCode, ProtocolError
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    ReplyAudio,
    ReplyStarted,
    SessionEndRequested,
    SpeechStopped,
    TurnDone,
)
from voxgate.protocols.closing import Close, CloseCode, Ending
from voxgate.protocols.frames import Outbound, pcm_at
from voxgate.protocols.opus import OpusPacketizer

INPUT_RATE_HZ = 16_000
"""The firmware's microphone stream."""
OUTPUT_RATE_HZ = 24_000
"""The Opus stream the firmware decodes."""
FRAME_MS = 120.0
BITRATE_BPS = 24_000
DEFAULT_VOLUME = 70
"""Elato's default device volume (0-100)."""

TOKEN_AUDIENCE = "authenticated"
TOKEN_ROLE = "authenticated"
_ALGORITHM = "HS256"


class ServerMsg(StrEnum):
    """The ``msg`` of a ``{"type": "server"}`` message, and what the device does with it."""

    RESPONSE_CREATED = "RESPONSE.CREATED"
    """Speaker on: a reply's audio follows."""
    RESPONSE_COMPLETE = "RESPONSE.COMPLETE"
    """The reply is over: the device listens again 1000 ms later."""
    RESPONSE_ERROR = "RESPONSE.ERROR"
    """Handled like RESPONSE.COMPLETE."""
    AUDIO_COMMITTED = "AUDIO.COMMITTED"
    """The user's turn is over: the microphone stops."""
    SESSION_END = "SESSION.END"
    """The device disconnects and deep-sleeps."""


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def auth_message(
    *,
    volume_control: int = DEFAULT_VOLUME,
    pitch_factor: float = 1.0,
    is_ota: bool = False,
    is_reset: bool = False,
) -> str:
    """The first message after the upgrade: volume (0-100), pitch, and reboot requests."""
    if not 0 <= volume_control <= 100:
        raise ValueError(f"volume_control {volume_control} is outside 0..100")
    return _dump(
        {
            "type": "auth",
            "volume_control": volume_control,
            "pitch_factor": pitch_factor,
            "is_ota": is_ota,
            "is_reset": is_reset,
        }
    )


def server_message(msg: ServerMsg, *, volume_control: int | None = None) -> str:
    message: dict[str, Any] = {"type": "server", "msg": str(msg)}
    if volume_control is not None:
        message["volume_control"] = volume_control
    return _dump(message)


# -- device → server ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioIn:
    """Microphone audio: PCM16 LE mono at :data:`INPUT_RATE_HZ` (any length, even odd)."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class EndOfSpeech:
    """The client's own VAD or button says the user has finished."""


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Stop the reply; ``audio_end_ms`` is how much of it the client played, if it says."""

    audio_end_ms: float | None


@dataclass(frozen=True, slots=True)
class EndSession:
    """The client ends the session."""


Inbound = AudioIn | EndOfSpeech | Interrupt | EndSession


def parse_message(data: str | bytes) -> Inbound:
    """One WebSocket message from the device. Anything else raises ProtocolError."""
    if isinstance(data, bytes):
        return AudioIn(data)
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    kind, msg = message.get("type"), message.get("msg")
    if kind != "instruction":
        raise ProtocolError(f"unknown message type {kind!r}", code=ErrorCode.UNKNOWN_EVENT)
    if msg == "end_of_speech":
        return EndOfSpeech()
    if msg == "END_SESSION":
        return EndSession()
    if msg == "INTERRUPT":
        return Interrupt(_audio_end_ms(message.get("audio_end_ms")))
    raise ProtocolError(f"unknown instruction {msg!r}", code=ErrorCode.UNKNOWN_EVENT)


def _audio_end_ms(value: object) -> float | None:
    if value is None:
        return None
    # bool is an int in Python, but "audio_end_ms": true is no duration.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"audio_end_ms must be a number, not {value!r}")
    try:
        ms = float(value)
    except OverflowError as exc:  # a JSON integer with hundreds of digits
        raise ProtocolError("audio_end_ms is out of range") from exc
    if not math.isfinite(ms) or ms < 0:
        raise ProtocolError(f"audio_end_ms must be a finite number >= 0, not {ms!r}")
    return ms


# -- server → device ------------------------------------------------------------------------

_GOODBYE = re.compile(r"\b(good ?bye|bye|see you|that'?s all|that is all)\b")


def says_goodbye(text: str) -> bool:
    """The rule that ends a session: the user's words contain "bye", "goodbye", "see you" or
    "that's all" (any case, any punctuation). Simple on purpose; Elato's servers let the LLM
    decide with an ``end_session`` tool, which small local models call unreliably."""
    words = re.sub(r"[^a-z' ]+", " ", text.lower().replace("\u2019", "'"))
    return _GOODBYE.search(" ".join(words.split())) is not None


_CREATED = server_message(ServerMsg.RESPONSE_CREATED)
_COMPLETE = server_message(ServerMsg.RESPONSE_COMPLETE)
_ERROR = server_message(ServerMsg.RESPONSE_ERROR)
_COMMITTED = server_message(ServerMsg.AUDIO_COMMITTED)
SESSION_END = server_message(ServerMsg.SESSION_END)
"""The SESSION.END message as sent; the transport closes the socket after it."""


class ElatoEncoder:
    """Turn-engine events → Elato frames (the transport's :class:`EventEncoder`).

    The device has three states that matter here: LISTENING (streams the mic), PROCESSING (waits:
    after connecting, and after AUDIO.COMMITTED) and SPEAKING (after RESPONSE.CREATED). Only
    RESPONSE.COMPLETE or RESPONSE.ERROR gets it from the last two back to listening, so every turn
    the device waits for ends with exactly one of them. Control messages carry no ``turn_id``: the
    event pump drops the frames of an interrupted reply, and these must still go out.
    """

    def __init__(self, packetizer: OpusPacketizer | None = None) -> None:
        self._opus = packetizer or OpusPacketizer(
            OUTPUT_RATE_HZ, frame_ms=FRAME_MS, bitrate_bps=BITRATE_BPS, application="voip"
        )
        self.reply_turn_id: int | None = None
        """The reply the device is speaking (RESPONSE.CREATED sent, RESPONSE.COMPLETE not yet)."""
        self._waiting = True  # the device is in PROCESSING: it waits from the moment it connects
        self.ended = False
        """SESSION.END has been encoded."""

    def encode(self, event: Event) -> list[Outbound]:
        if self.ended:
            return []
        match event:
            case SpeechStopped():
                self._waiting = True
                return [Outbound(_COMMITTED)]
            case ReplyStarted(turn_id=turn_id):
                self.reply_turn_id = turn_id
                self._waiting = False
                self._opus.reset()
                return [Outbound(_CREATED)]
            case ReplyAudio() if event.turn_id == self.reply_turn_id:
                return self._audio(event)
            case Interrupted(turn_id=turn_id) if turn_id == self.reply_turn_id:
                self._opus.reset()  # its last partial frame is not to be played
                return []
            case TurnDone():
                return self._turn_done(event)
            case SessionEndRequested():
                self.ended = True  # the assistant said goodbye: the device may sleep
                return [Outbound(SESSION_END)]
            case ErrorEvent() if self.reply_turn_id is None and self._waiting:
                # A turn that ends without a reply (nothing heard, STT failed, rate limited):
                # the device must not wait for one. Errors during a reply end with its TurnDone.
                self._waiting = False
                return [Outbound(_ERROR)]
        return []

    def _audio(self, event: ReplyAudio) -> list[Outbound]:
        pcm = pcm_at(event, OUTPUT_RATE_HZ)  # the transport asks for 24 kHz; be safe
        return self._packets(self._opus.push(pcm), event.turn_id)

    def _packets(self, packets: list[bytes], turn_id: int) -> list[Outbound]:
        return [Outbound(packet, audio_ms=FRAME_MS, turn_id=turn_id) for packet in packets]

    def _turn_done(self, event: TurnDone) -> list[Outbound]:
        out: list[Outbound] = []
        if event.turn_id == self.reply_turn_id:
            if not event.interrupted:
                out += self._packets(self._opus.flush(), event.turn_id)
            out.append(Outbound(_COMPLETE))
            self.reply_turn_id = None
        elif self._waiting and self.reply_turn_id is None:
            # Ended before its reply began: cut short by the client, or an engine failed.
            out.append(Outbound(_COMPLETE if event.interrupted else _ERROR))
        else:
            return []
        self._waiting = False
        if says_goodbye(event.user_text):
            out.append(Outbound(SESSION_END))
            self.ended = True
        return out


# -- closing -----------------------------------------------------------------------------------

_HTTP_STATUS = {
    Ending.UNAUTHORIZED: 401,
    Ending.RATE_LIMITED: 429,
    Ending.SHUTTING_DOWN: 503,
    Ending.UNAVAILABLE: 503,
}


def close_for(ending: Ending, detail: str = "") -> Close:
    """How a connection ends. Refusals happen at the upgrade, as an HTTP status like Elato's
    server (401 for bad credentials); after it the firmware reads only the close code."""
    match ending:
        case Ending.CLIENT_ENDED:  # the device asked to sleep: confirm it
            return Close(CloseCode.NORMAL, last=SESSION_END)
        case Ending.ASSISTANT_ENDED:
            return Close(CloseCode.NORMAL)
        case Ending.SERVER_SHUTDOWN:
            return Close(CloseCode.GOING_AWAY)
        case Ending.TOO_LARGE:
            return Close(CloseCode.MESSAGE_TOO_BIG)
        case Ending.SLOW_CLIENT:
            return Close(CloseCode.POLICY_VIOLATION)
        case Ending.UNAUTHORIZED | Ending.RATE_LIMITED | Ending.SHUTTING_DOWN | Ending.UNAVAILABLE:
            reason = {
                Ending.UNAUTHORIZED: detail,
                Ending.UNAVAILABLE: detail,
                Ending.RATE_LIMITED: f"too many connections; {detail}",
                Ending.SHUTTING_DOWN: "the server is shutting down",
            }[ending]
            return Close(CloseCode.POLICY_VIOLATION, reason, http_status=_HTTP_STATUS[ending])
    return Close(CloseCode.INTERNAL_ERROR)


# -- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid device token says."""

    device_id: int
    mac: str
    """Upper case, colon separated, as the firmware sends it in ``X-Device-Mac``."""
    generation: int = 0
    """The device's token generation when issued (``gen``; 0 for tokens from before it)."""


def issue_token(
    secret: str,
    device_id: int,
    mac: str,
    *,
    issued_at: datetime | None = None,
    generation: int = 0,
    ttl_s: float | None = None,
) -> str:
    """A device token in ElatoAI's shape: ``aud``/``role`` "authenticated", ``sub`` (here the
    device id), ``user_metadata``, ``gen`` (pairing the device again voids earlier tokens) and,
    by default, no ``exp``: the unmodified firmware fetches its token once and keeps it, so an
    expiring token would lock it out. With ``ttl_s``, ``exp`` is set."""
    issued = issued_at or datetime.now(UTC)
    subject = str(device_id)
    claims: dict[str, Any] = {
        "aud": TOKEN_AUDIENCE,
        "role": TOKEN_ROLE,
        "sub": subject,
        "iat": int(issued.timestamp()),
        "user_metadata": {
            "user_id": subject,
            "mac_address": mac,
            "created_time": issued.isoformat(),
        },
        "gen": generation,
    }
    if ttl_s is not None:
        claims["exp"] = int(issued.timestamp() + ttl_s)
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def verify_token(secret: str, token: str, *, mac: str, allow_expired: bool = False) -> TokenClaims:
    """The claims of a token signed with ``secret`` for the device with MAC address ``mac`` (the
    ``X-Device-Mac`` header); anything else raises ProtocolError. ``allow_expired`` accepts a
    token past its ``exp`` (to renew it)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            audience=TOKEN_AUDIENCE,
            options={"require": ["aud", "sub"], "verify_exp": not allow_expired},
        )
    except jwt.PyJWTError as exc:
        raise ProtocolError(f"invalid token: {exc}", code=ErrorCode.UNAUTHORIZED) from exc
    metadata = claims.get("user_metadata")
    subject = claims.get("sub")
    token_mac = metadata.get("mac_address") if isinstance(metadata, dict) else None
    if claims.get("role") != TOKEN_ROLE or not isinstance(token_mac, str) or not _is_id(subject):
        raise ProtocolError("the token is not a voxgate device token", code=ErrorCode.UNAUTHORIZED)
    if token_mac.upper() != mac.strip().upper():
        raise ProtocolError(
            f"the token was issued to {token_mac}, not to {mac}", code=ErrorCode.UNAUTHORIZED
        )
    generation = claims.get("gen", 0)
    if isinstance(generation, bool) or not isinstance(generation, int):
        raise ProtocolError("the token's generation is not a number", code=ErrorCode.UNAUTHORIZED)
    return TokenClaims(device_id=int(str(subject)), mac=token_mac, generation=generation)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18
