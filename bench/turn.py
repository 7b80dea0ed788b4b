"""Benchmark: a spoken turn on the embedded default engines, over real speech clips.

Feeds each clip at real-time pace (as a device would), then silence, and records where the time
went. Runs every clip twice in the same process: with speculative start (the default) and with
it off (the baseline), so the ratio between them shows what speculation buys.

    python -m bench.turn [--rounds N] [--json bench/results/turn.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import read_wav
from voxgate.core.config import Settings, TurnSettings, load_settings
from voxgate.core.events import TurnTimings
from voxgate.evaluation import word_errors
from voxgate.models import ModelStore
from voxgate.pipeline import Engines, TurnSession, load_engines
from voxgate.pipeline.drive import spoken_turn
from voxgate.pipeline.engines import warm_up
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips

console = Console()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run_turns(
    engines: Engines, settings: Settings, turn: TurnSettings, rounds: int
) -> tuple[list[TurnTimings], int, int]:
    clips = [(clip.path, clip.transcript) for clip in librivox_clips()]
    if not clips:
        raise SystemExit(f"no LibriVox clips: {INSTALL_HINT}")
    clips.append((SAMPLE_QUESTION, "what is the capital of france"))
    timings: list[TurnTimings] = []
    errors = words = 0
    for _ in range(rounds):
        for path, reference in clips:
            samples, rate = read_wav(path)
            session = TurnSession(engines, turn, settings.character, output_rate_hz=24_000)
            result = await spoken_turn(session, samples, rate, realtime=True)
            await session.close()
            if result.timings is not None:
                timings.append(result.timings)
            clip_errors, clip_words = word_errors(reference, result.transcript)
            errors, words = errors + clip_errors, words + clip_words
            console.print(f"  {path.name}: {result.transcript!r} → {result.reply_text[:60]!r}")
    return timings, errors, words


async def session_memory(engines: Engines, settings: Settings, count: int) -> float:
    """RSS added by ``count`` live sessions that each heard two seconds of speech."""
    samples, rate = read_wav(SAMPLE_QUESTION)
    before = rss_mb()
    sessions = [
        TurnSession(engines, settings.turn, settings.character, output_rate_hz=24_000)
        for _ in range(count)
    ]
    for session in sessions:
        await session.push_audio(samples[: rate * 2].astype("<i2").tobytes(), rate)
    after = rss_mb()
    for session in sessions:
        await session.close()
    return after - before


def summarise(timings: list[TurnTimings]) -> dict[str, dict[str, float]]:
    summary = {}
    for field in fields(TurnTimings):
        if field.name == "speculative":
            continue
        values = [v for t in timings if (v := getattr(t, field.name)) is not None]
        summary[field.name] = {
            "median": round(statistics.median(values), 1) if values else float("nan"),
            "p95": round(percentile(values, 95), 1),
            "n": len(values),
        }
    return summary


async def main(rounds: int) -> dict[str, object]:
    settings = load_settings()
    rss_start = rss_mb()
    started = time.perf_counter()
    engines = load_engines(settings, ModelStore(settings.models_dir))
    await warm_up(engines, settings.character.system_prompt)
    ready_s = time.perf_counter() - started
    rss_loaded = rss_mb()
    console.print(f"ready in {ready_s:.2f} s, RSS {rss_loaded:.0f} MB")

    console.print("speculative start (default):")
    fast, errors, words = await run_turns(engines, settings, settings.turn, rounds)
    console.print("baseline, no speculative start:")
    plain_turn = settings.turn.model_copy(update={"speculative_start_ms": None})
    slow, _, _ = await run_turns(engines, settings, plain_turn, rounds)
    sessions_mb = await session_memory(engines, settings, 10)
    engines.close()

    results = {
        "speculative": summarise(fast),
        "baseline": summarise(slow),
        "stt_wer": round(errors / max(1, words), 4),
        "ready_s": round(ready_s, 2),
        "rss_models_loaded_mb": round(rss_loaded, 0),
        "rss_before_load_mb": round(rss_start, 0),
        "rss_10_sessions_added_mb": round(sessions_mb, 1),
        "turns": len(fast),
        "raw": {"speculative": [asdict(t) for t in fast], "baseline": [asdict(t) for t in slow]},
    }
    table = Table("stage (ms)", "median", "p95", "baseline median", "baseline p95", "ratio")
    for name, stats in results["speculative"].items():  # type: ignore[union-attr]
        base = results["baseline"][name]  # type: ignore[index]
        ratio = stats["median"] / base["median"] if base["median"] else float("nan")
        table.add_row(
            name.removesuffix("_ms"),
            f"{stats['median']:.0f}",
            f"{stats['p95']:.0f}",
            f"{base['median']:.0f}",
            f"{base['p95']:.0f}",
            f"{ratio:.2f}",
        )
    console.print(table)
    console.print(
        f"STT WER {results['stt_wer']:.1%} over {words} words · ready {ready_s:.2f} s · "
        f"RSS loaded {rss_loaded:.0f} MB · 10 sessions add {sessions_mb:.1f} MB"
    )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("bench/results/turn.json"))
    args = parser.parse_args()
    results = asyncio.run(main(args.rounds))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    console.print(f"written to {args.json}")
