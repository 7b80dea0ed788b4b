"""The OpenAI Realtime API's WebSocket wire format (the GA event set), without I/O.

Client events are built as dicts (:func:`session_update`, :func:`append_audio`, ...); server
events are parsed into the typed records below by :func:`parse_server_event`. Only
:func:`open_connection` touches the network: it opens the one upstream socket of one session.

Audio both ways is ``audio/pcm``: PCM16 little-endian mono at 24 kHz, base64 in JSON.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from voxgate.core.engine_settings import RealtimeSettings
from voxgate.core.errors import ConfigError, ErrorCode, ProviderError
from voxgate.core.turns import ServerVAD, TurnDetection

RATE_HZ = 24_000
"""The only PCM rate the Realtime API takes and gives."""
TURN_METADATA_KEY = "voxgate_turn"
"""Responses voxgate asks for carry their turn id in ``metadata`` under this key."""
_EVENT_ID_PREFIX = "voxgate_turn_"
CODE = ErrorCode.LLM_FAILED
"""Speech-to-speech replaces the LLM stage: its failures are reported as the LLM's."""

# websockets logs the handshake's headers (the API key among them) at DEBUG: its logger here
# never goes below INFO, whatever the application's level.
_wire_logger = logging.getLogger("voxgate.providers.openai_realtime.wire")
_wire_logger.setLevel(logging.INFO)


class OpenAIRealtimeSettings(RealtimeSettings):
    """``[realtime]`` (``provider = "openai-realtime"``, the default): an OpenAI Realtime
    speech-to-speech engine. The character's system prompt is the session's instructions."""

    provider: Literal["openai-realtime"] = "openai-realtime"
    model: str = "gpt-realtime"
    voice: str = "marin"
    base_url: str = "wss://api.openai.com/v1"
    api_key: SecretStr | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0)
    """Opening the connection (TCP, TLS, WebSocket handshake), at most."""
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    """Transcribes what the user said (for the history and the device); None: no user text."""
    transcript_wait_s: float = Field(3.0, ge=0)
    """A reply's turn is reported once the user's transcript is in, waiting this long for it."""
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    prefix_padding_ms: int = Field(300, ge=0)
    silence_duration_ms: int = Field(500, ge=100)
    """Trailing silence after which the server ends the user's turn."""

    @field_validator("base_url")
    @classmethod
    def _websocket_url(cls, url: str) -> str:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"must start with ws:// or wss://, got {url!r}")
        return url.rstrip("/")


# -- client events --------------------------------------------------------------------------


def realtime_url(settings: OpenAIRealtimeSettings) -> str:
    return f"{settings.base_url}/realtime?model={quote(settings.model)}"


def default_detection(settings: OpenAIRealtimeSettings) -> ServerVAD:
    """Turn detection when the protocol does not choose: ``vad_threshold`` and
    ``silence_duration_ms`` of ``[realtime]``."""
    return ServerVAD(settings.silence_duration_ms, settings.vad_threshold)


def session_update(
    settings: OpenAIRealtimeSettings, instructions: str, detection: TurnDetection | None = None
) -> dict[str, Any]:
    """PCM at 24 kHz both ways, audio replies with their transcript, and the turn detection asked
    for: server VAD that answers on its own but leaves barge-in to voxgate (which knows what was
    played), or none (``turn_detection: null``: the client commits each turn)."""
    detection = detection or default_detection(settings)
    audio_format = {"type": "audio/pcm", "rate": RATE_HZ}
    turn_detection: dict[str, Any] | None = None
    if isinstance(detection, ServerVAD):
        turn_detection = {
            "type": "server_vad",
            "threshold": detection.threshold,
            "prefix_padding_ms": settings.prefix_padding_ms,
            "silence_duration_ms": detection.silence_ms,
            "create_response": True,
            "interrupt_response": False,
        }
    audio_input: dict[str, Any] = {"format": audio_format, "turn_detection": turn_detection}
    if settings.transcription_model:
        audio_input["transcription"] = {"model": settings.transcription_model}
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": audio_input,
                "output": {"format": audio_format, "voice": settings.voice},
            },
        },
    }


def append_audio(pcm: bytes) -> dict[str, Any]:
    """``pcm``: PCM16 LE at 24 kHz."""
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}


def commit_audio() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def user_text(text: str) -> dict[str, Any]:
    return _message("user", "input_text", text)


def history_items(exchanges: Sequence[tuple[str | None, str]]) -> list[dict[str, Any]]:
    """Earlier turns, ``(user text, what the user heard of the reply)``, as conversation items
    (as text: the audio of earlier sessions is gone)."""
    items: list[dict[str, Any]] = []
    for user, assistant in exchanges:
        if user:
            items.append(_message("user", "input_text", user))
        if assistant:
            items.append(_message("assistant", "output_text", assistant))
    return items


def _message(role: str, content_type: str, text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": role,
            "content": [{"type": content_type, "text": text}],
        },
    }


def create_response(turn_id: int, instructions: str | None = None) -> dict[str, Any]:
    """A response for turn ``turn_id``: its metadata names the turn, and so does the event's id,
    which an ``error`` about this request quotes."""
    response: dict[str, Any] = {"metadata": {TURN_METADATA_KEY: str(turn_id)}}
    if instructions is not None:
        response["instructions"] = instructions
    return {
        "type": "response.create",
        "event_id": f"{_EVENT_ID_PREFIX}{turn_id}",
        "response": response,
    }


def turn_of(event_id: str | None) -> int | None:
    """The turn whose ``response.create`` had this event id, if it was one."""
    if event_id is None or not event_id.startswith(_EVENT_ID_PREFIX):
        return None
    number = event_id.removeprefix(_EVENT_ID_PREFIX)
    return int(number) if number.isdigit() else None


def cancel_response(response_id: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "response.cancel"}
    if response_id is not None:
        event["response_id"] = response_id
    return event


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    """Cut the assistant's audio item where the user stopped hearing it (its text goes too)."""
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }


# -- server events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechBegan:
    audio_start_ms: float
    """Milliseconds of input audio (all appended so far) at which speech began."""
    item_id: str | None


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    audio_end_ms: float
    item_id: str | None


@dataclass(frozen=True, slots=True)
class InputCommitted:
    item_id: str


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    text: str
    final: bool
    """False: a delta of a transcript still being written."""


@dataclass(frozen=True, slots=True)
class InputTranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str
    turn_id: int | None
    """Set for a response voxgate asked for (from its metadata); None when server VAD started it."""


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    pcm: bytes
    """PCM16 LE at 24 kHz."""


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    response_id: str
    text: str


@dataclass(frozen=True, slots=True)
class TokenUsage:
    text_in: int = 0
    audio_in: int = 0
    text_out: int = 0
    audio_out: int = 0


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str
    """completed, cancelled, failed or incomplete."""
    usage: TokenUsage
    reason: str
    """Why a response did not complete (``turn_detected``, ``max_output_tokens``, an error)."""


@dataclass(frozen=True, slots=True)
class ServerError:
    message: str
    code: str | None
    event_id: str | None
    """The client event the error is about, when it is about one."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event voxgate does not act on (``session.updated``, ``rate_limits.updated``...)."""

    type: str


ServerEvent = (
    SpeechBegan
    | SpeechEnded
    | InputCommitted
    | InputTranscript
    | InputTranscriptFailed
    | ResponseCreated
    | AudioDelta
    | TranscriptDelta
    | ResponseDone
    | ServerError
    | Ignored
)


class MalformedEvent(ValueError):
    """A server message that is not a Realtime event voxgate can read."""


def parse_server_event(text: str | bytes) -> ServerEvent:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise MalformedEvent("an event without a type")
    try:
        return _parse(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEvent(f"{data['type']}: missing or bad field {exc}") from exc


def _parse(data: dict[str, Any]) -> ServerEvent:
    match data["type"]:
        case "input_audio_buffer.speech_started":
            return SpeechBegan(float(data["audio_start_ms"]), data.get("item_id"))
        case "input_audio_buffer.speech_stopped":
            return SpeechEnded(float(data["audio_end_ms"]), data.get("item_id"))
        case "input_audio_buffer.committed":
            return InputCommitted(str(data["item_id"]))
        case "conversation.item.input_audio_transcription.delta":
            return InputTranscript(str(data["item_id"]), str(data["delta"]), final=False)
        case "conversation.item.input_audio_transcription.completed":
            return InputTranscript(str(data["item_id"]), str(data["transcript"]), final=True)
        case "conversation.item.input_audio_transcription.failed":
            error = data.get("error") or {}
            return InputTranscriptFailed(str(data["item_id"]), str(error.get("message", "")))
        case "response.created":
            response = data["response"]
            metadata = response.get("metadata") or {}
            turn = metadata.get(TURN_METADATA_KEY)
            return ResponseCreated(str(response["id"]), int(turn) if turn is not None else None)
        case "response.output_audio.delta":
            pcm = base64.b64decode(data["delta"], validate=True)
            return AudioDelta(str(data["response_id"]), str(data["item_id"]), pcm)
        case "response.output_audio_transcript.delta":
            return TranscriptDelta(str(data["response_id"]), str(data["delta"]))
        case "response.done":
            response = data["response"]
            details = response.get("status_details") or {}
            error = details.get("error") or {}
            reason = details.get("reason") or error.get("message") or ""
            return ResponseDone(
                str(response["id"]),
                str(response.get("status", "")),
                _usage(response.get("usage") or {}),
                str(reason),
            )
        case "error":
            error = data["error"]
            code, event_id = error.get("code"), error.get("event_id")
            return ServerError(
                str(error.get("message", "")),
                str(code) if code else None,
                str(event_id) if event_id else None,
            )
        case other:
            return Ignored(other)


def _usage(usage: dict[str, Any]) -> TokenUsage:
    inputs = usage.get("input_token_details") or {}
    outputs = usage.get("output_token_details") or {}
    return TokenUsage(
        text_in=int(inputs.get("text_tokens", 0)),
        audio_in=int(inputs.get("audio_tokens", 0)),
        text_out=int(outputs.get("text_tokens", 0)),
        audio_out=int(outputs.get("audio_tokens", 0)),
    )


# -- the connection -------------------------------------------------------------------------


def scrub(text: str, settings: OpenAIRealtimeSettings) -> str:
    """``text`` without the API key (servers may echo a key they rejected)."""
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    return text.replace(key, "***") if key else text


async def open_connection(settings: OpenAIRealtimeSettings) -> ClientConnection:
    """One upstream socket, for one session. Raises ProviderError (or ConfigError)."""
    url = realtime_url(settings)
    server = f"the OpenAI Realtime server at {settings.base_url}"
    headers = dict(settings.extra_headers)
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    try:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=settings.timeout_s,
            close_timeout=2.0,
            max_size=16 * 1024 * 1024,
            logger=_wire_logger,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        body = scrub(exc.response.body.decode("utf-8", "replace"), settings)
        body = " ".join(body.split())[:200]
        if status in (401, 403):
            message = f"{server} refused the API key (HTTP {status}): check realtime.api_key"
        else:
            message = f"{server} answered HTTP {status}"
        raise ProviderError(
            f"{message}: {body}" if body else message,
            code=CODE,
            retryable=status == 429 or status >= 500,
        ) from None
    except TimeoutError:
        raise ProviderError(
            f"{server} did not answer within {settings.timeout_s:g} s", code=CODE, retryable=True
        ) from None
    except InvalidURI as exc:
        raise ConfigError(f"realtime.base_url is not a WebSocket URL: {exc}") from None
    except (OSError, InvalidHandshake) as exc:
        detail = scrub(str(exc), settings) or type(exc).__name__
        raise ProviderError(
            f"cannot connect to {server}: {detail}", code=CODE, retryable=True
        ) from None
