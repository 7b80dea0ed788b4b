"""The embedded wake-word engine (microWakeWord models from pymicro-wakeword's wheel, on the TFLite
C runtime from the same wheel) on literal clips.

The clip that must fire is synthesized here, at test time, by Debian's flite ("Hey Jarvis, what is
two plus three?"): no audio is committed. Clips that must not fire: the committed sample question
and the LibriVox speech of pocketsphinx-testdata. The models are tiny (~55 KB): these tests run in
the quick suite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxgate.core import registry
from voxgate.core.audio import read_wav
from voxgate.core.capabilities import Int16Array, WakeDetection, WakeWord
from voxgate.core.config import Settings
from voxgate.core.errors import ConfigError
from voxgate.models import CATALOG, ModelStore
from voxgate.providers.micro_wakeword import (
    EMBEDDED_WORDS,
    MODEL_PREFIX,
    MicroWakeWordSettings,
    create,
)
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips, synthesized

RATE_HZ = 16_000
SAMPLES = Path(__file__).resolve().parents[2] / "voxgate" / "samples"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> WakeWord:
    store = ModelStore(tmp_path_factory.mktemp("models"), show_progress=False)
    return create(MicroWakeWordSettings(), store)


def flite(text: str, voice: str, folder: Path | None = None) -> Int16Array:
    """``text`` spoken by flite's ``voice``, 16 kHz mono PCM16, made now."""
    try:
        return synthesized(text, "flite", voice)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def detections(engine: WakeWord, word: str, audio: Int16Array) -> list[WakeDetection]:
    """Fed as a device sends it: 30 ms frames, after half a second of silence."""
    stream = engine.new_stream(word)
    padded = np.concatenate([np.zeros(RATE_HZ // 2, np.int16), audio, np.zeros(RATE_HZ, np.int16)])
    found = []
    for start in range(0, len(padded), 480):
        detection = stream.process(padded[start : start + 480])
        if detection is not None:
            found.append(detection)
    return found


def test_the_four_models_of_the_wheel_are_installed(engine: WakeWord) -> None:
    assert engine.wake_words == ("alexa", "hey_jarvis", "hey_mycroft", "okay_nabu")
    assert engine.sample_rate_hz == RATE_HZ
    for word in engine.wake_words:
        spec = CATALOG[f"micro-wakeword-{word}"]
        assert spec.kind == "wake" and spec.packages == ("pymicro-wakeword",)
    wake_models = sorted(name for name, spec in CATALOG.items() if spec.kind == "wake")
    assert wake_models == [f"{MODEL_PREFIX}{word}" for word in EMBEDDED_WORDS]


def test_an_unknown_wake_word_names_the_installed_ones(engine: WakeWord) -> None:
    with pytest.raises(ConfigError, match=r"'hey_computer'.*alexa, hey_jarvis, hey_mycroft"):
        engine.new_stream("hey_computer")


def test_a_default_wake_word_not_installed_fails_at_start(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, show_progress=False)
    settings = MicroWakeWordSettings(wake_word="hey_siri")
    with pytest.raises(ConfigError, match=r"hey_siri.*installed: alexa"):
        create(settings, store)


def test_the_wake_word_section_is_an_engine_section_with_the_embedded_default() -> None:
    assert registry.DEFAULT_PROVIDERS["wake"] == "micro"
    assert isinstance(Settings().wake_word, MicroWakeWordSettings)
    with pytest.raises(ConfigError, match=r"wake_word\.threshold"):
        from voxgate.core.config import load_settings

        load_settings(wake_word={"threshold": 2})


@pytest.mark.parametrize("voice", ["rms", "awb", "kal16"])
def test_hey_jarvis_fires_once_at_the_end_of_the_word(
    engine: WakeWord, voice: str, tmp_path: Path
) -> None:
    audio = flite("Hey Jarvis, what is two plus three?", voice, tmp_path)
    found = detections(engine, "hey_jarvis", audio)
    assert len(found) == 1, found
    fired_s = found[0].end_sample / RATE_HZ - 0.5  # from the start of the speech
    # "Hey Jarvis" takes flite under a second; the question after it two more.
    assert 0.4 < fired_s < 1.6, fired_s
    assert found[0].probability > 0.9


def test_the_other_words_stay_silent_on_hey_jarvis(engine: WakeWord, tmp_path: Path) -> None:
    audio = flite("Hey Jarvis, what is two plus three?", "rms", tmp_path)
    for word in ("alexa", "hey_mycroft", "okay_nabu"):
        assert detections(engine, word, audio) == []


def test_speech_without_the_wake_word_does_not_fire(engine: WakeWord) -> None:
    question, rate = read_wav(SAMPLES / "question.wav")
    assert rate == RATE_HZ
    clips = librivox_clips()
    if not clips:
        pytest.skip(INSTALL_HINT)
    speech = [question] + [read_wav(clip.path)[0] for clip in clips]
    assert sum(len(a) for a in speech) / RATE_HZ > 20
    for audio in speech:
        assert detections(engine, "hey_jarvis", audio) == []


def test_a_stream_fires_again_after_a_detection_and_any_frame_size_works(
    engine: WakeWord, tmp_path: Path
) -> None:
    said = flite("Hey Jarvis.", "rms", tmp_path)
    silence = np.zeros(RATE_HZ, np.int16)
    twice = np.concatenate([said, silence, said, silence])
    stream = engine.new_stream("hey_jarvis")
    found = []
    sizes = [1, 7, 160, 333, 4000]
    start = 0
    for index in range(10_000):
        end = start + sizes[index % len(sizes)]
        detection = stream.process(twice[start:end])
        found += [detection] if detection else []
        start = end
        if start >= len(twice):
            break
    assert len(found) == 2
    assert found[1].end_sample - found[0].end_sample == pytest.approx(len(said) + RATE_HZ, abs=4000)
