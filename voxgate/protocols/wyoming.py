"""Wyoming (Home Assistant's voice protocol), sans-I/O: bytes in → events, events → bytes.

The framing (docs/protocols/wyoming.md): one JSON header line ``{"type", "data"?, "data_length"?,
"payload_length"?, "version"?}`` and ``\\n``, then ``data_length`` bytes of JSON object (merged
over the header's own ``data``), then ``payload_length`` bytes of binary payload (PCM audio).

:class:`WyomingDecoder` holds a connection's partial input and refuses what a peer must not send:
a header line longer than ``max_header_bytes``, lengths that are not whole numbers or over the
limits, JSON that is not an object. Nothing is read before it is known to fit: a header that says
``payload_length: 10**12`` is refused on the header, not after a terabyte. The server's request
rules (what may follow what) are in :mod:`voxgate.protocols.wyoming_requests`; both the server
and the Wyoming providers frame with this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxgate.core.errors import ErrorCode, ProtocolError

VERSION = "1.10.2"
"""The protocol version voxgate writes in its headers (that of the reference package it was
tested against)."""
_NEWLINE = b"\n"


@dataclass(frozen=True, slots=True)
class WyomingLimits:
    max_header_bytes: int = 16 * 1024
    """The JSON header line, newline included."""
    max_data_bytes: int = 256 * 1024
    """The extra JSON data after it (an ``info`` with many voices is the largest seen)."""
    max_payload_bytes: int = 1 << 20
    """The binary payload of one event: 1 MiB is over 5 s of 48 kHz stereo PCM16."""


@dataclass(frozen=True, slots=True)
class WyomingEvent:
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    payload: bytes = b""


class WyomingProtocolError(ProtocolError):
    """The peer broke the framing; the connection cannot go on (its position in the stream is
    lost). ``code`` goes out in the ``error`` event."""


class WyomingDecoder:
    """One connection's inbound bytes. Feed :meth:`receive_data`; each call returns the events
    completed by those bytes, in order."""

    def __init__(self, limits: WyomingLimits | None = None) -> None:
        self.limits = limits or WyomingLimits()
        self._buffer = bytearray()
        self._header: dict[str, Any] | None = None
        self._data_length = 0
        self._payload_length = 0
        self.bytes_received = 0

    @property
    def mid_event(self) -> bool:
        """True while an event has begun and is not complete (an EOF now is an error)."""
        return self._header is not None or bool(self._buffer)

    def receive_data(self, data: bytes) -> list[WyomingEvent]:
        self.bytes_received += len(data)
        self._buffer += data
        events: list[WyomingEvent] = []
        while True:
            event = self._next()
            if event is None:
                return events
            events.append(event)

    def receive_eof(self) -> None:
        """The peer closed its side; raises if it did so inside an event."""
        if self.mid_event:
            raise WyomingProtocolError("connection closed in the middle of an event")

    def _next(self) -> WyomingEvent | None:
        if self._header is None:
            end = self._buffer.find(_NEWLINE, 0, self.limits.max_header_bytes)
            if end < 0:
                if len(self._buffer) >= self.limits.max_header_bytes:
                    raise WyomingProtocolError(
                        f"header line longer than {self.limits.max_header_bytes} bytes",
                        code=ErrorCode.MESSAGE_TOO_LARGE,
                    )
                return None
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._header = self._parse_header(line)
        needed = self._data_length + self._payload_length
        if len(self._buffer) < needed:
            return None
        header, self._header = self._header, None
        data = dict(_object(header.get("data") or {}, "the header's data"))
        if self._data_length:
            extra = _json(bytes(self._buffer[: self._data_length]), "the data block")
            data.update(_object(extra, "the data block"))
        payload = bytes(self._buffer[self._data_length : needed])
        del self._buffer[:needed]
        return WyomingEvent(header["type"], data, payload)

    def _parse_header(self, line: bytes) -> dict[str, Any]:
        header = dict(_object(_json(line, "the header line"), "the header line"))
        kind = header.get("type")
        if not isinstance(kind, str) or not kind:
            raise WyomingProtocolError('the header has no "type" (a non-empty string)')
        self._data_length = _length(header, "data_length", self.limits.max_data_bytes)
        self._payload_length = _length(header, "payload_length", self.limits.max_payload_bytes)
        return header


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WyomingProtocolError(f"{what} is not JSON: {exc}") from None


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WyomingProtocolError(f"{what} is not a JSON object")
    return value


def _length(header: Mapping[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WyomingProtocolError(f"{key} must be a whole number of bytes, not {value!r}")
    if value > limit:
        raise WyomingProtocolError(
            f"{key} {value} exceeds {limit} bytes", code=ErrorCode.MESSAGE_TOO_LARGE
        )
    return value


def encode(kind: str, data: Mapping[str, Any] | None = None, payload: bytes = b"") -> bytes:
    """One event on the wire, as the reference implementation writes it: the data in its own
    block after the header line (``data_length``), then the payload."""
    header: dict[str, Any] = {"type": kind, "version": VERSION}
    body = json.dumps(data, ensure_ascii=False).encode() if data else b""
    if body:
        header["data_length"] = len(body)
    if payload:
        header["payload_length"] = len(payload)
    line = json.dumps(header, ensure_ascii=False).encode()
    return b"".join((line, _NEWLINE, body, payload))


# -- the events voxgate sends -------------------------------------------------------------------

PCM16_WIDTH = 2
"""Bytes per sample: voxgate speaks and takes 16-bit PCM only."""


def audio_start(rate_hz: int, channels: int = 1) -> bytes:
    return encode("audio-start", {"rate": rate_hz, "width": PCM16_WIDTH, "channels": channels})


def audio_chunk(pcm: bytes, rate_hz: int, channels: int = 1) -> bytes:
    format_ = {"rate": rate_hz, "width": PCM16_WIDTH, "channels": channels}
    return encode("audio-chunk", format_, pcm)


def audio_stop() -> bytes:
    return encode("audio-stop")


def transcript(text: str, language: str | None = None) -> bytes:
    data: dict[str, Any] = {"text": text}
    if language:
        data["language"] = language
    return encode("transcript", data)


def transcript_start(language: str | None = None) -> bytes:
    return encode("transcript-start", {"language": language} if language else None)


def transcript_chunk(text: str) -> bytes:
    return encode("transcript-chunk", {"text": text})


def transcript_stop() -> bytes:
    return encode("transcript-stop")


def synthesize_stopped() -> bytes:
    return encode("synthesize-stopped")


def detection(name: str | None, timestamp_ms: int | None) -> bytes:
    return encode("detection", {"name": name, "timestamp": timestamp_ms})


def not_detected() -> bytes:
    return encode("not-detected")


def pong(text: str | None = None) -> bytes:
    return encode("pong", {"text": text} if text else None)


def error(text: str, code: str) -> bytes:
    return encode("error", {"text": text, "code": code})


# -- describe → info ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Artifact:
    """A model (STT), a voice (TTS) or a wake word, as ``info`` lists it."""

    name: str
    languages: Sequence[str]
    description: str = ""
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Program:
    """One service of a kind (``asr``, ``tts``, ``wake``) and what it offers."""

    name: str
    description: str
    artifacts: Sequence[Artifact]
    version: str | None = None
    streaming: bool = False
    """asr: transcript streaming; tts: synthesize streaming."""


ATTRIBUTION = {"name": "voxgate", "url": "https://github.com/voxgate/voxgate"}


def info(
    *,
    asr: Sequence[Program] = (),
    tts: Sequence[Program] = (),
    wake: Sequence[Program] = (),
) -> bytes:
    """The answer to ``describe``, with the fields the reference ``Info.from_event`` reads (and
    Home Assistant uses: a program counts when ``installed``)."""

    def artifact(item: Artifact) -> dict[str, Any]:
        return {
            "name": item.name,
            "attribution": ATTRIBUTION,
            "installed": True,
            "description": item.description or item.name,
            "version": item.version,
            "languages": list(item.languages),
        }

    def program(p: Program, items: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "name": p.name,
            "attribution": ATTRIBUTION,
            "installed": True,
            "description": p.description,
            "version": p.version,
            items: [artifact(a) for a in p.artifacts],
            **extra,
        }

    data = {
        "asr": [program(p, "models", {"supports_transcript_streaming": p.streaming}) for p in asr],
        "tts": [program(p, "voices", {"supports_synthesize_streaming": p.streaming}) for p in tts],
        "wake": [program(p, "models", {}) for p in wake],
        "handle": [],
        "intent": [],
        "mic": [],
        "snd": [],
    }
    for entry in data["wake"]:
        for model in entry["models"]:
            model["phrase"] = model["description"]
    return encode("info", data)
