"""Benchmark: the semantic end of turn (smart-turn) against the fixed silence, on real speech.

Two sets, from Debian's pocketsphinx-testdata (LibriVox, cards, "go forward") and the bundled
sample question:

- **paused**: each sentence cut at a word boundary (word times from Whisper tiny.en) and joined
  again with a mid-sentence pause of 300-800 ms (the clip's own noise floor as filler). A turn
  that ends before the last word is a false cut-in.
- **complete**: each clip whole, then silence. How long after the last voiced VAD chunk the turn
  is declared over (for the model: the silence it waited plus its inference time).

Both run the real Silero VAD and the sans-I/O endpointer chunk by chunk, once with the default
turn settings and once with the model off (the fixed ``end_of_turn_silence_ms``).

    python -m bench.turn_end [--threshold 0.5] [--check-ms 192] [--fallback-ms 1000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import int16_to_float, read_wav
from voxgate.core.capabilities import Float32Array
from voxgate.core.config import TurnSettings, load_settings
from voxgate.models import ModelStore
from voxgate.pipeline.endpointing import (
    Endpointer,
    EndpointerConfig,
    TurnEnded,
    TurnMaybeEnded,
)
from voxgate.providers.silero_vad import SileroVAD
from voxgate.providers.smart_turn import SmartTurn
from voxgate.speech_corpus import CORPUS_DIR, INSTALL_HINT, librivox_clips

console = Console()
RATE_HZ = 16_000
PAUSES_MS = (300, 400, 500, 600, 700, 800)
TAIL_MS = 2_000  # silence after the utterance: more than any fallback


@dataclass(frozen=True, slots=True)
class Speech:
    name: str
    audio: Float32Array


@dataclass(frozen=True, slots=True)
class Outcome:
    ended_ms: float | None
    """Stream time at which the turn was declared over (the model's answer taken as instant: its
    time is in ``model_ms``); None: never."""
    model_ms: float
    last_voiced_ms: float
    """End of the last voiced VAD chunk of the utterance."""


def real_speech() -> list[Speech]:
    clips = [Speech(c.name, _read(c.path)) for c in librivox_clips()]
    if not clips:
        raise SystemExit(f"no LibriVox clips: {INSTALL_HINT}")
    clips += [
        Speech(f"cards-{p.stem}", _read(p)) for p in sorted((CORPUS_DIR / "cards").glob("*.wav"))
    ]
    raw = np.fromfile(CORPUS_DIR / "goforward.raw", dtype=np.int16)
    clips.append(Speech("goforward", int16_to_float(raw)))
    clips.append(Speech("question", _read(SAMPLE_QUESTION)))
    return clips


def _read(path: Path) -> Float32Array:
    samples, rate = read_wav(path)
    if rate != RATE_HZ:
        raise SystemExit(f"{path}: {rate} Hz, expected {RATE_HZ}")
    return int16_to_float(samples)


def word_gaps(speech: list[Speech], whisper_dir: Path) -> dict[str, list[float]]:
    """Per clip, where to cut between consecutive words: Whisper's word times are only good to
    ~0.2 s, so each boundary is moved to the quietest 10 ms within 150 ms of it."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(whisper_dir), device="cpu", compute_type="int8", cpu_threads=2)
    gaps: dict[str, list[float]] = {}
    for clip in speech:
        segments, _ = model.transcribe(clip.audio, language="en", word_timestamps=True)
        words = [w for s in segments for w in (s.words or [])]
        hints = [(a.end + b.start) / 2 for a, b in itertools.pairwise(words)]
        gaps[clip.name] = sorted({_quietest(clip.audio, hint) for hint in hints})
    return gaps


def _quietest(audio: Float32Array, around_s: float, reach_s: float = 0.15) -> float:
    frame = RATE_HZ // 100
    start = max(0, int((around_s - reach_s) * RATE_HZ))
    stop = min(len(audio), int((around_s + reach_s) * RATE_HZ))
    windows = audio[start : start + (stop - start) // frame * frame].reshape(-1, frame)
    if not len(windows):
        return around_s
    quietest = int(np.argmin((windows**2).mean(axis=1)))
    return (start + quietest * frame + frame // 2) / RATE_HZ


def filler(audio: Float32Array, n: int, rng: np.random.Generator) -> Float32Array:
    """Noise at the clip's own floor (its quietest 20 ms frames), so a pause sounds like the room."""
    frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
    floor = float(np.percentile(np.sqrt((frames**2).mean(axis=1)), 10))
    return rng.normal(0.0, floor, n).astype(np.float32)


def paused_cases(
    speech: list[Speech], gaps: dict[str, list[float]]
) -> list[tuple[str, Float32Array, int]]:
    """(name, audio, pause ms): every word boundary of every clip, pauses cycling 300-800 ms."""
    rng = np.random.default_rng(11)
    cases = []
    for clip in speech:
        for i, gap_s in enumerate(gaps[clip.name]):
            pause_ms = PAUSES_MS[(len(cases) + i) % len(PAUSES_MS)]
            cut = int(gap_s * RATE_HZ)
            pause = filler(clip.audio, pause_ms * RATE_HZ // 1000, rng)
            joined = np.concatenate([clip.audio[:cut], pause, clip.audio[cut:]])
            cases.append((f"{clip.name}@{i + 1}", joined, pause_ms))
    return cases


class Simulation:
    """Silero VAD and the endpointer over a whole stream, the model asked synchronously."""

    def __init__(self, vad: SileroVAD, model: SmartTurn, turn: TurnSettings) -> None:
        self.vad = vad
        self.model = model
        self.turn = turn
        self.model_ms: list[float] = []
        self._answers: dict[tuple[int, int], tuple[float, float]] = {}
        self._speech: dict[int, Float32Array] = {}

    def run(self, audio: Float32Array, *, semantic: bool) -> Outcome:
        rng = np.random.default_rng(5)
        tail = filler(audio, TAIL_MS * RATE_HZ // 1000, rng)
        stream = np.concatenate([audio, tail])
        n = self.vad.chunk_samples
        chunks = stream[: len(stream) // n * n].reshape(-1, n)
        key = hash(chunks.tobytes())
        if key not in self._speech:
            self._speech[key] = self.vad.new_stream().speech_probabilities(chunks)
        probabilities = self._speech[key]
        chunk_ms = n / RATE_HZ * 1000
        endpointer = Endpointer(self._config(chunk_ms, semantic))
        last_voiced_ms = _last_voiced_ms(probabilities, chunk_ms, audio.shape[0] / RATE_HZ * 1000)
        for index, probability in enumerate(probabilities):
            for decision in endpointer.feed(float(probability)):
                if isinstance(decision, TurnEnded):
                    return Outcome((index + 1) * chunk_ms, 0.0, last_voiced_ms)
                if isinstance(decision, TurnMaybeEnded):
                    p, took_ms = self._ask(chunks, index)
                    if endpointer.end_of_turn_probability(decision.last_voiced_chunk, p):
                        return Outcome((index + 1) * chunk_ms, took_ms, last_voiced_ms)
        return Outcome(None, 0.0, last_voiced_ms)

    def _ask(self, chunks: Float32Array, index: int) -> tuple[float, float]:
        """The model's answer for the stream up to chunk ``index`` (remembered: a sweep over
        thresholds asks the same questions again)."""
        key = (hash(chunks.tobytes()), index)
        if key not in self._answers:
            started = time.perf_counter()
            p = self.model.complete_probability(chunks[: index + 1].reshape(-1))
            took_ms = (time.perf_counter() - started) * 1000
            self.model_ms.append(took_ms)
            self._answers[key] = (p, took_ms)
        return self._answers[key]

    def _config(self, chunk_ms: float, semantic: bool) -> EndpointerConfig:
        turn = self.turn
        config = EndpointerConfig(
            chunk_ms=chunk_ms,
            min_speech_ms=turn.min_speech_ms,
            end_of_turn_silence_ms=turn.end_of_turn_silence_ms,
            speculative_start_ms=turn.speculative_start_ms,
            max_utterance_ms=turn.max_utterance_ms,
        )
        if not semantic:
            return config
        return replace(
            config,
            end_of_turn_check_ms=turn.end_of_turn_check_ms,
            end_of_turn_threshold=turn.end_of_turn_threshold,
            end_of_turn_fallback_ms=turn.end_of_turn_fallback_ms,
            end_of_turn_min_speech_ms=turn.end_of_turn_min_speech_ms,
        )


def _last_voiced_ms(probabilities: Float32Array, chunk_ms: float, speech_end_ms: float) -> float:
    """End of the last chunk the VAD heard as speech within the utterance (not the tail)."""
    voiced = [i for i, p in enumerate(probabilities) if p >= 0.5 and i * chunk_ms < speech_end_ms]
    return (voiced[-1] + 1) * chunk_ms if voiced else 0.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass(frozen=True, slots=True)
class Result:
    label: str
    cut_in: list[str]
    """Paused utterances ended before their last word."""
    silence_ms: list[float]
    """Complete utterances: silence from the last voiced chunk to the decision."""
    model_ms: list[float]
    """Complete utterances: the model's time on top, when its answer ended the turn."""
    complete_cut_early: int


def evaluate(
    sim: Simulation,
    cases: list[tuple[str, Float32Array, int]],
    speech: list[Speech],
    semantic: bool,
) -> Result:
    cut_in = []
    for name, audio, pause_ms in cases:
        outcome = sim.run(audio, semantic=semantic)
        if outcome.ended_ms is not None and outcome.ended_ms < outcome.last_voiced_ms:
            cut_in.append(f"{name} ({pause_ms} ms)")
    silence, model, early = [], [], 0
    for clip in speech:
        outcome = sim.run(clip.audio, semantic=semantic)
        assert outcome.ended_ms is not None  # the tail is longer than any fallback
        if outcome.ended_ms < outcome.last_voiced_ms:
            early += 1
        else:
            silence.append(outcome.ended_ms - outcome.last_voiced_ms)
            model.append(outcome.model_ms)
    turn = sim.turn
    label = _label(turn) if semantic else f"fixed {turn.end_of_turn_silence_ms} ms silence"
    return Result(label, cut_in, silence, model, early)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = TurnSettings()
    parser.add_argument("--check-ms", type=int, default=defaults.end_of_turn_check_ms)
    parser.add_argument(
        "--threshold", type=float, nargs="+", default=[defaults.end_of_turn_threshold]
    )
    parser.add_argument(
        "--fallback-ms", type=int, nargs="+", default=[defaults.end_of_turn_fallback_ms]
    )
    parser.add_argument(
        "--min-speech-ms", type=int, nargs="+", default=[defaults.end_of_turn_min_speech_ms]
    )
    parser.add_argument(
        "--fixed-ms", type=int, nargs="*", default=[1000], help="fixed silences to compare"
    )
    parser.add_argument("--verbose", action="store_true", help="name every false cut-in")
    args = parser.parse_args()
    settings = load_settings()
    store = ModelStore(settings.models_dir)
    vad = SileroVAD(str(store.resolve(settings.vad.model)))
    model = SmartTurn(str(store.resolve(settings.turn.end_of_turn_model)))
    speech = real_speech()
    cases = paused_cases(speech, word_gaps(speech, store.resolve("whisper-tiny-en")))

    sim = Simulation(vad, model, settings.turn)
    results = []
    for fixed_ms in sorted({settings.turn.end_of_turn_silence_ms, *args.fixed_ms}):
        sim.turn = settings.turn.model_copy(update={"end_of_turn_silence_ms": fixed_ms})
        results.append(evaluate(sim, cases, speech, semantic=False))
    for threshold, fallback_ms, min_speech_ms in itertools.product(
        args.threshold, args.fallback_ms, args.min_speech_ms
    ):
        sim.turn = settings.turn.model_copy(
            update={
                "end_of_turn_check_ms": args.check_ms,
                "end_of_turn_threshold": threshold,
                "end_of_turn_fallback_ms": fallback_ms,
                "end_of_turn_min_speech_ms": min_speech_ms,
            }
        )
        results.append(evaluate(sim, cases, speech, semantic=True))

    console.print(
        f"{len(cases)} utterances with a mid-sentence pause of 300-800 ms; "
        f"{len(speech)} complete utterances, silence from the last voiced chunk to the decision"
    )
    table = Table()
    columns = ("end of turn", "false cut-ins", "silence p50", "p95", "model ended", "cut")
    for column in columns:
        table.add_column(column, justify="right")
    for result in results:
        n = len(result.cut_in)
        table.add_row(
            result.label,
            f"{n}/{len(cases)} = {100 * n / len(cases):.1f}%",
            f"{pct(result.silence_ms, 50):.0f} ms",
            f"{pct(result.silence_ms, 95):.0f} ms",
            f"{sum(ms > 0 for ms in result.model_ms)}/{len(result.model_ms)}",
            str(result.complete_cut_early),
        )
        if args.verbose and result.cut_in:
            console.print(f"{result.label}: {', '.join(result.cut_in)}")
    console.print(table)
    console.print(
        "model ended: complete utterances whose turn the model's answer ended (the others waited "
        "for the fallback); add the model's time below to their silence. cut: complete "
        "utterances ended at a pause inside them."
    )
    console.print(
        f"smart-turn inference per call on this CPU (1 thread, {len(sim.model_ms)} calls): "
        f"p50 {statistics.median(sim.model_ms):.0f} ms, p95 {pct(sim.model_ms, 95):.0f} ms"
    )


def _label(turn: TurnSettings) -> str:
    return (
        f"model at {turn.end_of_turn_check_ms} ms, p>={turn.end_of_turn_threshold}, "
        f"fallback {max(turn.end_of_turn_fallback_ms, turn.end_of_turn_silence_ms)}, "
        f"speech>={turn.end_of_turn_min_speech_ms}"
    )


if __name__ == "__main__":
    main()
