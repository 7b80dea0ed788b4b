"""From PCM16 frames of any size and rate to fixed VAD chunks, and the audio of the utterance."""

from __future__ import annotations

from collections import deque

import numpy as np

from voxgate.core.audio import StreamResampler, check_rate, int16_to_float
from voxgate.core.capabilities import Float32Array


class AudioInput:
    """Reassembles PCM16 LE mono bytes into float chunks of ``chunk_samples`` at ``target_hz``.

    An odd byte at the end of a frame is kept for the next frame; the declared rate may change
    between frames (the resampler restarts).
    """

    def __init__(self, target_hz: int, chunk_samples: int) -> None:
        self.target_hz = target_hz
        self.chunk_samples = chunk_samples
        self._odd_byte = b""
        self._resampler: StreamResampler | None = None
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, pcm: bytes, sample_rate_hz: int) -> Float32Array:
        """Whole chunks now available, shape ``[n, chunk_samples]`` (n may be 0)."""
        check_rate(sample_rate_hz)
        if self._resampler is None or self._resampler.from_hz != sample_rate_hz:
            self._resampler = StreamResampler(sample_rate_hz, self.target_hz)
        data = self._odd_byte + pcm
        usable = len(data) - len(data) % 2
        self._odd_byte = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        resampled = self._resampler.process(samples)
        self._pending = np.concatenate([self._pending, int16_to_float(resampled)])
        count = len(self._pending) // self.chunk_samples
        chunks = self._pending[: count * self.chunk_samples].reshape(count, self.chunk_samples)
        self._pending = self._pending[count * self.chunk_samples :]
        return chunks


class UtteranceRecorder:
    """Keeps a short pre-roll while idle and the whole utterance while the user speaks."""

    def __init__(self, pre_roll_chunks: int, tail_chunks: int = 2) -> None:
        self._pre_roll: deque[tuple[int, Float32Array]] = deque(maxlen=max(1, pre_roll_chunks))
        self._chunks: list[tuple[int, Float32Array]] = []
        self._recording = False
        self._tail_chunks = tail_chunks

    def add(self, index: int, chunk: Float32Array) -> None:
        if self._recording:
            self._chunks.append((index, chunk))
        else:
            self._pre_roll.append((index, chunk))

    def start(self, first_chunk: int) -> None:
        """Speech began at ``first_chunk`` (already added): keep it and the pre-roll before it."""
        self._chunks = list(self._pre_roll)
        self._pre_roll.clear()
        self._recording = True
        del first_chunk  # the pre-roll already reaches before it

    def audio_until(self, last_voiced_chunk: int) -> Float32Array:
        """The utterance up to the last voiced chunk plus a short tail (whisper likes a soft end)."""
        end = last_voiced_chunk + self._tail_chunks
        kept = [chunk for index, chunk in self._chunks if index <= end]
        if not kept:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(kept)

    def stop(self) -> None:
        self._recording = False
        self._chunks = []
