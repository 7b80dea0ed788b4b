"""PCM helpers: conversions, resampling, WAV files."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr

from voxgate.core.capabilities import Float32Array, Int16Array
from voxgate.core.errors import AudioFormatError

MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 192_000


def check_rate(sample_rate_hz: int) -> None:
    if not MIN_RATE_HZ <= sample_rate_hz <= MAX_RATE_HZ:
        raise AudioFormatError(
            f"sample rate {sample_rate_hz} Hz is outside {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz"
        )


def int16_to_float(pcm: Int16Array) -> Float32Array:
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def float_to_int16(samples: Float32Array) -> Int16Array:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def resample(samples: Int16Array, from_hz: int, to_hz: int) -> Int16Array:
    """Resample a whole clip (use :class:`StreamResampler` for a live stream)."""
    if from_hz == to_hz or samples.size == 0:
        return samples
    out: Int16Array = soxr.resample(samples, from_hz, to_hz, quality="HQ")
    return out


class StreamResampler:
    """Resamples a live PCM16 stream chunk by chunk without clicks at the chunk edges."""

    def __init__(self, from_hz: int, to_hz: int) -> None:
        check_rate(from_hz)
        self.from_hz = from_hz
        self.to_hz = to_hz
        self._stream = (
            None if from_hz == to_hz else soxr.ResampleStream(from_hz, to_hz, 1, dtype="int16")
        )

    def process(self, samples: Int16Array, *, last: bool = False) -> Int16Array:
        if self._stream is None:
            return samples
        out: Int16Array = self._stream.resample_chunk(samples, last=last)
        return out


def read_wav(path: Path) -> tuple[Int16Array, int]:
    """Mono PCM16 samples and rate of a WAV file (stereo is mixed down)."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise AudioFormatError(f"{path}: only 16-bit PCM WAV is supported")
            rate = wav.getframerate()
            channels = wav.getnchannels()
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"{path}: not a readable WAV file ({exc})") from exc
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data.astype(np.int16), rate


def write_wav(path: Path, samples: Int16Array, sample_rate_hz: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(samples.astype("<i2").tobytes())
