"""The xiaozhi-esp32 device protocol over WebSocket, sans-I/O (spec:
``shared/protocols/xiaozhi.md``; docs: ``docs/protocols/xiaozhi.md``).

The connection's rules live in :class:`XiaozhiConnection`: the device's ``hello`` comes first
(audio before it, or a hello that is not one, ends the connection), the binary protocol version
(1: bare Opus, 2 and 3: a big-endian header) is the ``Protocol-Version`` header's or the hello's,
and every binary message is decoded from Opus to PCM16 here, so a packet that is not Opus is a
close code, tested on literals. The downlink is :mod:`voxgate.protocols.xiaozhi_downlink`, the
MCP client :mod:`voxgate.protocols.xiaozhi_mcp`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from voxgate.core.errors import ErrorCode, ProtocolError
from voxgate.protocols.closing import Close, CloseCode, Ending
from voxgate.protocols.opus import OPUS_RATES_HZ, OpusDecoder

PROTOCOL = "xiaozhi"
INPUT_RATE_HZ = 16_000
"""What the session is fed: the device's Opus decoded (and resampled) to this rate."""
OUTPUT_RATE_HZ = 24_000
"""The rate of the Opus the server sends, announced in its hello."""
FRAME_MS = 60
"""The firmware's Opus frame (``OPUS_FRAME_DURATION_MS``), both ways."""
VERSIONS = (1, 2, 3)
"""Binary protocol versions: 1 bare Opus; 2 a 16-byte header; 3 a 4-byte header."""
HELLO_TIMEOUT_S = 10.0
"""The firmware gives up on the server's hello after 10 s; the server waits as long for its."""

_V2_HEADER = struct.Struct(">HHIII")  # version, type, reserved, timestamp (ms), payload size
_V3_HEADER = struct.Struct(">BBH")  # type, reserved, payload size
TYPE_OPUS = 0
TYPE_JSON = 1


class ListenMode(StrEnum):
    """Who ends the user's turn: the server's VAD (auto), the device's ``listen stop``
    (manual, push-to-talk), or the server's VAD with barge-in over the reply (realtime: the
    device keeps its microphone open while speaking, which needs its AEC)."""

    AUTO = "auto"
    MANUAL = "manual"
    REALTIME = "realtime"


class ListenState(StrEnum):
    START = "start"
    STOP = "stop"
    DETECT = "detect"


@dataclass(frozen=True, slots=True)
class AudioParams:
    format: str
    sample_rate_hz: int
    channels: int
    frame_duration_ms: int


@dataclass(frozen=True, slots=True)
class Hello:
    """The device's first message."""

    version: int
    """Its binary protocol version."""
    audio_params: AudioParams
    mcp: bool
    """It speaks MCP (``features.mcp``): the server lists and calls its tools."""
    aec: bool
    """It cancels its own echo (``features.aec``): realtime mode is for these."""


@dataclass(frozen=True, slots=True)
class Listen:
    state: ListenState
    mode: ListenMode | None = None
    """With ``start`` (the firmware always says; None from a client that does not)."""
    text: str | None = None
    """With ``detect``: the wake word the device heard (or text a client types)."""


@dataclass(frozen=True, slots=True)
class Abort:
    """Stop the reply now (a button, the wake word said over the reply)."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Mcp:
    """A JSON-RPC 2.0 message from the device's MCP server."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ping:
    """Keep-alive (the firmware sends none over WebSocket; other clients may)."""


@dataclass(frozen=True, slots=True)
class Audio:
    """One uplink Opus packet, decoded: PCM16 LE mono at :data:`INPUT_RATE_HZ`."""

    pcm: bytes
    timestamp_ms: int | None = None
    """Version 2's timestamp (for server-side AEC; unused)."""


Inbound = Hello | Listen | Abort | Mcp | Ping | Audio


class XiaozhiClosed(Exception):
    """The connection must end with ``close``."""

    def __init__(self, close: Close) -> None:
        super().__init__(close.reason)
        self.close = close


@dataclass
class XiaozhiConnection:
    """One device connection's rules, fed the messages as they come."""

    header_version: int | None = None
    """The ``Protocol-Version`` upgrade header (None: not sent)."""
    hello: Hello | None = None
    version: int = 1
    _decoder: OpusDecoder | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.header_version is not None:
            self.version = _check_version(self.header_version)

    def receive(self, data: str | bytes) -> Inbound:
        """One WebSocket message; raises :class:`XiaozhiClosed` when the connection must end.
        JSON the server has no use for raises ProtocolError (ignored by the adapter)."""
        if isinstance(data, bytes):
            return self._binary(data)
        message = _json_object(data)
        if message is None:
            if self.hello is None:
                raise XiaozhiClosed(_malformed("not a JSON object"))
            raise ProtocolError("not a JSON object")
        kind = message.get("type")
        if self.hello is None:
            if kind != "hello":
                raise XiaozhiClosed(_malformed(f"expected hello first, got {kind!r}"))
            self.hello = self._hello(message)
            return self.hello
        return _after_hello(kind, message)

    def _hello(self, message: dict[str, Any]) -> Hello:
        version = message.get("version", self.version)
        if isinstance(version, bool) or not isinstance(version, int):
            raise XiaozhiClosed(_malformed(f"version must be a number, not {version!r}"))
        # The header decides where it was sent (the firmware sends both, equal).
        if self.header_version is None:
            self.version = _check_version(version)
        transport = message.get("transport", "websocket")
        if transport != "websocket":
            raise XiaozhiClosed(_malformed(f"transport {transport!r} is not websocket"))
        params = _audio_params(message.get("audio_params"))
        features = message.get("features")
        features = features if isinstance(features, dict) else {}
        self._decoder = OpusDecoder(INPUT_RATE_HZ)
        return Hello(
            version=self.version,
            audio_params=params,
            mcp=features.get("mcp") is True,
            aec=features.get("aec") is True,
        )

    def _binary(self, data: bytes) -> Audio:
        if self.hello is None or self._decoder is None:
            raise XiaozhiClosed(
                Close(
                    CloseCode.PROTOCOL_VIOLATION, "audio before hello", error=ErrorCode.BAD_REQUEST
                )
            )
        payload, timestamp = unframe(self.version, data)
        try:
            pcm = self._decoder.decode(payload)
        except ProtocolError as exc:
            raise XiaozhiClosed(
                Close(CloseCode.INVALID_PAYLOAD, str(exc), error=ErrorCode.BAD_AUDIO)
            ) from None
        return Audio(pcm, timestamp)


def unframe(version: int, data: bytes) -> tuple[bytes, int | None]:
    """The Opus payload of one binary message (and version 2's timestamp); a header that does
    not add up ends the connection."""
    if version == 1:
        return data, None
    header = _V2_HEADER if version == 2 else _V3_HEADER
    if len(data) < header.size:
        raise XiaozhiClosed(_bad_frame(f"{len(data)} bytes is shorter than the v{version} header"))
    if version == 2:
        frame_version, kind, _, timestamp, size = _V2_HEADER.unpack_from(data)
        if frame_version != 2:
            raise XiaozhiClosed(_bad_frame(f"a v2 header says version {frame_version}"))
    else:
        kind, _, size = _V3_HEADER.unpack_from(data)
        timestamp = None
    payload = data[header.size :]
    if size != len(payload):
        raise XiaozhiClosed(_bad_frame(f"payload_size {size} but {len(payload)} bytes follow"))
    if kind != TYPE_OPUS:
        raise XiaozhiClosed(_bad_frame(f"binary type {kind} is not Opus (0)"))
    return payload, timestamp


def frame(version: int, payload: bytes, timestamp_ms: int = 0) -> bytes:
    """One downlink Opus packet in binary protocol ``version``."""
    if version == 2:
        header = _V2_HEADER.pack(2, TYPE_OPUS, 0, timestamp_ms & 0xFFFFFFFF, len(payload))
        return header + payload
    if version == 3:
        return _V3_HEADER.pack(TYPE_OPUS, 0, len(payload)) + payload
    return payload


def server_hello(session_id: str, *, sample_rate_hz: int = OUTPUT_RATE_HZ) -> str:
    """The answer to the device's hello. ``transport`` must be there (the firmware dereferences
    it), ``session_id`` and ``audio_params`` too (xiaozhi-sdk reads both)."""
    return dump(
        {
            "type": "hello",
            "transport": "websocket",
            "session_id": session_id,
            "audio_params": {
                "format": "opus",
                "sample_rate": sample_rate_hz,
                "channels": 1,
                "frame_duration": FRAME_MS,
            },
        }
    )


def dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _json_object(data: str) -> dict[str, Any] | None:
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def _after_hello(kind: object, message: dict[str, Any]) -> Inbound:
    match kind:
        case "listen":
            return _listen(message)
        case "abort":
            reason = message.get("reason")
            return Abort(reason if isinstance(reason, str) and reason else None)
        case "mcp":
            payload = message.get("payload")
            if not isinstance(payload, dict):
                raise ProtocolError("an mcp message carries a JSON-RPC object in payload")
            return Mcp(payload)
        case "ping":
            return Ping()
        case "hello":
            raise ProtocolError("a second hello")
    raise ProtocolError(f"unknown message type {kind!r}", code=ErrorCode.UNKNOWN_EVENT)


def _listen(message: dict[str, Any]) -> Listen:
    try:
        state = ListenState(str(message.get("state")))
    except ValueError:
        raise ProtocolError(f"unknown listen state {message.get('state')!r}") from None
    mode: ListenMode | None = None
    if "mode" in message:
        try:
            mode = ListenMode(message["mode"])
        except ValueError:
            raise ProtocolError(f"unknown listen mode {message['mode']!r}") from None
    text = message.get("text")
    return Listen(state, mode, text if isinstance(text, str) else None)


def _audio_params(value: object) -> AudioParams:
    if value is None:  # the firmware always sends them; assume its defaults otherwise
        return AudioParams("opus", INPUT_RATE_HZ, 1, FRAME_MS)
    if not isinstance(value, dict):
        raise XiaozhiClosed(_malformed("audio_params must be an object"))
    fmt = value.get("format", "opus")
    rate = value.get("sample_rate", INPUT_RATE_HZ)
    channels = value.get("channels", 1)
    frame_ms = value.get("frame_duration", FRAME_MS)
    if fmt != "opus":
        raise XiaozhiClosed(_malformed(f"audio format {fmt!r} is not supported (opus)"))
    if rate not in OPUS_RATES_HZ or isinstance(rate, bool):
        raise XiaozhiClosed(_malformed(f"sample_rate {rate!r} is not an Opus rate"))
    if channels != 1 or isinstance(channels, bool):
        raise XiaozhiClosed(_malformed(f"channels {channels!r}: only mono is supported"))
    if not isinstance(frame_ms, int) or isinstance(frame_ms, bool) or not 0 < frame_ms <= 120:
        raise XiaozhiClosed(_malformed(f"frame_duration {frame_ms!r} is not an Opus frame"))
    return AudioParams(fmt, rate, channels, frame_ms)


def _check_version(version: int) -> int:
    if version not in VERSIONS:
        raise XiaozhiClosed(
            Close(
                CloseCode.UNSUPPORTED_DATA,
                f"binary protocol version {version} is not supported (1, 2, 3)",
                error=ErrorCode.BAD_REQUEST,
            )
        )
    return version


def _malformed(detail: str) -> Close:
    return Close(
        CloseCode.PROTOCOL_VIOLATION, f"malformed hello: {detail}", error=ErrorCode.BAD_REQUEST
    )


def _bad_frame(detail: str) -> Close:
    return Close(
        CloseCode.PROTOCOL_VIOLATION, f"bad binary frame: {detail}", error=ErrorCode.BAD_REQUEST
    )


def parse_version_header(value: str | None) -> int | None:
    """The ``Protocol-Version`` header; one that is not a number is an unknown version."""
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise XiaozhiClosed(
            Close(
                CloseCode.UNSUPPORTED_DATA,
                f"Protocol-Version {value[:20]!r} is not a number",
                error=ErrorCode.BAD_REQUEST,
            )
        ) from None


# -- closing -----------------------------------------------------------------------------------


def close_for(ending: Ending, detail: str = "") -> Close:
    """How a connection ends. The firmware reads no close code (any close sends it back to
    idle, where the wake word or a button opens a new connection); the codes and reasons are
    for logs and other clients."""
    match ending:
        case Ending.CLIENT_ENDED | Ending.ASSISTANT_ENDED:
            return Close(CloseCode.NORMAL, detail)
        case Ending.SERVER_SHUTDOWN:
            return Close(CloseCode.GOING_AWAY, "the server is shutting down")
        case Ending.SHUTTING_DOWN:
            return Close(CloseCode.TRY_AGAIN_LATER, "the server is shutting down")
        case Ending.UNAUTHORIZED:
            return Close(
                CloseCode.UNAUTHORIZED, detail or "invalid token", error=ErrorCode.UNAUTHORIZED
            )
        case Ending.RATE_LIMITED:
            return Close(CloseCode.RATE_LIMITED, f"too many connections; {detail}")
        case Ending.UNAVAILABLE:
            return Close(CloseCode.TRY_AGAIN_LATER, detail)
        case Ending.BAD_REQUEST:
            return Close(CloseCode.PROTOCOL_VIOLATION, detail, error=ErrorCode.BAD_REQUEST)
        case Ending.TIMEOUT:
            return Close(CloseCode.TIMEOUT, detail)
        case Ending.TOO_LARGE:
            return Close(CloseCode.MESSAGE_TOO_BIG, detail, error=ErrorCode.MESSAGE_TOO_LARGE)
        case Ending.SLOW_CLIENT:
            return Close(CloseCode.POLICY_VIOLATION, detail)
    return Close(CloseCode.INTERNAL_ERROR)
