"""A xiaozhi-esp32 board without a wake word of its own, made hands-free by the server
(``listening.xiaozhi_mode = "wake_word"``): the board streams (auto mode, Opus), nothing is heard
before "Hey Jarvis", then a turn; its own ``listen detect`` opens the gate too. The board is the
firmware-shaped client of bench/xiaozhi_client.py; the wake-word engine is the real one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import FakeLLM, Fakes, FakeSTT, bounded
from tests.server.test_relay_wake import room_talk, rows, said, silence
from tests.server.test_xiaozhi_session import xiaozhi_server
from voxgate.core.capabilities import WakeWord
from voxgate.core.config import CharacterSettings, ListeningSettings, Settings
from voxgate.core.listening import ListeningMode
from voxgate.models import ModelStore
from voxgate.providers.micro_wakeword import MicroWakeWordSettings, create

HANDS_FREE = Settings(
    character=CharacterSettings(system_prompt="You are a test."),
    listening=ListeningSettings(xiaozhi_mode=ListeningMode.WAKE_WORD),
)


@pytest.fixture(scope="module")
def wake_engine(tmp_path_factory: pytest.TempPathFactory) -> WakeWord:
    return create(MicroWakeWordSettings(), ModelStore(tmp_path_factory.mktemp("models")))


@bounded(90)
async def test_a_board_streaming_is_heard_only_after_hey_jarvis(
    tmp_path: Path, wake_engine: WakeWord
) -> None:
    fakes = Fakes(stt=FakeSTT(default=lambda audio: "what is the weather"), llm=FakeLLM(["Sunny."]))
    engines = fakes.engines()
    engines.wake_word = wake_engine
    async with xiaozhi_server(tmp_path, fakes, engines=engines, base=HANDS_FREE) as rig:
        board = await rig.board()
        await board.say(room_talk(6), trailing_silence_ms=500)
        await asyncio.sleep(0.5)
        assert board.heard.of("stt") == [] and fakes.stt.calls == []
        await rig.store.writer.flush()
        assert rows(tmp_path) == {"conversations": 0, "messages": 0, "usage": 0, "errors": 0}
        await board.say(np.concatenate([silence(1), said("Hey Jarvis, what is the weather?")]))
        await board.wait_for(lambda: bool(board.heard.of("tts", "stop")))
        assert board.heard.of("stt")[0]["text"] == "what is the weather"
        assert board.heard.of("tts", "sentence_start")[0]["text"] == "Sunny."
        await board.close()


@bounded(60)
async def test_the_boards_own_wake_word_opens_the_gate_too(
    tmp_path: Path, wake_engine: WakeWord
) -> None:
    fakes = Fakes(llm=FakeLLM(["Hi, I am listening.", "Sunny."]))
    engines = fakes.engines()
    engines.wake_word = wake_engine
    async with xiaozhi_server(tmp_path, fakes, engines=engines, base=HANDS_FREE) as rig:
        board = await rig.board()
        await board.wake("hey voxgate")  # its own engine heard it: the gate opens, as a turn
        await board.wait_for(lambda: bool(board.heard.of("tts", "stop")))
        await board.say(np.concatenate([silence(0.5), room_talk(2)]))  # heard now: a turn
        await board.wait_for(lambda: len(board.heard.of("tts", "stop")) == 2)
        assert fakes.llm.calls[0][-1].content == "hey voxgate" and len(fakes.stt.calls) >= 1
        await board.close()
