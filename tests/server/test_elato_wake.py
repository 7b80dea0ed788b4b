"""ElatoAI firmware keeps its behaviour unless configured; with ``listening.elato_mode =
"wake_word"`` the device is hands-free on the server's wake word: no greeting, nothing heard
before "Hey Jarvis", then a turn in the firmware's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fakes import FakeLLM, Fakes, bounded
from tests.server.test_elato_session import Device, device_connect, elato_server
from tests.server.test_relay_wake import room_talk, rows, said, silence
from voxgate.core.capabilities import WakeWord
from voxgate.core.config import CharacterSettings, ListeningSettings, Settings
from voxgate.core.listening import ListeningMode
from voxgate.models import ModelStore
from voxgate.providers.micro_wakeword import MicroWakeWordSettings, create


@pytest.fixture(scope="module")
def wake_engine(tmp_path_factory: pytest.TempPathFactory) -> WakeWord:
    return create(MicroWakeWordSettings(), ModelStore(tmp_path_factory.mktemp("models")))


@bounded(60)
async def test_a_hands_free_elato_device_is_heard_only_after_the_wake_word(
    tmp_path: Path, wake_engine: WakeWord
) -> None:
    fakes = Fakes(llm=FakeLLM(["Five."]))
    engines = fakes.engines()
    engines.wake_word = wake_engine
    base = Settings(
        character=CharacterSettings(system_prompt="You are a test."),
        listening=ListeningSettings(elato_mode=ListeningMode.WAKE_WORD),
    )
    async with (
        elato_server(tmp_path, fakes, base=base, engines=engines) as rig,
        device_connect(rig.address, await rig.token()) as ws,
    ):
        device = Device(ws)
        await device.auth()
        await device.speak(room_talk(4))
        assert await device.quiet_for(1.0)  # no greeting, nothing heard
        assert fakes.stt.calls == [] and fakes.tts.sentences == []
        await rig.store.writer.flush()
        assert rows(tmp_path)["conversations"] == 0
        await device.speak(
            np.concatenate([silence(1), said("Hey Jarvis, what is two plus three?"), silence(1.5)])
        )
        turn = await device.until("RESPONSE.COMPLETE", timeout_s=20)
        assert turn[0] == "AUDIO.COMMITTED" and turn[-1] == "RESPONSE.COMPLETE"
        # (The fake VAD, on loudness, may split the question at its pauses: one reply each.)
        assert fakes.tts.sentences and set(fakes.tts.sentences) == {"Five."}
