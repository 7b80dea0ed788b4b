"""Opus packets to and from PCM16, through PyAV (which bundles libopus). Sans-I/O: bytes in, bytes
out, no sockets.

The defaults are what ElatoAI's firmware expects: 24 kHz mono, 120 ms frames, 24 kbps, application
VOIP, one packet per frame.
"""

from __future__ import annotations

from typing import Literal

import av
import av.error
import numpy as np
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.packet import Packet

from voxgate.core.audio import StreamResampler
from voxgate.core.capabilities import Int16Array
from voxgate.core.errors import ErrorCode, ProtocolError

OPUS_RATES_HZ = (8_000, 12_000, 16_000, 24_000, 48_000)
"""The rates libopus encodes at."""
OPUS_FRAME_MS = (2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0)
"""The frame durations libopus allows."""
DECODED_RATE_HZ = 48_000
"""libavcodec's libopus decoder always gives 48 kHz; other rates are resampled from it."""

Application = Literal["voip", "audio", "lowdelay"]


class OpusPacketizer:
    """PCM16 little-endian mono in chunks of any size → one Opus packet per full frame.

    :meth:`flush` zero-pads what is left into a last frame (the end of a reply);
    :meth:`reset` drops it instead (an interrupted reply). The encoder's state carries over from
    one reply to the next, as the device's decoder does.
    """

    def __init__(
        self,
        sample_rate_hz: int = 24_000,
        *,
        frame_ms: float = 120.0,
        bitrate_bps: int = 24_000,
        application: Application = "voip",
    ) -> None:
        if sample_rate_hz not in OPUS_RATES_HZ:
            raise ValueError(f"Opus does not encode at {sample_rate_hz} Hz ({OPUS_RATES_HZ})")
        if frame_ms not in OPUS_FRAME_MS:
            raise ValueError(f"Opus has no {frame_ms} ms frames ({OPUS_FRAME_MS})")
        self.sample_rate_hz = sample_rate_hz
        self.frame_ms = frame_ms
        self.frame_samples = round(sample_rate_hz * frame_ms / 1000)
        context = av.CodecContext.create("libopus", "w")
        assert isinstance(context, AudioCodecContext)
        context.sample_rate = sample_rate_hz
        context.layout = "mono"
        context.format = "s16"
        context.bit_rate = bitrate_bps
        # frame_duration takes milliseconds as text; "2.5" must not become "2".
        context.options = {"application": application, "frame_duration": f"{frame_ms:g}"}
        context.open()
        if context.options:  # libavcodec leaves the options it did not use in the dict
            raise ValueError(f"libopus ignored the options {context.options}")
        self._context = context
        self._pending = bytearray()
        self._odd_byte = b""

    @property
    def pending_samples(self) -> int:
        """Samples waiting for a frame to fill."""
        return len(self._pending) // 2

    def push(self, pcm: bytes) -> list[bytes]:
        """Packets for every frame the new audio completes (none while a frame is filling)."""
        data = self._odd_byte + pcm
        usable = len(data) - len(data) % 2
        self._odd_byte = data[usable:]
        self._pending += data[:usable]
        frame_bytes = self.frame_samples * 2
        packets: list[bytes] = []
        while len(self._pending) >= frame_bytes:
            packets.extend(self._encode(bytes(self._pending[:frame_bytes])))
            del self._pending[:frame_bytes]
        return packets

    def flush(self) -> list[bytes]:
        """The last partial frame, zero-padded to a whole one (nothing if no audio is waiting)."""
        self._odd_byte = b""
        if not self._pending:
            return []
        frame = bytes(self._pending).ljust(self.frame_samples * 2, b"\x00")
        self._pending.clear()
        return self._encode(frame)

    def reset(self) -> None:
        """Forget the audio waiting for a frame (the reply it belonged to was cut short)."""
        self._pending.clear()
        self._odd_byte = b""

    def _encode(self, frame: bytes) -> list[bytes]:
        samples = np.frombuffer(frame, dtype="<i2").reshape(1, -1)
        audio = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        audio.sample_rate = self.sample_rate_hz
        # libopus returns the packet of each frame at once; its look-ahead shows up as a short
        # delay in the decoded audio, not as a packet held back.
        return [bytes(packet) for packet in self._context.encode(audio)]


class OpusDecoder:
    """Opus packets → PCM16 little-endian mono at ``sample_rate_hz``.

    Decodes at 48 kHz (as libavcodec's libopus does) and resamples as a stream, so a few
    milliseconds of audio stay in the resampler until :meth:`flush`.
    """

    def __init__(self, sample_rate_hz: int = 24_000) -> None:
        context = av.CodecContext.create("libopus", "r")
        assert isinstance(context, AudioCodecContext)
        context.sample_rate = DECODED_RATE_HZ
        context.layout = "mono"
        context.open()
        self.sample_rate_hz = sample_rate_hz
        self._context = context
        self._resampler = StreamResampler(DECODED_RATE_HZ, sample_rate_hz)

    def decode(self, packet: bytes) -> bytes:
        """The audio of one packet. A packet libopus cannot read raises ProtocolError."""
        if not packet:
            raise ProtocolError("empty Opus packet", code=ErrorCode.BAD_AUDIO)
        try:
            frames = self._context.decode(Packet(packet))
        except av.error.FFmpegError as exc:
            raise ProtocolError(f"not an Opus packet: {exc}", code=ErrorCode.BAD_AUDIO) from exc
        parts = [self._samples(frame) for frame in frames]
        if not parts:
            return b""
        out = self._resampler.process(np.concatenate(parts))
        return out.astype("<i2").tobytes()

    def flush(self) -> bytes:
        """What the resampler still holds (the end of the stream)."""
        out = self._resampler.process(np.zeros(0, dtype=np.int16), last=True)
        return out.astype("<i2").tobytes()

    @staticmethod
    def _samples(frame: AudioFrame) -> Int16Array:
        array = frame.to_ndarray()
        if array.dtype != np.int16:  # a float decoder: scale to PCM16
            array = np.clip(array * 32768.0, -32768, 32767)
        samples: Int16Array = np.ascontiguousarray(array[0], dtype=np.int16)
        return samples
