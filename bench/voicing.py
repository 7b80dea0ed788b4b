"""Where the voice in a clip ends, found from the clip itself (not the server's VAD).

The device benchmark measures from the end of the user's speech; taking that instant from the
server's own VAD would hide the VAD's lateness. Instead the client analyses the clip ahead of
time: the short-time energy in 10 ms frames, against a threshold set from the clip's own loudest
and quietest frames, gives the last voiced frame; inside it, the last sample above the threshold
amplitude is the end.
"""

from __future__ import annotations

import numpy as np

from voxgate.core.capabilities import Int16Array

FRAME_MS = 10
BELOW_PEAK_DB = 35.0
"""A frame this far below the clip's loud frames is not voice (breath, room tone, reverb tail)."""
ABOVE_FLOOR_DB = 12.0
"""... nor one this close to the clip's quiet frames (its background noise)."""
ABSOLUTE_FLOOR_DBFS = -60.0
"""Nothing quieter than this is voice, whatever the clip (digital silence, dither)."""


def _db(rms: np.ndarray) -> np.ndarray:
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9)), dtype=np.float64)


def voice_threshold_dbfs(samples: Int16Array, sample_rate_hz: int) -> float:
    """The energy (dB full scale, per 10 ms frame) above which a frame counts as voice."""
    frames = _frames(samples, sample_rate_hz)
    if not len(frames):
        return ABSOLUTE_FLOOR_DBFS
    levels = _db(np.sqrt(np.mean(np.square(frames), axis=1)))
    peak = float(np.percentile(levels, 95))
    floor = float(np.percentile(levels, 10))
    return max(peak - BELOW_PEAK_DB, floor + ABOVE_FLOOR_DB, ABSOLUTE_FLOOR_DBFS)


def end_of_voice(samples: Int16Array, sample_rate_hz: int) -> int | None:
    """Index just after the last voiced sample of ``samples`` (PCM16 mono), or None if the
    clip holds no voice. ``samples[:end]`` keeps all of the speech."""
    frame = sample_rate_hz * FRAME_MS // 1000
    frames = _frames(samples, sample_rate_hz)
    if not len(frames):
        return None
    threshold = voice_threshold_dbfs(samples, sample_rate_hz)
    levels = _db(np.sqrt(np.mean(np.square(frames), axis=1)))
    voiced = np.flatnonzero(levels > threshold)
    if not len(voiced):
        return None
    last = int(voiced[-1])
    # Inside the last voiced frame (and the partial one after it, which _frames drops): the last
    # sample whose amplitude reaches the threshold's level.
    tail = samples[last * frame : (last + 2) * frame].astype(np.float64) / 32768.0
    loud = np.flatnonzero(np.abs(tail) >= 10 ** (threshold / 20))
    offset = int(loud[-1]) + 1 if len(loud) else frame
    return last * frame + offset


def _frames(samples: Int16Array, sample_rate_hz: int) -> np.ndarray:
    frame = sample_rate_hz * FRAME_MS // 1000
    usable = len(samples) // frame * frame
    return samples[:usable].astype(np.float64).reshape(-1, frame) / 32768.0
