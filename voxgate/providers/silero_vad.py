"""Silero VAD (v6 ONNX, as shipped in faster-whisper's wheel) through onnxruntime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from voxgate.core.capabilities import Float32Array, ModelResolver
from voxgate.core.engine_settings import VADSettings

if TYPE_CHECKING:
    import onnxruntime as ort

_CONTEXT_SAMPLES = 64  # the model looks at the tail of the previous chunk, as trained


class SileroVADSettings(VADSettings):
    """``[vad] provider = "silero"``."""

    provider: Literal["silero"] = "silero"
    model: str = "silero-vad"
    """A name from ``voxgate models`` or a path to an ONNX file."""


class SileroVAD:
    sample_rate_hz = 16_000
    chunk_samples = 512
    runs_inline = False  # ~0.2 ms a chunk: too much to run on the event loop

    def __init__(self, model_path: str) -> None:
        import onnxruntime as ort  # here: loading the settings must not load onnxruntime

        options = ort.SessionOptions()
        # One thread: a chunk takes ~0.1 ms, and threads would only fight the other engines.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def new_stream(self) -> SileroStream:
        return SileroStream(self._session)


class SileroStream:
    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)

    def speech_probabilities(self, chunks: Float32Array) -> Float32Array:
        if chunks.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        flat = np.concatenate([self._context, chunks.reshape(-1)])
        # Row i is chunk i preceded by the last 64 samples before it.
        starts = np.arange(chunks.shape[0]) * SileroVAD.chunk_samples
        index = starts[:, None] + np.arange(SileroVAD.chunk_samples + _CONTEXT_SAMPLES)[None, :]
        batch = flat[index].astype(np.float32)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = flat[-_CONTEXT_SAMPLES:].copy()
        result: Float32Array = np.asarray(probs, dtype=np.float32).reshape(-1)
        return result


def create(settings: SileroVADSettings, models: ModelResolver) -> SileroVAD:
    return SileroVAD(str(models.resolve(settings.model)))
