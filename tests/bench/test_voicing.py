"""The device benchmark's end-of-speech finder (bench/voicing.py) on literal audio, and on the
flite speech the benchmark uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.conversations import RATE_HZ, SCRIPTS, speak
from bench.voicing import end_of_voice
from tests.fakes import concat, silence, tone


def ms(value: float) -> int:
    return round(RATE_HZ * value / 1000)


def noise(duration_ms: float, dbfs: float, seed: int = 1) -> np.ndarray:
    rms = 10 ** (dbfs / 20) * 32768
    return np.random.default_rng(seed).normal(0, rms, ms(duration_ms))


def test_the_end_of_a_tone_between_silences_is_found_to_the_sample() -> None:
    clip = concat(silence(300), tone(503), silence(400))  # not on a 10 ms frame boundary
    end = end_of_voice(clip, RATE_HZ)
    assert end is not None
    assert ms(803) - 2 <= end <= ms(803)


def test_a_pause_inside_the_speech_is_not_its_end() -> None:
    clip = concat(silence(200), tone(400), silence(450), tone(307), silence(500))
    end = end_of_voice(clip, RATE_HZ)
    assert end is not None
    assert ms(1357) - 2 <= end <= ms(1357)


def test_background_noise_after_the_speech_is_not_voice() -> None:
    # A noisy room: the noise is louder than 35 dB below the speech.
    speech = concat(silence(300), tone(600), silence(700)).astype(np.float64)
    clip = np.clip(speech + noise(1600, -45), -32768, 32767).astype(np.int16)
    end = end_of_voice(clip, RATE_HZ)
    assert end is not None
    assert ms(900) - ms(2) <= end <= ms(900) + ms(10)


def test_a_tail_far_below_the_speech_is_not_voice() -> None:
    # A breath or a reverb tail 45 dB below the speech.
    quiet_tail = tone(300, amplitude=0.3 * 10 ** (-45 / 20))
    clip = concat(silence(200), tone(500), quiet_tail, silence(300))
    end = end_of_voice(clip, RATE_HZ)
    assert end is not None
    assert ms(700) - 2 <= end <= ms(700)


def test_a_quiet_speaker_is_still_found() -> None:
    clip = concat(silence(300), tone(500, amplitude=0.01), silence(300))
    end = end_of_voice(clip, RATE_HZ)
    assert end is not None
    assert ms(800) - ms(1) <= end <= ms(800)


@pytest.mark.parametrize("clip", [silence(1000), silence(0), silence(5)])
def test_a_clip_without_voice_has_no_end(clip: np.ndarray) -> None:
    assert end_of_voice(clip, RATE_HZ) is None


def test_flite_speech_ends_where_the_sound_does(tmp_path: Path) -> None:
    script = SCRIPTS[0]
    utterance = speak(script.turns[0], script.voice, tmp_path)
    samples = utterance.samples.astype(np.float64) / 32768
    after = samples[utterance.end_sample :]
    before = samples[utterance.end_sample - ms(100) : utterance.end_sample]
    assert ms(1000) < utterance.end_sample < len(samples)
    # Nothing audible after the end; speech in the 100 ms before it.
    assert np.sqrt(np.mean(after**2)) < 10 ** (-50 / 20)
    assert np.sqrt(np.mean(before**2)) > 10 ** (-40 / 20)
