"""smart-turn v3.2 (CPU ONNX, as shipped in the ``pipecat-ai`` wheel) through onnxruntime.

The model hears the last 8 s of the utterance, silence so far included, and says how likely the
speaker has finished: an audio classifier (a Whisper-tiny encoder and a small head) trained on
complete and cut-off sentences, so it hears intonation and a trailing "and...", not only silence.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from voxgate.core.capabilities import Float32Array, ModelResolver
from voxgate.core.config import TurnSettings
from voxgate.core.errors import ModelError
from voxgate.providers.log_mel import SAMPLE_RATE_HZ, log_mel

WINDOW_S = 8
_WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE_HZ
_NORMALISE_EPS = 1e-7


class SmartTurn:
    """The :class:`~voxgate.core.capabilities.EndOfTurnModel` on onnxruntime, one thread."""

    sample_rate_hz = SAMPLE_RATE_HZ

    def __init__(self, model_path: str) -> None:
        options = ort.SessionOptions()
        # One thread: the call takes tens of milliseconds and the LLM and TTS want the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(
                model_path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
            raise ModelError(f"cannot load the end-of-turn model {model_path}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name

    def complete_probability(self, audio: Float32Array) -> float:
        features = input_features(audio)
        (probability,) = self._session.run(None, {self._input: features[None, :, :]})
        return float(np.asarray(probability).reshape(-1)[0])


def input_features(audio: Float32Array) -> Float32Array:
    """``(80, 800)``: the last 8 s, zeros in front when shorter (the end is what matters), scaled
    to zero mean and unit variance over the whole window, as log-mel."""
    if audio.ndim != 1:
        raise ValueError(f"need 1-D audio, got shape {audio.shape}")
    window = np.zeros(_WINDOW_SAMPLES, dtype=np.float32)
    tail = audio[-_WINDOW_SAMPLES:].astype(np.float32)
    if tail.shape[0]:
        window[-tail.shape[0] :] = tail
    window = (window - window.mean()) / np.sqrt(window.var() + _NORMALISE_EPS)
    return log_mel(window)


def create(settings: TurnSettings, models: ModelResolver) -> SmartTurn:
    return SmartTurn(str(models.resolve(settings.end_of_turn_model)))
