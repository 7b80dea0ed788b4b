"""The provider benchmark's plot: latency per engine, one panel a capability, and the word error
rates, as a PNG (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import io
from typing import Any

from voxgate.benchmarks.candidates import Capability
from voxgate.benchmarks.providers import BenchResult, EngineResult


def plot_png(result: BenchResult) -> bytes:
    """Latency per engine (one panel a capability) and the word error rates, as a PNG."""
    # Imported here: matplotlib is slow to import and only the written report needs it.
    import matplotlib

    matplotlib.use("Agg")  # no display: draw into memory
    from matplotlib import pyplot as plt

    panels: list[tuple[Capability, str, list[tuple[str, str]]]] = [
        (
            "stt",
            "STT: time to transcript (ms)",
            [("transcript_median_ms", "median"), ("transcript_p95_ms", "p95")],
        ),
        (
            "llm",
            "LLM: time (ms)",
            [("first_token_median_ms", "first token"), ("total_median_ms", "whole reply")],
        ),
        (
            "tts",
            "TTS: time (ms)",
            [("first_audio_median_ms", "first audio"), ("total_median_ms", "whole sentence")],
        ),
    ]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=100)
    for axis, (capability, title, series) in zip(axes.flat, panels, strict=False):
        _bars(axis, result.of(capability), series, title)
    # STT and TTS engines share the last panel: each has one of the two word error rates.
    _bars(
        axes.flat[3],
        result.of("stt") + result.of("tts"),
        [("wer", "STT WER (%)"), ("intelligibility_wer", "TTS intelligibility WER (%)")],
        "Word error rate (%), lower is better",
        scale=100.0,
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _bars(
    axis: Any,
    engines: list[EngineResult],
    series: list[tuple[str, str]],
    title: str,
    scale: float = 1.0,
) -> None:
    axis.set_title(title, fontsize=10)
    if not engines:
        axis.text(0.5, 0.5, "no engine measured", ha="center", va="center")
        axis.set_axis_off()
        return
    height = 0.8 / len(series)
    for index, (key, label) in enumerate(series):
        values = [(e.figures.get(key) or 0.0) * scale for e in engines]
        positions = [row + index * height for row in range(len(engines))]
        axis.barh(positions, values, height=height, label=label)
    axis.set_yticks([row + 0.4 - height / 2 for row in range(len(engines))])
    axis.set_yticklabels([e.name for e in engines], fontsize=8)
    axis.invert_yaxis()
    axis.legend(fontsize=8)
