"""AudioInput (PCM16 frames of any size and rate → VAD chunks) and UtteranceRecorder."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from tests.fakes import TONE_AMPLITUDE, pcm_bytes, tone
from voxgate.core.capabilities import Float32Array, Int16Array
from voxgate.core.errors import AudioFormatError
from voxgate.pipeline.audio_input import AudioInput, UtteranceRecorder

CHUNK = 512
TARGET_HZ = 16_000


def push_all(audio: AudioInput, frames: Iterable[bytes], rate_hz: int) -> Float32Array:
    chunks = [audio.push(frame, rate_hz) for frame in frames]
    assert all(c.shape[1:] == (CHUNK,) and c.dtype == np.float32 for c in chunks)
    return np.concatenate(chunks).reshape(-1)


def cut(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes (cycled) until it runs out."""
    pieces: list[bytes] = []
    offset, sizes = 0, list(sizes)
    while offset < len(data):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(data[offset : offset + size])
        offset += size
    return pieces


def as_int16(samples: Float32Array) -> Int16Array:
    return np.round(samples * 32768.0).astype(np.int16)


def frames_of(samples: Int16Array, rate_hz: int, frame_ms: int = 20) -> list[bytes]:
    frame = rate_hz * frame_ms // 1000
    return [pcm_bytes(samples[o : o + frame]) for o in range(0, len(samples), frame)]


@pytest.mark.parametrize("sizes", [[1], [3, 1000, 1, 513, 2, 7], [1023], [4096, 5]])
def test_odd_sized_frames_reassemble_exactly(sizes: list[int]) -> None:
    samples = np.random.default_rng(7).integers(-32768, 32767, 5000, dtype=np.int16)
    audio = AudioInput(TARGET_HZ, CHUNK)
    out = push_all(audio, cut(pcm_bytes(samples), sizes), TARGET_HZ)
    whole = len(samples) // CHUNK * CHUNK
    assert len(out) == whole
    np.testing.assert_array_equal(as_int16(out), samples[:whole])


def test_the_rest_of_a_chunk_waits_for_the_next_frame() -> None:
    samples = np.arange(-600, 600, dtype=np.int16)
    audio = AudioInput(TARGET_HZ, CHUNK)
    assert audio.push(pcm_bytes(samples[:511]), TARGET_HZ).shape == (0, CHUNK)
    assert audio.push(b"", TARGET_HZ).shape == (0, CHUNK)
    chunks = audio.push(pcm_bytes(samples[511:]), TARGET_HZ)
    assert chunks.shape == (2, CHUNK)
    np.testing.assert_array_equal(as_int16(chunks.reshape(-1)), samples[:1024])


@pytest.mark.parametrize("rate_hz", [8_000, 22_050, 44_100, 48_000])
def test_other_rates_are_resampled_to_the_target_rate(rate_hz: int) -> None:
    seconds = 2
    audio = AudioInput(TARGET_HZ, CHUNK)
    out = push_all(audio, frames_of(tone(seconds * 1000, rate_hz), rate_hz), rate_hz)
    expected = seconds * TARGET_HZ
    # The stream resampler holds back a few ms; the last partial chunk waits.
    assert expected - 2 * CHUNK <= len(out) <= expected
    # Still the same tone: same loudness, no clicks at the frame edges.
    steady = out[CHUNK:-CHUNK]
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(TONE_AMPLITUDE / np.sqrt(2), rel=0.02)
    steepest = 2 * np.pi * 220 / TARGET_HZ * TONE_AMPLITUDE  # of the 220 Hz tone
    assert np.max(np.abs(np.diff(steady))) < steepest * 1.1


@pytest.mark.parametrize("rate_hz", [0, -16_000, 3, 1000, 7_999, 192_001, 10**6])
def test_bad_rates_raise_and_leave_the_stream_intact(rate_hz: int) -> None:
    samples = np.arange(1024, dtype=np.int16)
    data = pcm_bytes(samples)
    audio = AudioInput(TARGET_HZ, CHUNK)
    first = audio.push(data[:101], TARGET_HZ)  # 50 samples and an odd byte
    with pytest.raises(AudioFormatError):
        audio.push(b"\x00\x01" * 100, rate_hz)
    rest = audio.push(data[101:], TARGET_HZ)
    out = np.concatenate([first, rest]).reshape(-1)
    np.testing.assert_array_equal(as_int16(out), samples)


def test_rate_change_mid_stream() -> None:
    audio = AudioInput(TARGET_HZ, CHUNK)
    first = push_all(audio, frames_of(tone(1000, 16_000), 16_000), 16_000)
    second = push_all(audio, frames_of(tone(1000, 48_000), 48_000), 48_000)
    third = push_all(audio, frames_of(tone(1000, 8_000), 8_000), 8_000)
    total = len(first) + len(second) + len(third)
    assert 3 * TARGET_HZ - 3 * CHUNK <= total <= 3 * TARGET_HZ
    steady = np.concatenate([first, second, third])[CHUNK:-CHUNK]
    assert np.max(np.abs(steady)) <= TONE_AMPLITUDE * 1.05


# ---------------------------------------------------------------------------------------------
# UtteranceRecorder


def chunk(index: int) -> Float32Array:
    return np.full(4, index, dtype=np.float32)


def indices(audio: Float32Array) -> list[int]:
    return [int(v) for v in audio[::4]]


def test_recorder_keeps_the_pre_roll_and_the_utterance_with_a_short_tail() -> None:
    recorder = UtteranceRecorder(pre_roll_chunks=3, tail_chunks=2)
    for i in range(10):
        recorder.add(i, chunk(i))
    recorder.start(first_chunk=9)
    for i in range(10, 20):
        recorder.add(i, chunk(i))
    assert indices(recorder.audio_until(12)) == list(range(7, 15))
    assert indices(recorder.audio_until(30)) == list(range(7, 20))


def test_recorder_starts_afresh_after_stop() -> None:
    recorder = UtteranceRecorder(pre_roll_chunks=3)
    recorder.start(0)
    for i in range(5):
        recorder.add(i, chunk(i))
    recorder.stop()
    assert len(recorder.audio_until(100)) == 0
    for i in range(5, 7):
        recorder.add(i, chunk(i))
    recorder.start(6)
    # Nothing of the previous utterance comes back as pre-roll.
    assert indices(recorder.audio_until(100)) == [5, 6]
