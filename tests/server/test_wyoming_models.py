"""Wyoming with the real embedded models, over real sockets, through the ``wyoming`` package's
own client (what Home Assistant uses): a spoken question is transcribed, text is spoken, and a
spoken question gets a spoken answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcript

from tests.wyoming_harness import audio_of, synthesize, transcribe, wyoming_server
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import read_wav
from voxgate.core.config import Settings, WyomingSettings
from voxgate.evaluation import character_error_rate, normalize_words
from voxgate.pipeline import Engines, TurnSession
from voxgate.pipeline.drive import TurnResult, collect_turn

pytestmark = pytest.mark.models


def _settings(real: Settings, tmp_path: Path) -> Settings:
    return real.model_copy(
        update={"data_dir": tmp_path, "wyoming": WyomingSettings(enabled=True, port=0)}
    )


def _text(events: list) -> str:  # type: ignore[type-arg]
    [final] = [Transcript.from_event(e) for e in events if e.type == "transcript"]
    return final.text


async def test_a_spoken_question_is_transcribed_over_wyoming(
    real_engines: Engines, real_settings: Settings, tmp_path: Path
) -> None:
    samples, rate = read_wav(SAMPLE_QUESTION)
    async with wyoming_server(_settings(real_settings, tmp_path), real_engines) as served:
        events = await transcribe(served.ports[0], samples, rate, language="en")
    assert {"capital", "france"} <= set(normalize_words(_text(events))), _text(events)


async def test_synthesize_speaks_the_text_over_wyoming(
    real_engines: Engines, real_settings: Settings, tmp_path: Path
) -> None:
    text = "The capital of France is Paris."
    async with wyoming_server(_settings(real_settings, tmp_path), real_engines) as served:
        port = served.ports[0]
        audio, rate = audio_of(await synthesize(port, text))
        # What was said is speech: the STT, over Wyoming too, hears the text back.
        heard = _text(await transcribe(port, audio, rate))
    seconds = len(audio) / rate
    assert rate == real_engines.tts.sample_rate_hz
    assert 1.0 < seconds < 5.0, seconds  # six words at a speaking pace
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 300, rms  # not silence
    assert character_error_rate(text, heard) <= 0.25, heard


async def test_a_spoken_question_gets_a_spoken_answer(
    real_engines: Engines, real_settings: Settings, tmp_path: Path
) -> None:
    """Home Assistant's voice pipeline with voxgate's engines: Wyoming STT, then the
    conversation (voxgate's LLM, as HA's conversation agent would), then Wyoming TTS."""
    samples, rate = read_wav(SAMPLE_QUESTION)
    async with wyoming_server(_settings(real_settings, tmp_path), real_engines) as served:
        port = served.ports[0]
        question = _text(await transcribe(port, samples, rate))
        session = TurnSession(
            real_engines, real_settings.turn, real_settings.character, output_rate_hz=16_000
        )
        result = TurnResult()
        await session.say(question)
        await collect_turn(session, result, timeout_s=120)
        await session.close()
        answer = result.reply_text
        audio, out_rate = audio_of(await synthesize(port, answer))
        heard = _text(await transcribe(port, audio, out_rate))
        await served.store.writer.flush(5.0)
        turns = await served.store.reports.device_turns()
    assert {"capital", "france"} <= set(normalize_words(question)), question
    assert answer.strip()
    assert character_error_rate(answer, heard) <= 0.3, (answer, heard)
    assert turns["home-assistant"] == 3  # two transcriptions and a synthesis, billed
