"""microWakeWord: small streaming TFLite models (~55 KB) over the TFLite Micro audio frontend.

The four models pymicro-wakeword's wheel ships (``alexa``, ``hey_jarvis``, ``hey_mycroft``,
``okay_nabu``) are catalogue entries (``micro-wakeword-<word>``), copied out of the wheel and hash
checked like every model; they run on the TFLite C runtime (:mod:`voxgate.providers.tflite_c`).
The features are pymicro-features' (the TFLite Micro frontend the models were trained on: 40
filterbank channels per 10 ms, with its noise reduction and gain control; a library, not a model).

Per stream: a frontend, one interpreter (the model keeps its streaming state in variables, so
streams cannot share one) and the last few scores, averaged as the model's authors tuned.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from voxgate.core.capabilities import Int16Array, ModelResolver, WakeDetection
from voxgate.core.engine_settings import WakeWordSettings
from voxgate.core.errors import ConfigError, ModelError
from voxgate.providers import tflite_c

SAMPLE_RATE_HZ = 16_000
_STEP_SAMPLES = 160  # the frontend's hop: one feature frame per 10 ms


MODEL_PREFIX = "micro-wakeword-"
"""Catalogue names are this and the word (``micro-wakeword-hey_jarvis``)."""
EMBEDDED_WORDS = ("alexa", "hey_jarvis", "hey_mycroft", "okay_nabu")
"""The models in pymicro-wakeword's wheel (voxgate/models/catalog.py pins them)."""


class MicroWakeWordSettings(WakeWordSettings):
    """``[wake_word] provider = "micro"``."""

    provider: Literal["micro"] = "micro"
    models: list[str] = Field(
        default_factory=lambda: [f"{MODEL_PREFIX}{w}" for w in EMBEDDED_WORDS]
    )
    """The models loaded: names from ``voxgate models`` (``micro-wakeword-hey_jarvis``) or paths
    to a microWakeWord JSON file with its ``.tflite`` beside it. Each is listened for by the
    name of its file (``hey_jarvis``)."""


@dataclass(frozen=True, slots=True)
class _WordModel:
    word: str
    phrase: str
    model: tflite_c.Model
    cutoff: float
    window: int
    """Scores averaged before the cut-off applies."""


def _load_word(config_path: Path, threshold: float | None) -> _WordModel:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        micro = config["micro"]
        model_path = config_path.parent / config["model"]
        cutoff = float(micro["probability_cutoff"])
        window = int(micro["sliding_window_size"])
        data = model_path.read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"not a microWakeWord model config: {config_path} ({exc})") from exc
    word = Path(config["model"]).stem
    model = tflite_c.Model(data, word)
    phrase = str(config.get("wake_word", word))
    return _WordModel(word, phrase, model, threshold or cutoff, max(1, window))


class MicroWakeWord:
    """The :class:`~voxgate.core.capabilities.WakeWord` engine; models loaded once, shared."""

    sample_rate_hz = SAMPLE_RATE_HZ
    runs_inline = True  # ~0.1 ms of work per 30 ms of audio: a thread hop would cost more

    def __init__(self, words: list[_WordModel]) -> None:
        self._words = {word.word: word for word in words}
        self.wake_words = tuple(sorted(self._words))

    def phrase(self, wake_word: str) -> str:
        """How the word is said ("Hey Jarvis")."""
        return self._word(wake_word).phrase

    def _word(self, wake_word: str) -> _WordModel:
        try:
            return self._words[wake_word]
        except KeyError:
            installed = ", ".join(self.wake_words) or "none"
            raise ConfigError(f"unknown wake word {wake_word!r} (installed: {installed})") from None

    def new_stream(self, wake_word: str) -> MicroWakeWordStream:
        return MicroWakeWordStream(self._word(wake_word))


class MicroWakeWordStream:
    def __init__(self, word: _WordModel) -> None:
        from pymicro_features import MicroFrontend  # a compiled library, loaded with the engine

        self.wake_word = word.word
        self._word = word
        self._frontend = MicroFrontend()
        self._pending = b""
        self._samples = 0  # fed to the frontend so far
        self._interpreter = tflite_c.QuantizedInterpreter(word.model)
        self._frames: list[list[float]] = []
        self._scores: deque[float] = deque(maxlen=word.window)

    def reset(self) -> None:
        self._frontend.reset()
        self._pending = b""
        self._restart()

    def _restart(self) -> None:
        """A fresh interpreter: the model's streaming state lives in its variables."""
        self._interpreter.close()
        self._interpreter = tflite_c.QuantizedInterpreter(self._word.model)
        self._frames.clear()
        self._scores.clear()

    def process(self, pcm: Int16Array) -> WakeDetection | None:
        data = self._pending + np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        offset, step = 0, _STEP_SAMPLES * 2
        found: WakeDetection | None = None
        while offset + step <= len(data):
            result = self._frontend.process_samples(data[offset : offset + step])
            read = max(1, result.samples_read)
            offset += read * 2
            self._samples += read
            if result.features and found is None:
                found = self._feature(result.features)
        self._pending = data[offset:]
        return found

    def _feature(self, features: list[float]) -> WakeDetection | None:
        self._frames.append(features)
        stride = self._interpreter.input_frames
        if len(self._frames) < stride:
            return None
        batch: npt.NDArray[np.float32] = np.asarray(self._frames, dtype=np.float32)[None]
        self._frames.clear()
        self._scores.append(float(self._interpreter.run(batch).reshape(-1)[0]))
        if len(self._scores) < self._scores.maxlen:  # type: ignore[operator]
            return None
        score = sum(self._scores) / len(self._scores)
        if score <= self._word.cutoff:
            return None
        self._restart()
        return WakeDetection(self.wake_word, self._samples, score)


def create(settings: MicroWakeWordSettings, models: ModelResolver) -> MicroWakeWord:
    words = []
    for name in settings.models:
        path = models.resolve(name)
        config = path if path.is_file() else path / f"{name.removeprefix(MODEL_PREFIX)}.json"
        words.append(_load_word(config, settings.threshold))
    engine = MicroWakeWord(words)
    engine._word(settings.wake_word)  # the default word must be one of them: fail at start
    return engine
