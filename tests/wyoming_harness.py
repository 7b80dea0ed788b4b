"""A real voxgate app serving Wyoming on loopback ports, and a client that speaks through the
``wyoming`` package's own AsyncTcpClient (Home Assistant's client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeVoice

from bench.harness import serving
from voxgate.core.config import Settings
from voxgate.models import ModelStore
from voxgate.pipeline import Engines, load_engines
from voxgate.server.app import create_app
from voxgate.server.context import ServerContext
from voxgate.server.wyoming import WyomingServer
from voxgate.store import Store

STANDIN = {capability: {"provider": "standin"} for capability in ("vad", "stt", "llm", "tts")}


def standin_settings(tmp_path: Path, **wyoming: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        wyoming={"enabled": True, "port": 0, **wyoming},
        **STANDIN,  # type: ignore[arg-type]
    )


@dataclass
class Served:
    http: str
    """host:port of the HTTP server (metrics, admin)."""
    ports: list[int]
    ctx: ServerContext
    store: Store
    wyoming: WyomingServer


@asynccontextmanager
async def wyoming_server(
    settings: Settings, engines: Engines | None = None
) -> AsyncIterator[Served]:
    """The app with ``settings`` (Wyoming enabled, port 0) on the stand-in engines, or
    ``engines`` (not closed here)."""
    own = engines is None
    loaded = engines or load_engines(settings, ModelStore(settings.models_dir))
    store = await Store.open(settings)
    app = create_app(settings, engines=loaded, store=store)
    try:
        async with serving(app) as address:
            server: WyomingServer = app.state.wyoming
            yield Served(address, server.ports, app.state.ctx, store, server)
    finally:
        await store.close()
        if own:
            await loaded.aclose()


async def events_until(client: AsyncTcpClient, last: str, limit: int = 100_000) -> list[Event]:
    """Events read up to and including the first of type ``last`` (or an ``error``)."""
    events: list[Event] = []
    for _ in range(limit):
        event = await client.read_event()
        assert event is not None, f"connection closed after {[e.type for e in events]}"
        events.append(event)
        if event.type in (last, "error"):
            return events
    raise AssertionError(f"no {last} in {limit} events")


async def send_audio(client: AsyncTcpClient, pcm: bytes, rate_hz: int, chunk_ms: int) -> None:
    """audio-start, ``pcm`` (mono PCM16) in chunks of ``chunk_ms``, audio-stop."""
    step = rate_hz * chunk_ms // 1000 * 2
    await client.write_event(AudioStart(rate=rate_hz, width=2, channels=1).event())
    for at in range(0, len(pcm), step):
        chunk = AudioChunk(rate=rate_hz, width=2, channels=1, audio=pcm[at : at + step])
        await client.write_event(chunk.event())
    await client.write_event(AudioStop().event())


async def transcribe(
    port: int,
    samples: np.ndarray,
    rate_hz: int,
    *,
    language: str | None = None,
    chunk_ms: int = 100,
) -> list[Event]:
    """What Home Assistant's STT does: transcribe, audio-start, chunks, audio-stop; the events
    until ``transcript``, then ``transcript-stop`` if it follows."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language=language).event())
        await send_audio(client, samples.astype("<i2").tobytes(), rate_hz, chunk_ms)
        events = await events_until(client, "transcript")
        if events[-1].type == "transcript":
            events += await events_until(client, "transcript-stop")
        return events


async def synthesize(port: int, text: str, voice: str | None = None) -> list[Event]:
    """What Home Assistant's TTS does: synthesize; the events until ``audio-stop``."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(
            Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event()
        )
        return await events_until(client, "audio-stop")


def audio_of(events: Sequence[Event]) -> tuple[np.ndarray, int]:
    """The PCM16 of the audio-chunk events, and their rate."""
    chunks = [AudioChunk.from_event(e) for e in events if e.type == "audio-chunk"]
    assert chunks, [e.type for e in events]
    assert {c.width for c in chunks} == {2} and {c.channels for c in chunks} == {1}
    [rate] = {c.rate for c in chunks}
    pcm = b"".join(c.audio for c in chunks)
    return np.frombuffer(pcm, dtype="<i2"), rate
