"""The Wyoming STT and TTS providers against voxgate's own Wyoming server and against a stand-in
server speaking the exact wire format (byte-level, with what it was asked recorded)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.wyoming_harness import standin_settings, wyoming_server
from voxgate.core.audio import int16_to_float
from voxgate.core.config import Settings
from voxgate.core.engine_settings import engine_settings
from voxgate.core.errors import ProviderError
from voxgate.core.usage import UsageMeter, metering
from voxgate.models import ModelStore
from voxgate.pipeline import load_engines
from voxgate.protocols import wyoming
from voxgate.protocols.wyoming import WyomingDecoder, WyomingEvent
from voxgate.providers.wyoming_stt import WyomingSTT, WyomingSTTSettings
from voxgate.providers.wyoming_tts import WyomingTTS, WyomingTTSSettings

Script = Callable[[list[WyomingEvent], asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def stand_in_server(
    until: str, answer: Script
) -> AsyncIterator[tuple[int, list[WyomingEvent]]]:
    """A Wyoming server that reads events up to one of type ``until``, then runs ``answer``
    with them; yields its port and every event it was sent."""
    received: list[WyomingEvent] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder, events = WyomingDecoder(), []
        while not any(e.type == until for e in events):
            data = await reader.read(65536)
            if not data:
                return
            events += decoder.receive_data(data)
        received.extend(events)
        await answer(events, writer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


def stt(port: int, **settings: object) -> WyomingSTT:
    return WyomingSTT(WyomingSTTSettings(port=port, timeout_s=5, **settings))  # type: ignore[arg-type]


def tts(port: int, **settings: object) -> WyomingTTS:
    return WyomingTTS(WyomingTTSSettings(port=port, timeout_s=5, **settings))  # type: ignore[arg-type]


async def spoken(engine: WyomingTTS, text: str) -> np.ndarray:
    return np.concatenate([chunk async for chunk in engine.synthesize(text)])


SPEECH = int16_to_float((np.sin(np.arange(24_000) / 5) * 6000).astype(np.int16))


# -- against voxgate's own Wyoming server -------------------------------------------------------


async def test_providers_against_voxgates_own_wyoming_server(tmp_path: Path) -> None:
    async with wyoming_server(standin_settings(tmp_path, tts_port=0)) as served:
        both, tts_only = served.ports
        text = await stt(both).transcribe(SPEECH)
        audio = await spoken(tts(tts_only, sample_rate_hz=22_050), "one two three")
    assert text == "hello there"  # the stand-in STT behind voxgate's server
    # Three words of the stand-in's 200 ms tone at 16 kHz, resampled to 22.05 kHz.
    assert abs(len(audio) - 3 * 0.2 * 22_050) < 0.02 * 22_050
    assert np.abs(audio).max() > 4000


async def test_voxgate_can_run_on_another_voxgates_wyoming_engines(tmp_path: Path) -> None:
    """Engines as shared services: a front voxgate whose STT and TTS are a back voxgate's
    Wyoming server, metered under the ``wyoming`` provider."""
    async with wyoming_server(standin_settings(tmp_path / "back")) as back:
        port = back.ports[0]
        front = Settings(
            data_dir=tmp_path / "front",
            vad={"provider": "standin"},  # type: ignore[arg-type]
            llm={"provider": "standin"},  # type: ignore[arg-type]
            stt={"provider": "wyoming", "port": port},  # type: ignore[arg-type]
            tts={"provider": "wyoming", "port": port, "sample_rate_hz": 16_000},  # type: ignore[arg-type]
        )
        engines = load_engines(front, ModelStore(front.models_dir))
        with metering(UsageMeter()) as meter:
            text = await engines.stt.transcribe(SPEECH)
            audio = [chunk async for chunk in engines.tts.synthesize("hi there")]
        await engines.aclose()
    assert text == "hello there"
    assert sum(len(a) for a in audio) == 2 * 3200
    assert [(u.capability, u.provider) for u in meter.records] == [
        ("stt", "wyoming"),
        ("tts", "wyoming"),
    ]


# -- against a stand-in server ------------------------------------------------------------------


async def test_stt_stand_in_sees_the_exact_request_and_streamed_transcript_is_read() -> None:
    async def answer(events: list[WyomingEvent], writer: asyncio.StreamWriter) -> None:
        writer.write(
            wyoming.transcript_start("en")
            + wyoming.transcript_chunk("what is")
            + wyoming.transcript(" What is the capital of France? ", "en")
            + wyoming.transcript_stop()
        )

    async with stand_in_server("audio-stop", answer) as (port, received):
        text = await stt(port, asr_model="tiny-int8", language="fr").transcribe(SPEECH)
    assert text == "What is the capital of France?"
    kinds = [e.type for e in received]
    assert kinds[:2] == ["transcribe", "audio-start"] and kinds[-1] == "audio-stop"
    assert dict(received[0].data) == {"language": "fr", "name": "tiny-int8"}
    assert dict(received[1].data) == {"rate": 16000, "width": 2, "channels": 1}
    chunks = [e for e in received if e.type == "audio-chunk"]
    assert len(chunks) == 2  # 1.5 s in one-second chunks
    pcm = np.frombuffer(b"".join(c.payload for c in chunks), dtype="<i2")
    assert len(pcm) == len(SPEECH)


async def test_tts_stand_in_audio_in_another_rate_and_stereo_is_resampled_and_mixed() -> None:
    stereo = np.repeat(np.full(24_000, 5000, dtype="<i2"), 2)  # 1 s at 24 kHz, two channels

    async def answer(events: list[WyomingEvent], writer: asyncio.StreamWriter) -> None:
        writer.write(wyoming.audio_start(24_000, channels=2))
        half = stereo.tobytes()[: len(stereo)]  # the first half second
        rest = stereo.tobytes()[len(stereo) :]
        writer.write(wyoming.audio_chunk(half, 24_000, channels=2))
        writer.write(wyoming.audio_chunk(rest, 24_000, channels=2))
        writer.write(wyoming.audio_stop())

    async with stand_in_server("synthesize", answer) as (port, received):
        audio = await spoken(tts(port, voice="en_US-joe-medium", speaker="2"), "Hello.")
    [request] = received
    assert dict(request.data) == {
        "text": "Hello.",
        "voice": {"name": "en_US-joe-medium", "speaker": "2"},
    }
    assert abs(len(audio) - 22_050) < 200  # one second at the declared 22.05 kHz
    assert abs(int(np.median(audio)) - 5000) < 50


@pytest.mark.parametrize(
    ("reply", "message", "retryable"),
    [
        (wyoming.error("too many", "rate_limited"), "answered error rate_limited: too many", True),
        (wyoming.error("model broke", "internal"), "answered error internal", False),
        (b"", "closed the connection before answering", True),
        (b"not json\n", "sent a broken event", False),
        (wyoming.encode("transcript", {"text": 5}), "without text", False),
    ],
)
async def test_stt_stand_in_failures_are_provider_errors(
    reply: bytes, message: str, retryable: bool
) -> None:
    async def answer(events: list[WyomingEvent], writer: asyncio.StreamWriter) -> None:
        writer.write(reply)

    async with stand_in_server("audio-stop", answer) as (port, _):
        with pytest.raises(ProviderError, match=message) as raised:
            await stt(port).transcribe(SPEECH)
    assert raised.value.retryable is retryable
    assert raised.value.code == "stt_failed"


async def test_tts_stand_in_audio_voxgate_cannot_play_is_refused() -> None:
    async def answer(events: list[WyomingEvent], writer: asyncio.StreamWriter) -> None:
        header = {"rate": 22050, "width": 4, "channels": 1}
        writer.write(wyoming.encode("audio-chunk", header, b"\x00" * 8))

    async with stand_in_server("synthesize", answer) as (port, _):
        with pytest.raises(ProviderError, match="width 4") as raised:
            await spoken(tts(port), "Hi.")
    assert raised.value.code == "tts_failed"


async def test_a_server_that_is_not_there_is_a_retryable_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(ProviderError, match="cannot connect") as raised:
        await stt(port).transcribe(SPEECH)
    assert raised.value.retryable


async def test_a_silent_stand_in_times_out() -> None:
    async def answer(events: list[WyomingEvent], writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3)

    async with stand_in_server("synthesize", answer) as (port, _):
        engine = WyomingTTS(WyomingTTSSettings(port=port, timeout_s=0.5))
        with pytest.raises(ProviderError, match="sent nothing") as raised:
            await spoken(engine, "Hi.")
    assert raised.value.retryable


def test_settings_are_a_section_of_their_own() -> None:
    section = engine_settings("stt", {"provider": "wyoming", "host": "ha.local", "port": 10301})
    assert isinstance(section, WyomingSTTSettings) and section.port == 10301
    voice = engine_settings("tts", {"provider": "wyoming", "voice": "en_GB-alan-low"})
    assert isinstance(voice, WyomingTTSSettings) and voice.priced_model == "en_GB-alan-low"
    assert json.loads(voice.model_dump_json())["port"] == 10200
