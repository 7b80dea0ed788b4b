"""What a Wyoming client may ask of voxgate, and in which order (sans-I/O).

:class:`WyomingServerProtocol` turns a connection's events (:mod:`voxgate.protocols.wyoming`) into
typed requests and holds the connection's rules:

- ``transcribe`` (or ``detect``) names what the next audio is for; ``audio-start`` opens it,
  ``audio-chunk`` carries PCM16 in the format ``audio-start`` announced, ``audio-stop`` ends it.
  Audio without a request before it is transcribed (as the reference servers do).
- ``synthesize`` is one request; ``synthesize-start``, ``synthesize-chunk``..., ``synthesize-stop``
  stream the text in. A ``synthesize`` inside a stream is the client's copy for servers that do not
  stream, and is dropped, as the protocol asks. A ``synthesize-stop`` outside a stream is answered
  (``synthesize-stopped``), not refused: some clients send one after a plain ``synthesize``.
- Unknown events are dropped (the protocol asks servers to); events out of order, audio in another
  format than announced, more audio or text than the limits allow are errors that end the
  connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from voxgate.core.capabilities import Int16Array
from voxgate.core.errors import ErrorCode
from voxgate.protocols.wyoming import (
    PCM16_WIDTH,
    WyomingDecoder,
    WyomingEvent,
    WyomingLimits,
    WyomingProtocolError,
)

MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 96_000
MAX_CHANNELS = 8

Purpose = Literal["transcribe", "detect"]


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_audio_s: float = 120.0
    """Audio of one transcription at most (a detect streams for as long as it takes)."""
    max_text_chars: int = 10_000
    """Text of one synthesis (streamed or not) at most."""


@dataclass(frozen=True, slots=True)
class Describe:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    text: str | None


@dataclass(frozen=True, slots=True)
class AudioBegun:
    purpose: Purpose
    rate_hz: int
    language: str | None
    """transcribe: the language asked for (None: the engine's)."""
    names: tuple[str, ...] | None
    """detect: the wake words asked for (None: any)."""


@dataclass(frozen=True, slots=True)
class AudioData:
    samples: Int16Array
    """Mono PCM16 (several channels are mixed down) at ``rate_hz``."""
    rate_hz: int
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class AudioEnded:
    purpose: Purpose


@dataclass(frozen=True, slots=True)
class Synthesize:
    text: str
    voice: str | None
    speaker: str | None


@dataclass(frozen=True, slots=True)
class SynthesisBegun:
    voice: str | None
    speaker: str | None


@dataclass(frozen=True, slots=True)
class SynthesisText:
    text: str


@dataclass(frozen=True, slots=True)
class SynthesisEnded:
    pass


Request = (
    Describe
    | Ping
    | AudioBegun
    | AudioData
    | AudioEnded
    | Synthesize
    | SynthesisBegun
    | SynthesisText
    | SynthesisEnded
)


class WyomingServerProtocol:
    """One server connection: bytes in, requests out (errors raise WyomingProtocolError)."""

    def __init__(
        self, limits: WyomingLimits | None = None, requests: RequestLimits | None = None
    ) -> None:
        self.decoder = WyomingDecoder(limits)
        self.requests = requests or RequestLimits()
        self._purpose: Purpose = "transcribe"
        self._language: str | None = None
        self._names: tuple[str, ...] | None = None
        self._audio: tuple[int, int] | None = None  # (rate, channels) while audio is open
        self._audio_samples = 0
        self._streaming_text = False
        self._text_chars = 0
        self.ignored: list[str] = []
        """Event types dropped as unknown (for logs and tests)."""

    def receive_data(self, data: bytes) -> list[Request]:
        return [
            request
            for event in self.decoder.receive_data(data)
            for request in self._requests(event)
        ]

    def receive_eof(self) -> None:
        self.decoder.receive_eof()

    def _requests(self, event: WyomingEvent) -> list[Request]:
        data = event.data
        match event.type:
            case "describe":
                return [Describe()]
            case "ping":
                return [Ping(_text(data, "text", required=False))]
            case "transcribe":
                self._before_audio("transcribe")
                self._language = _text(data, "language", required=False)
                return []
            case "detect":
                self._before_audio("detect")
                names = data.get("names")
                if names is not None and not (
                    isinstance(names, list) and all(isinstance(n, str) for n in names)
                ):
                    raise WyomingProtocolError("detect: names must be a list of strings")
                self._names = tuple(names) if names is not None else None
                return []
            case "audio-start":
                return [self._audio_start(data)]
            case "audio-chunk":
                return [self._audio_chunk(data, event.payload)]
            case "audio-stop":
                return [self._audio_stop()]
            case "synthesize":
                if self._streaming_text:
                    return []  # the non-streaming copy of the stream's text
                text = _text(data, "text")
                self._count_text(text, reset=True)
                return [Synthesize(text, *_voice(data))]
            case "synthesize-start":
                if self._streaming_text:
                    raise WyomingProtocolError("synthesize-start inside a text stream")
                self._streaming_text = True
                self._text_chars = 0
                return [SynthesisBegun(*_voice(data))]
            case "synthesize-chunk":
                if not self._streaming_text:
                    raise WyomingProtocolError("synthesize-chunk before synthesize-start")
                text = _text(data, "text")
                self._count_text(text)
                return [SynthesisText(text)]
            case "synthesize-stop":
                # Outside a stream too: some clients end a plain synthesize with it, and wait
                # for synthesize-stopped.
                self._streaming_text = False
                return [SynthesisEnded()]
            case other:
                self.ignored.append(other)
                return []

    def _before_audio(self, purpose: Purpose) -> None:
        if self._audio is not None:
            raise WyomingProtocolError(f"{purpose} while audio is still open (no audio-stop)")
        self._purpose = purpose
        self._language, self._names = None, None

    def _audio_start(self, data: dict[str, Any] | Any) -> AudioBegun:
        if self._audio is not None:
            raise WyomingProtocolError("audio-start while audio is already open")
        rate, channels = _format(data)
        self._audio = (rate, channels)
        self._audio_samples = 0
        return AudioBegun(self._purpose, rate, self._language, self._names)

    def _audio_chunk(self, data: dict[str, Any] | Any, payload: bytes) -> AudioData:
        if self._audio is None:
            raise WyomingProtocolError("audio-chunk before audio-start")
        rate, channels = self._audio
        if _format(data) != self._audio:
            raise WyomingProtocolError(
                f"audio-chunk in another format than audio-start announced "
                f"({rate} Hz, {channels} channel(s))",
                code=ErrorCode.BAD_AUDIO,
            )
        frame_bytes = PCM16_WIDTH * channels
        if len(payload) % frame_bytes:
            raise WyomingProtocolError(
                f"audio-chunk of {len(payload)} bytes is not whole {frame_bytes}-byte frames",
                code=ErrorCode.BAD_AUDIO,
            )
        samples = np.frombuffer(payload, dtype="<i2").astype(np.int16)
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
        self._audio_samples += len(samples)
        # A detect streams until the word is heard (hours, for Home Assistant's wake service):
        # nothing of it is kept, so only a transcription's audio is capped.
        if self._purpose == "transcribe" and self._audio_samples > self.requests.max_audio_s * rate:
            raise WyomingProtocolError(
                f"more than {self.requests.max_audio_s:.0f} s of audio in one {self._purpose}",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        timestamp = data.get("timestamp")
        stamp = (
            timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else None
        )
        return AudioData(samples, rate, stamp)

    def _audio_stop(self) -> AudioEnded:
        if self._audio is None:
            raise WyomingProtocolError("audio-stop before audio-start")
        self._audio = None
        ended = AudioEnded(self._purpose)
        self._purpose, self._language, self._names = "transcribe", None, None
        return ended

    def _count_text(self, text: str, *, reset: bool = False) -> None:
        self._text_chars = len(text) if reset else self._text_chars + len(text)
        if self._text_chars > self.requests.max_text_chars:
            raise WyomingProtocolError(
                f"more than {self.requests.max_text_chars} characters to synthesize",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )


def _text(data: Any, key: str, *, required: bool = True) -> Any:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise WyomingProtocolError(f'"{key}" must be a string')
    return value


def _format(data: Any) -> tuple[int, int]:
    rate, width, channels = data.get("rate"), data.get("width"), data.get("channels")
    if not _whole(rate) or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise WyomingProtocolError(
            f"audio rate must be {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz, not {rate!r}",
            code=ErrorCode.BAD_AUDIO,
        )
    if width != PCM16_WIDTH or isinstance(width, bool):
        raise WyomingProtocolError(
            f"audio width must be 2 (16-bit PCM), not {width!r}", code=ErrorCode.BAD_AUDIO
        )
    if not _whole(channels) or not 1 <= channels <= MAX_CHANNELS:
        raise WyomingProtocolError(
            f"audio channels must be 1..{MAX_CHANNELS}, not {channels!r}", code=ErrorCode.BAD_AUDIO
        )
    return rate, channels


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _voice(data: Any) -> tuple[str | None, str | None]:
    """``voice: {name, language, speaker}``: the voice by name (a language alone picks the
    default voice, which speaks every language voxgate lists)."""
    voice = data.get("voice") or {}
    if not isinstance(voice, dict):
        raise WyomingProtocolError('"voice" must be an object')
    return _text(voice, "name", required=False), _text(voice, "speaker", required=False)
