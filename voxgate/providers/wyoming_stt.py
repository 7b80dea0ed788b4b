"""STT provider for any Wyoming server (wyoming-faster-whisper, another voxgate, ...): one TCP
connection per utterance, ``transcribe`` + audio-start/chunk/stop, the ``transcript`` back.

A house that already runs Home Assistant's speech services can point voxgate at them
(``[stt] provider = "wyoming"``). Framing is voxgate's own codec (voxgate/protocols/wyoming.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from voxgate.core.audio import float_to_int16
from voxgate.core.capabilities import Float32Array
from voxgate.core.engine_settings import STTSettings
from voxgate.core.errors import ErrorCode
from voxgate.protocols import wyoming
from voxgate.providers.wyoming_client import WyomingServerSettings, wyoming_request

SAMPLE_RATE_HZ = 16_000
CHUNK_SAMPLES = 16_000
"""One second of audio an event, well under any server's payload limit."""


class WyomingSTTSettings(STTSettings, WyomingServerSettings):
    """``[stt] provider = "wyoming"``: a Wyoming speech-to-text server at ``host``:``port``."""

    provider: Literal["wyoming"] = "wyoming"
    port: int = Field(10300, ge=1, le=65535)
    model: str = "wyoming"
    """Names the engine in usage records and prices (``[prices."wyoming/<model>"]``)."""
    asr_model: str | None = None
    """Sent as ``transcribe.name``: the server's model to use (None: its default)."""
    language: str | None = "en"


class WyomingSTT:
    sample_rate_hz = SAMPLE_RATE_HZ
    streaming = False

    def __init__(self, settings: WyomingSTTSettings) -> None:
        self._settings = settings
        self.model = settings.model

    async def transcribe(self, audio: Float32Array) -> str:
        if audio.size == 0:
            return ""
        settings = self._settings
        request: dict[str, Any] = {}
        if settings.language:
            request["language"] = settings.language
        if settings.asr_model:
            request["name"] = settings.asr_model
        pcm = float_to_int16(audio).astype("<i2").tobytes()
        step = CHUNK_SAMPLES * 2
        async with wyoming_request(settings, settings.port, "stt", ErrorCode.STT_FAILED) as server:
            await server.send(
                wyoming.encode("transcribe", request),
                wyoming.audio_start(SAMPLE_RATE_HZ),
                *(
                    wyoming.audio_chunk(pcm[at : at + step], SAMPLE_RATE_HZ)
                    for at in range(0, len(pcm), step)
                ),
                wyoming.audio_stop(),
            )
            while True:  # transcript-start and -chunk may come first; the transcript counts
                event = await server.next_event()
                if event.type == "transcript":
                    text = event.data.get("text")
                    if not isinstance(text, str):
                        raise server.failure("sent a transcript without text")
                    return text.strip()


def create(settings: WyomingSTTSettings, models: object) -> WyomingSTT:
    """Registry factory; ``models`` (the model store) is unused: the server holds the model."""
    return WyomingSTT(settings)
