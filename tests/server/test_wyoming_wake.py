"""Wyoming ``detect`` → ``detection`` on the embedded wake-word engine (microWakeWord, ~55 KB
models: the quick suite), through the ``wyoming`` package's own client over a real socket.

The clip that must fire is spoken by Debian's flite at test time; the one that must not is the
committed sample question."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.wake import Detect, Detection

from tests.wyoming_harness import (
    STANDIN,
    events_until,
    send_audio,
    standin_settings,
    wyoming_server,
)
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import read_wav
from voxgate.core.config import Settings


def wake_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        wyoming={"enabled": True, "port": 0},  # type: ignore[arg-type]
        wake_word={"provider": "micro"},  # type: ignore[arg-type]
        **STANDIN,  # type: ignore[arg-type]
    )


def flite(text: str, folder: Path) -> tuple[np.ndarray, int]:
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    out = folder / "said.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(out)], check=True)
    return read_wav(out)


async def detect(port: int, samples: np.ndarray, rate: int, names: list[str] | None) -> list[Event]:
    """What Home Assistant's wake-word platform does: detect, then audio in 30 ms chunks (after
    half a second of silence, and a second after), then audio-stop."""
    padded = np.concatenate([np.zeros(rate // 2), samples, np.zeros(rate)]).astype("<i2")
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Detect(names=names).event())
        await send_audio(client, padded.tobytes(), rate, 30)
        return await events_until(client, "detection")


async def test_info_lists_the_installed_wake_words(tmp_path: Path) -> None:
    async with (
        wyoming_server(wake_settings(tmp_path)) as served,
        AsyncTcpClient("127.0.0.1", served.ports[0]) as client,
    ):
        await client.write_event(Describe().event())
        [event] = await events_until(client, "info")
    [wake] = Info.from_event(event).wake
    names = [model.name for model in wake.models]
    assert "hey_jarvis" in names and "okay_nabu" in names
    assert {m.phrase for m in wake.models} >= {"hey jarvis"}


async def test_hey_jarvis_is_detected_where_it_ends(tmp_path: Path) -> None:
    samples, rate = flite("Hey Jarvis, what is two plus three?", tmp_path)
    async with wyoming_server(wake_settings(tmp_path)) as served:
        events = await detect(served.ports[0], samples, rate, ["alexa_not_here", "hey_jarvis"])
    detection = Detection.from_event(events[-1])
    assert detection.name == "hey_jarvis"
    # "Hey Jarvis" is the first ~0.8 s of the clip, after 0.5 s of silence.
    assert detection.timestamp is not None and 700 < detection.timestamp < 2500


async def test_speech_without_the_wake_word_is_not_detected(tmp_path: Path) -> None:
    samples, rate = read_wav(SAMPLE_QUESTION)
    async with wyoming_server(wake_settings(tmp_path)) as served:
        port = served.ports[0]
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Detect(names=None).event())
            await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            chunk = AudioChunk(rate=rate, width=2, channels=1, audio=samples.tobytes())
            await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            events = await events_until(client, "not-detected")
    assert [e.type for e in events] == ["not-detected"]


async def test_a_wake_word_not_installed_is_an_error(tmp_path: Path) -> None:
    async with wyoming_server(wake_settings(tmp_path)) as served:
        events = await detect(served.ports[0], np.zeros(1600, np.int16), 16000, ["computer"])
    assert events[-1].type == "error"
    assert "installed: " in events[-1].data["text"] and "hey_jarvis" in events[-1].data["text"]


async def test_without_a_wake_word_engine_detect_is_refused(tmp_path: Path) -> None:
    async with wyoming_server(standin_settings(tmp_path)) as served:
        events = await detect(served.ports[0], np.zeros(1600, np.int16), 16000, None)
    assert events[-1].type == "error"
    assert "does not serve wake-word detection" in events[-1].data["text"]
