"""The wake-word gate on its own: a cascade session (fake engines) behind it, the real wake-word
engine in front, audio fed as a device might: odd-sized frames, 48 kHz."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.fakes import Fakes, make_session
from voxgate.core.audio import resample
from voxgate.core.capabilities import Int16Array, WakeWord
from voxgate.core.errors import ErrorCode
from voxgate.core.events import (
    ErrorEvent,
    Event,
    SpeechStarted,
    WakeWordHeard,
    WakeWordWaiting,
)
from voxgate.core.listening import FollowUp, WakeListening
from voxgate.models import ModelStore
from voxgate.pipeline.wake_gate import WakeGatedSession
from voxgate.providers.micro_wakeword import MicroWakeWordSettings, create
from voxgate.speech_corpus import synthesized


@pytest.fixture(scope="module")
def wake_engine(tmp_path_factory: pytest.TempPathFactory) -> WakeWord:
    return create(MicroWakeWordSettings(), ModelStore(tmp_path_factory.mktemp("models")))


def hey_jarvis() -> Int16Array:
    try:
        return synthesized("Hey Jarvis, what is two plus three?", "flite", "rms")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


async def drain(gate: WakeGatedSession) -> list[Event]:
    events = []
    while True:
        try:
            event = await gate.next_event(timeout_s=0.3)
        except TimeoutError:
            return events
        assert event is not None
        events.append(event)


@pytest.mark.parametrize("rate_hz", [16_000, 48_000])
async def test_odd_frames_at_any_rate_open_the_gate_on_the_sessions_clock(
    wake_engine: WakeWord, rate_hz: int
) -> None:
    fakes = Fakes()
    gate = WakeGatedSession(
        make_session(fakes.engines()), wake_engine, WakeListening("hey_jarvis", FollowUp.TURN)
    )
    audio = np.concatenate([np.zeros(32_000, np.int16), hey_jarvis(), np.zeros(16_000, np.int16)])
    data = resample(audio, 16_000, rate_hz).astype("<i2").tobytes()
    for start in range(0, len(data), 333):  # odd byte counts: samples split across frames
        await gate.push_audio(data[start : start + 333], rate_hz)
    events = await drain(gate)
    heard = [e for e in events if isinstance(e, WakeWordHeard)]
    assert len(heard) == 1 and heard[0].wake_word == "hey_jarvis"
    assert 2_400 < heard[0].at_ms < 3_800  # 2 s of silence, then "Hey Jarvis" (~0.8 s)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    assert started  # the question reached the session, on the device's clock
    assert heard[0].at_ms - 1_200 < started[0].at_ms < heard[0].at_ms + 500, (heard, started)
    await gate.close()


async def test_nothing_reaches_the_session_while_waiting_and_the_device_may_open_it(
    wake_engine: WakeWord,
) -> None:
    fakes = Fakes()
    gate = WakeGatedSession(
        make_session(fakes.engines()), wake_engine, WakeListening("hey_jarvis", silence_s=1.0)
    )
    tone = (np.sin(np.arange(48_000) / 16_000 * 2 * np.pi * 300) * 8000).astype("<i2")
    await gate.push_audio(tone.tobytes())  # loud "speech" for the fake VAD, not the word
    assert await drain(gate) == [] and fakes.stt.calls == []
    gate.heard("hey voxgate")  # a board's own engine heard it
    await gate.push_audio(tone.tobytes() + bytes(32_000))
    events = await drain(gate)
    assert isinstance(events[0], WakeWordHeard) and events[0].at_ms == 3_000.0
    assert any(isinstance(e, SpeechStarted) for e in events)
    await asyncio.wait_for(gate.wait_idle(), 10)
    rest = await drain(gate)
    assert not any(isinstance(e, WakeWordWaiting) for e in events + rest)  # it was talking
    await gate.push_audio(bytes(2 * 16_000 * 2))  # two seconds of silence: back to waiting
    assert [e for e in await drain(gate) if isinstance(e, WakeWordWaiting)] == [
        WakeWordWaiting("silence")
    ]
    await gate.close()


async def test_a_rate_out_of_range_is_a_bad_audio_error_and_the_gate_goes_on(
    wake_engine: WakeWord,
) -> None:
    gate = WakeGatedSession(
        make_session(Fakes().engines()), wake_engine, WakeListening("hey_jarvis")
    )
    await gate.push_audio(bytes(640), 1_000)
    (error,) = await drain(gate)
    assert isinstance(error, ErrorEvent) and error.code == ErrorCode.BAD_AUDIO
    await gate.push_audio(bytes(640), 16_000)
    assert await drain(gate) == [] and gate.waiting
    await gate.close()
