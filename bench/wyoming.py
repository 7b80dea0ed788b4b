"""Benchmark: Wyoming at the client, as Home Assistant sees it, against a real ``voxgate serve
--wyoming`` (a subprocess with its own data directory) on the embedded default engines.

Per round, over one fresh TCP connection each (as Home Assistant does):

- **transcribe**: the sample question (3.2 s) sent as fast as the socket takes it, then the time
  from ``audio-stop`` to ``transcript``;
- **synthesize**: a sentence, the time from ``synthesize`` to the first ``audio-chunk`` and to
  ``audio-stop``, and the real-time factor (audio seconds per second of waiting);
- **describe**: ``describe`` to ``info`` (Home Assistant gives it 1 s).

    python -m bench.wyoming [--rounds 10] [--standin] [--json bench/results/wyoming.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe
from wyoming.tts import Synthesize

from bench.harness import STANDIN_ENGINES, free_port, voxgate_serve
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import read_wav
from voxgate.core.config import load_settings

console = Console()
SENTENCE = "The capital of France is Paris, a city on the river Seine."


async def describe_ms(port: int) -> float:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        started = time.perf_counter()
        await client.write_event(Describe().event())
        while (event := await client.read_event()) is not None and event.type != "info":
            pass
        return (time.perf_counter() - started) * 1000


async def transcribe_ms(port: int, pcm: bytes, rate: int) -> tuple[float, str]:
    step = rate // 10 * 2  # 100 ms chunks
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        for at in range(0, len(pcm), step):
            chunk = AudioChunk(rate=rate, width=2, channels=1, audio=pcm[at : at + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        stopped = time.perf_counter()
        while (event := await client.read_event()) is not None:
            if event.type == "transcript":
                return (time.perf_counter() - stopped) * 1000, str(event.data.get("text"))
            if event.type == "error":
                raise RuntimeError(f"transcribe failed: {event.data}")
    raise RuntimeError("the server closed the connection")


async def synthesize_ms(port: int, text: str) -> tuple[float, float, float]:
    """Milliseconds to the first audio and to audio-stop, and the audio's seconds."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        started = time.perf_counter()
        await client.write_event(Synthesize(text=text).event())
        first, samples, rate = None, 0, 1
        while (event := await client.read_event()) is not None:
            if event.type == "audio-chunk":
                if first is None:
                    first = time.perf_counter()
                chunk = AudioChunk.from_event(event)
                samples, rate = samples + chunk.samples, chunk.rate
            elif event.type == "audio-stop":
                done = time.perf_counter()
                assert first is not None, "no audio"
                return (first - started) * 1000, (done - started) * 1000, samples / rate
            elif event.type == "error":
                raise RuntimeError(f"synthesize failed: {event.data}")
    raise RuntimeError("the server closed the connection")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def run(rounds: int, standin: bool) -> dict[str, object]:
    samples, rate = read_wav(SAMPLE_QUESTION)
    pcm = samples.astype("<i2").tobytes()
    port = free_port()
    env = {"VOXGATE_WYOMING__ENABLED": "true", "VOXGATE_WYOMING__PORT": str(port)}
    if standin:
        env |= STANDIN_ENGINES
    results: dict[str, list[float]] = {
        "describe_ms": [],
        "transcribe_ms": [],
        "synthesize_first_audio_ms": [],
        "synthesize_total_ms": [],
        "synthesize_realtime_factor": [],
    }
    texts: list[str] = []
    with tempfile.TemporaryDirectory() as data_dir:
        # The prepared models are reused, not copied: the data directory is otherwise fresh.
        (Path(data_dir) / "models").symlink_to(load_settings().models_dir, target_is_directory=True)
        console.print("starting voxgate serve --wyoming (loading the models)...")
        async with voxgate_serve(Path(data_dir), env):
            await transcribe_ms(port, pcm, rate)  # a first request of each kind, not counted
            await synthesize_ms(port, SENTENCE)
            for _ in range(rounds):
                results["describe_ms"].append(await describe_ms(port))
                took, text = await transcribe_ms(port, pcm, rate)
                results["transcribe_ms"].append(took)
                texts.append(text)
                first, total, audio_s = await synthesize_ms(port, SENTENCE)
                results["synthesize_first_audio_ms"].append(first)
                results["synthesize_total_ms"].append(total)
                results["synthesize_realtime_factor"].append(audio_s / (total / 1000))
    table = Table("at the client", "median", "p95", "n", title="Wyoming (voxgate serve --wyoming)")
    for name, values in results.items():
        table.add_row(
            name, f"{statistics.median(values):.1f}", f"{p95(values):.1f}", str(len(values))
        )
    console.print(table)
    console.print(f"transcripts: {sorted(set(texts))}")
    return {
        "rounds": rounds,
        "engines": "standin" if standin else "embedded default",
        "median": {k: round(statistics.median(v), 1) for k, v in results.items()},
        "p95": {k: round(p95(v), 1) for k, v in results.items()},
        "transcripts": sorted(set(texts)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--standin", action="store_true", help="stand-in engines (no models)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    summary = asyncio.run(run(args.rounds, args.standin))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
