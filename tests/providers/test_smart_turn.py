"""smart-turn v3.2 on onnxruntime, and the Whisper-style log-mel features it takes.

The features are checked on literal signals; the model (marker ``models``, prepared from the
installed ``pipecat-ai`` wheel into a temporary cache, hash checked) on real speech: a complete
LibriVox sentence and the same sentence cut off mid-way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxgate.core.audio import int16_to_float, read_wav
from voxgate.core.capabilities import EndOfTurnModel, Float32Array
from voxgate.core.errors import ModelError
from voxgate.models import CATALOG, ModelStore
from voxgate.pipeline import Engines
from voxgate.providers.log_mel import HOP_SAMPLES, N_MELS, log_mel, mel_filters
from voxgate.providers.smart_turn import SmartTurn, input_features
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips

RATE_HZ = 16_000


def sine(hz: float, seconds: float) -> Float32Array:
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_one_frame_per_10_ms_the_last_centred_frame_dropped() -> None:
    assert log_mel(sine(440, 1.0)).shape == (N_MELS, 100)
    assert log_mel(sine(440, 8.0)).shape == (N_MELS, 800)
    assert log_mel(sine(440, 0.5)[:8_001]).shape == (N_MELS, 8_001 // HOP_SAMPLES)


def test_a_1_khz_tone_lands_in_the_mel_filter_around_1_khz() -> None:
    # Slaney scale: 1 kHz is mel 15, 8 kHz mel 45.245; 82 edges 0.5586 mel apart put filter 26's
    # peak at mel 15.08 (~1015 Hz), the nearest to 1 kHz (filter 25 peaks at ~968 Hz).
    features = log_mel(sine(1000, 1.0))
    assert set(np.argmax(features[:, 5:-5], axis=0)) == {26}


def test_the_filters_are_unit_area_triangles() -> None:
    filters = mel_filters()
    assert filters.shape == (80, 201)
    bin_hz = 8000 / 200
    areas = filters.sum(axis=1) * bin_hz
    # Sampled every 40 Hz the triangles' areas come out within 8% of 1 (unnormalised they would
    # range from ~50 to ~1,300: widths grow from 67 Hz to 1.3 kHz).
    assert np.allclose(areas, 1.0, atol=0.1)
    assert (filters >= 0).all()


def test_features_span_at_most_8_decades_scaled_to_2() -> None:
    features = log_mel(sine(300, 1.0) + sine(3000, 1.0) * 0.001)
    assert features.max() - features.min() == pytest.approx(2.0, abs=1e-6)


def test_short_audio_is_padded_in_front_to_8_seconds() -> None:
    features = input_features(sine(1000, 1.0))
    assert features.shape == (80, 800)
    # The silence before the second of tone is one flat floor; the tone is at the end.
    assert np.all(features[:, :690] == features.min())
    assert np.argmax(features[:, -50]) == 26


def test_longer_audio_keeps_only_the_last_8_seconds() -> None:
    tone = sine(1000, 8.0)
    longer = np.concatenate([sine(3000, 4.0), tone])
    assert np.array_equal(input_features(longer), input_features(tone))


def test_the_input_is_normalised_so_loudness_does_not_matter() -> None:
    tone = sine(700, 2.0)
    assert np.allclose(input_features(tone), input_features(tone * 0.25), atol=1e-3)


def test_bad_audio_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="1-D"):
        input_features(np.zeros((2, 16_000), dtype=np.float32))


def test_a_bad_model_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not an onnx graph")
    with pytest.raises(ModelError, match="end-of-turn model"):
        SmartTurn(str(path))


# --- the real model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smart_turn(tmp_path_factory: pytest.TempPathFactory) -> SmartTurn:
    store = ModelStore(tmp_path_factory.mktemp("models"), show_progress=False)
    return SmartTurn(str(store.resolve("smart-turn-v3.2")))


def sentence(name_part: str) -> Float32Array:
    clips = [clip for clip in librivox_clips() if name_part in clip.name]
    if not clips:
        pytest.skip(f"no LibriVox clips: {INSTALL_HINT}")
    samples, rate = read_wav(clips[0].path)
    assert rate == RATE_HZ
    return int16_to_float(samples)


def then_silence(audio: Float32Array, ms: int) -> Float32Array:
    return np.concatenate([audio, np.zeros(ms * RATE_HZ // 1000, dtype=np.float32)])


def test_the_catalogue_pins_the_file_in_the_pipecat_wheel() -> None:
    spec = CATALOG["smart-turn-v3.2"]
    assert spec.kind == "turn" and spec.default and spec.pip_no_deps
    assert spec.license == "BSD-2-Clause"
    assert spec.pip_command() == "pip install --no-deps pipecat-ai"


@pytest.mark.models
def test_a_complete_sentence_is_complete(smart_turn: EndOfTurnModel) -> None:
    # "unless to be rather cold hearted and rather selfish is to be ill disposed"
    whole = sentence("0890")
    for silence_ms in (192, 256, 400):
        assert smart_turn.complete_probability(then_silence(whole, silence_ms)) > 0.8


@pytest.mark.models
def test_the_same_sentence_cut_mid_way_is_not(smart_turn: EndOfTurnModel) -> None:
    # Cut after "... and rather selfish is" (3.88 s), before "to be ill disposed".
    cut = sentence("0890")[: int(3.88 * RATE_HZ)]
    for silence_ms in (192, 256, 400):
        assert smart_turn.complete_probability(then_silence(cut, silence_ms)) < 0.3


@pytest.mark.models
def test_an_utterance_longer_than_the_window_is_judged_by_its_end(
    smart_turn: EndOfTurnModel,
) -> None:
    before = sentence("0870")  # 7.1 s of another sentence first: 8 s later only the end counts
    whole, cut = sentence("0890"), sentence("0890")[: int(3.88 * RATE_HZ)]
    assert smart_turn.complete_probability(then_silence(np.concatenate([before, whole]), 200)) > 0.8
    assert smart_turn.complete_probability(then_silence(np.concatenate([before, cut]), 200)) < 0.5


@pytest.mark.models
async def test_the_default_engines_load_it_and_answer_off_the_loop(real_engines: Engines) -> None:
    assert isinstance(real_engines.end_of_turn, SmartTurn)
    probability = await real_engines.end_of_turn_probability(then_silence(sentence("0890"), 200))
    assert probability > 0.8
