"""Silero VAD (v6 ONNX, as shipped in faster-whisper's wheel) through onnxruntime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from voxgate.core.capabilities import Float32Array, ModelResolver, VADStream
from voxgate.core.engine_settings import VADSettings
from voxgate.providers.silero_batch import StreamState, batched_graph, run_batch

if TYPE_CHECKING:
    import onnxruntime as ort


class SileroVADSettings(VADSettings):
    """``[vad] provider = "silero"``."""

    provider: Literal["silero"] = "silero"
    model: str = "silero-vad"
    """A name from ``voxgate models`` or a path to an ONNX file."""
    batch: bool = True
    """Run every session's new audio in one inference call (a rewritten graph, same weights and
    same probabilities): far fewer calls and thread hops with many live microphones (see
    ``bench/mics.py``). False: one call per session per frame, as before."""


class SileroVAD:
    sample_rate_hz = 16_000
    chunk_samples = 512
    runs_inline = False  # ~0.2 ms a chunk: too much to run on the event loop

    def __init__(self, model_path: str, *, batch: bool = False) -> None:
        import onnxruntime as ort  # here: loading the settings must not load onnxruntime

        options = ort.SessionOptions()
        # One thread: a chunk takes ~0.1 ms, and threads would only fight the other engines.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        provider = ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(model_path, sess_options=options, providers=provider)
        self.batches = batch
        self._batched: ort.InferenceSession | None = None
        if batch:
            graph = batched_graph(Path(model_path).read_bytes())
            self._batched = ort.InferenceSession(graph, sess_options=options, providers=provider)

    def new_stream(self) -> SileroStream:
        return SileroStream(self._session)

    def speech_probabilities_batch(
        self, streams: Sequence[VADStream], chunks: Sequence[Float32Array]
    ) -> list[Float32Array]:
        """Each stream's probabilities for its chunks, all in one inference call."""
        if self._batched is None:
            raise RuntimeError("this Silero VAD was loaded without batching")
        states = []
        for stream in streams:
            if not isinstance(stream, SileroStream):
                raise TypeError(f"not a Silero stream: {type(stream).__name__}")
            states.append(stream.state)
        return run_batch(self._batched, states, chunks)


class SileroStream:
    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.state = StreamState()

    def reset(self) -> None:
        self.state.reset()

    def speech_probabilities(self, chunks: Float32Array) -> Float32Array:
        if chunks.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        state = self.state
        batch = state.model_rows(chunks)
        probs, state.h, state.c = self._session.run(
            None, {"input": batch, "h": state.h, "c": state.c}
        )
        result: Float32Array = np.asarray(probs, dtype=np.float32).reshape(-1)
        return result


def create(settings: SileroVADSettings, models: ModelResolver) -> SileroVAD:
    return SileroVAD(str(models.resolve(settings.model)), batch=settings.batch)
