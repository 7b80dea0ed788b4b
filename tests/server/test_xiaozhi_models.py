"""A xiaozhi board (bench/xiaozhi_client.py, written from the firmware) asks a real spoken
question and gets a spoken answer from the real models: Opus up at 16 kHz, Opus down at 24 kHz,
the answer transcribed back from what the board played."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fakes import bounded
from tests.server.test_xiaozhi_session import MAC, xiaozhi_server
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.config import Settings
from voxgate.evaluation import character_error_rate, normalize_words
from voxgate.pipeline import Engines


@pytest.mark.models
@pytest.mark.parametrize("version", [1, 3])
@bounded(300)
async def test_a_spoken_question_gets_a_spoken_answer(
    tmp_path: Path, real_engines: Engines, real_settings: Settings, version: int
) -> None:
    samples, rate = read_wav(SAMPLE_QUESTION)
    question = resample(samples, rate, 16_000)
    async with xiaozhi_server(
        tmp_path, engines=real_engines, base=real_settings, close_engines=False
    ) as rig:
        board = await rig.board(MAC, version=version)
        await board.say(question)
        await board.wait_for(lambda: bool(board.heard.of("tts", "stop")), 180)
        await board.close()
    heard = board.heard.of("stt")
    assert heard and {"capital", "france"} <= set(normalize_words(heard[0]["text"])), heard
    reply_text = " ".join(m["text"] for m in board.heard.of("tts", "sentence_start"))
    played = board.played_pcm()
    assert reply_text.strip() and len(played) > 24_000 * 0.5
    assert board.heard.dropped_packets == 0  # paced: nothing arrived outside the speaking state
    audio = resample(played, 24_000, 16_000)
    silence = np.zeros(8_000, dtype=np.int16)
    back = await real_engines.stt.transcribe(
        int16_to_float(np.concatenate([silence, audio, silence]))
    )
    assert character_error_rate(reply_text, back) <= 0.3, (reply_text, back)
