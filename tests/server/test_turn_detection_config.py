"""Turn detection from the configuration to the session, over a real relay socket:
``vad.threshold`` decides what counts as speech, ``turn.end_of_turn_silence_ms`` when it ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.fakes import Fakes, bounded, concat, pcm_bytes, silence, tone
from tests.server_harness import open_store, running_server
from voxgate.core.config import Settings


async def events_after_speaking(settings: Settings, audio_ms: tuple[int, int]) -> list[str]:
    """The relay events a client gets for a tone then silence (FakeVAD scores the tone 0.9)."""
    fakes = Fakes()
    engines = fakes.engines()
    store = await open_store(settings.data_dir)
    _, token = await store.devices.add("kitchen")
    seen: list[str] = []
    try:
        async with running_server(settings, engines, store) as address:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"ws://{address}/v1/relay"
            async with connect(url, additional_headers=headers, proxy=None) as ws:
                start: dict[str, Any] = {"greeting": False}
                await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": start}))
                samples = concat(tone(audio_ms[0]), silence(audio_ms[1]))
                for offset in range(0, len(samples), 320):
                    await ws.send(pcm_bytes(samples[offset : offset + 320]))
                try:
                    async with asyncio.timeout(1.5):
                        while "turn.done" not in seen:
                            frame = await ws.recv()
                            if isinstance(frame, str):
                                seen.append(json.loads(frame)["event"])
                except TimeoutError:
                    pass
    finally:
        engines.close()
        await store.close()
    return seen


@bounded(30)
@pytest.mark.parametrize(("threshold", "heard"), [(0.5, True), (0.95, False)])
async def test_vad_threshold_decides_what_is_speech(
    tmp_path: Path, threshold: float, heard: bool
) -> None:
    settings = Settings(data_dir=tmp_path, vad={"threshold": threshold})  # type: ignore[arg-type]
    seen = await events_after_speaking(settings, (600, 700))
    assert ("speech.started" in seen) is heard, seen
    assert ("turn.done" in seen) is heard, seen


@bounded(30)
async def test_end_of_turn_silence_comes_from_the_turn_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, turn={"end_of_turn_silence_ms": 2000})  # type: ignore[arg-type]
    seen = await events_after_speaking(settings, (600, 1000))
    assert "speech.started" in seen and "speech.stopped" not in seen, seen
