"""Whisper-style log-mel features in numpy: what Whisper-encoder models such as smart-turn take.

16 kHz audio, 25 ms Hann windows every 10 ms (400-point FFT, centred frames, reflect padding),
power spectrum, 80 triangular mel filters on the Slaney scale with Slaney area normalisation,
``log10`` floored at 1e-10, clamped to 8 decades below the loudest bin, then mapped by
``(x + 4) / 4`` to roughly [-1, 1]. ``n`` samples give ``n // 160`` frames (the last centred frame
is dropped, as Whisper does).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxgate.core.capabilities import Float32Array

SAMPLE_RATE_HZ = 16_000
N_FFT = 400
HOP_SAMPLES = 160
N_MELS = 80

_Float64Array = npt.NDArray[np.float64]


def _hz_to_mel(hz: _Float64Array) -> _Float64Array:
    # Slaney: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above (27 mels per octave x6.4).
    log_step = np.log(6.4) / 27.0
    linear = hz * 3.0 / 200.0
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / log_step
    result: _Float64Array = np.where(hz < 1000.0, linear, logarithmic)
    return result


def _mel_to_hz(mel: _Float64Array) -> _Float64Array:
    log_step = np.log(6.4) / 27.0
    linear = mel * 200.0 / 3.0
    logarithmic = 1000.0 * np.exp(log_step * (mel - 15.0))
    result: _Float64Array = np.where(mel < 15.0, linear, logarithmic)
    return result


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT) -> _Float64Array:
    """``(n_mels, n_fft // 2 + 1)``: filter ``m`` weighs each FFT bin (a triangle over
    edges ``m``, ``m + 1``, ``m + 2``, scaled to unit area)."""
    nyquist = SAMPLE_RATE_HZ / 2
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.array(nyquist))), n_mels + 2))
    bins = np.linspace(0.0, nyquist, n_fft // 2 + 1)
    low, mid, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - low) / (mid - low)
    falling = (high - bins[None, :]) / (high - mid)
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    result: _Float64Array = triangles * (2.0 / (high - low))
    return result


_FILTERS = mel_filters()
# Periodic Hann (the window the FFT sees repeat), as torch.hann_window makes it.
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)


def log_mel(audio: Float32Array) -> Float32Array:
    """``(80, len(audio) // 160)`` features of 16 kHz mono audio, as given (no normalisation)."""
    if audio.ndim != 1 or audio.shape[0] < N_FFT:
        raise ValueError(f"need 1-D audio of at least {N_FFT} samples, got shape {audio.shape}")
    padded = np.pad(audio.astype(np.float64), N_FFT // 2, mode="reflect")
    n_frames = 1 + (padded.shape[0] - N_FFT) // HOP_SAMPLES
    starts = np.arange(n_frames) * HOP_SAMPLES
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    mel = np.log10(np.maximum(power @ _FILTERS.T, 1e-10)).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    result: Float32Array = ((mel + 4.0) / 4.0).astype(np.float32)
    return result
