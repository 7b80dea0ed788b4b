"""Piper with a character's voice: one from the model store is loaded on first use (and its audio
brought to the configured voice's rate); one it cannot use falls back to the configured voice.

Only one Piper voice is packaged, so a "second" voice is the same one by its path."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from voxgate.core.config import Settings
from voxgate.models import ModelStore
from voxgate.providers import piper_tts
from voxgate.providers.piper_tts import PiperSettings

pytestmark = pytest.mark.models


async def _audio(tts: piper_tts.PiperTTS, voice: str | None) -> np.ndarray:
    chunks = [chunk async for chunk in tts.synthesize("Hello there, my friend.", voice)]
    return np.concatenate(chunks)


async def test_a_voice_it_cannot_use_falls_back_to_the_configured_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings()
    tts = piper_tts.create(PiperSettings(), ModelStore(settings.models_dir))
    default = await _audio(tts, None)
    with caplog.at_level(logging.WARNING, logger="voxgate.providers.piper_tts"):
        other = await _audio(tts, "alloy")  # an OpenAI voice name: nothing Piper knows
        again = await _audio(tts, "alloy")
    # Piper samples its prosody: the same voice says the same words in about the same time.
    for audio in (other, again):
        assert abs(len(audio) - len(default)) < 0.2 * len(default)
    assert tts._voices["alloy"] is None  # remembered as unusable
    warnings = [r for r in caplog.records if "alloy" in r.getMessage()]
    assert len(warnings) == 1  # said once, then remembered


async def test_a_voice_from_the_model_store_by_path_is_loaded_and_kept() -> None:
    settings = Settings()
    store = ModelStore(settings.models_dir)
    path = store.resolve("en_US-joe-medium")
    tts = piper_tts.PiperTTS(path, PiperSettings(), store)
    # The same voice again, by path: loaded as a second voice, same rate, same words.
    by_path = await _audio(tts, str(path))
    default = await _audio(tts, None)
    assert len(tts._voices) == 2
    assert abs(len(by_path) - len(default)) < 0.2 * len(default)
