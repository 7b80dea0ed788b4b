"""TTS provider for any Wyoming server (wyoming-piper, another voxgate, ...): one TCP connection
per text, ``synthesize``, and the audio-start/chunk/stop back, passed on as it comes.

Its ``sample_rate_hz`` is declared in the settings (a Wyoming server says its rate only in each
answer): audio at another rate is resampled to it. Framing is voxgate's own codec.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import numpy as np
from pydantic import Field

from voxgate.core.audio import StreamResampler
from voxgate.core.capabilities import Int16Array
from voxgate.core.engine_settings import TTSSettings
from voxgate.core.errors import ErrorCode
from voxgate.protocols import wyoming
from voxgate.protocols.wyoming_requests import MAX_CHANNELS, MAX_RATE_HZ, MIN_RATE_HZ
from voxgate.providers.wyoming_client import WyomingChannel, WyomingServerSettings, wyoming_request


class WyomingTTSSettings(TTSSettings, WyomingServerSettings):
    """``[tts] provider = "wyoming"``: a Wyoming text-to-speech server at ``host``:``port``."""

    provider: Literal["wyoming"] = "wyoming"
    port: int = Field(10200, ge=1, le=65535)
    voice: str | None = None
    """Sent as ``synthesize.voice.name`` (None: the server's default voice)."""
    speaker: str | None = None
    """Of a multi-speaker voice."""
    sample_rate_hz: int = Field(22_050, ge=8_000, le=96_000)
    """The rate voxgate takes the audio at (Piper's medium voices speak 22050 Hz)."""

    @property
    def priced_model(self) -> str:
        return self.voice or "default"


class WyomingTTS:
    def __init__(self, settings: WyomingTTSSettings) -> None:
        self._settings = settings
        self.model = settings.priced_model
        self.sample_rate_hz = settings.sample_rate_hz

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        return self._stream(text, voice or self._settings.voice)

    async def _stream(self, text: str, voice: str | None) -> AsyncIterator[Int16Array]:
        if not text.strip():
            return
        settings = self._settings
        request: dict[str, Any] = {"text": text}
        if voice:
            request["voice"] = {"name": voice} | (
                {"speaker": settings.speaker} if settings.speaker else {}
            )
        # Closing this generator early (a barge-in) leaves the ``async with``: the connection is
        # dropped instead of reading audio nobody will hear.
        async with wyoming_request(settings, settings.port, "tts", ErrorCode.TTS_FAILED) as server:
            await server.send(wyoming.encode("synthesize", request))
            resampler: StreamResampler | None = None
            while True:
                event = await server.next_event()
                if event.type == "audio-stop":
                    if resampler is not None:
                        tail = resampler.process(np.zeros(0, dtype=np.int16), last=True)
                        if tail.size:
                            yield tail
                    return
                if event.type != "audio-chunk":
                    continue  # audio-start, and anything newer servers add
                rate, channels = _format(server, event.data)
                if resampler is None or resampler.from_hz != rate:
                    resampler = StreamResampler(rate, self.sample_rate_hz)
                samples = _samples(server, event.payload, channels)
                out = resampler.process(samples)
                if out.size:
                    yield out


def _format(server: WyomingChannel, data: Any) -> tuple[int, int]:
    rate, width, channels = data.get("rate"), data.get("width"), data.get("channels")
    if (
        not isinstance(rate, int)
        or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ
        or width != wyoming.PCM16_WIDTH
        or not isinstance(channels, int)
        or not 1 <= channels <= MAX_CHANNELS
    ):
        raise server.failure(
            f"sent audio voxgate cannot play: {rate} Hz, width {width}, {channels} channel(s)"
        )
    return rate, channels


def _samples(server: WyomingChannel, payload: bytes, channels: int) -> Int16Array:
    if len(payload) % (2 * channels):
        raise server.failure("sent an audio chunk of partial samples")
    samples = np.frombuffer(payload, dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples


def create(settings: WyomingTTSSettings, models: object) -> WyomingTTS:
    """Registry factory; ``models`` (the model store) is unused: the server holds the voice."""
    return WyomingTTS(settings)
