"""Persistence benchmark: what recording turns costs the audio path, and how many turns a second
the write queue sustains into SQLite and PostgreSQL.

    python -m bench.store [--turns 5000] [--postgres-url URL | --no-postgres]

Without ``--postgres-url`` a throwaway PostgreSQL server is started (Debian's, as the tests do).

1. Audio path: the only work a session does for persistence is handing a finished turn to the
   queue (``ConversationRecorder``): its cost per turn, p50/p99. And the event loop's lateness
   (a 1 ms ticker) while the writer writes 1,000 turns/s, against the same ticker with nothing
   written — the audio of every session runs on that loop.
2. Throughput: N turns (two messages and three usage rows each) submitted at once; turns/s until
   all are committed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from voxgate.core.config import DatabaseSettings, Settings
from voxgate.core.events import TurnDone, TurnTimings
from voxgate.core.usage import EngineUsage
from voxgate.server.recording import ConversationRecorder, new_conversation_id
from voxgate.store import Store

USAGE = (
    EngineUsage("stt", "faster-whisper", "whisper-tiny-en", audio_s=2.1, compute_s=0.16),
    EngineUsage("llm", "llamacpp", "qwen2.5-0.5b-instruct", tokens_in=120, tokens_out=24),
    EngineUsage("tts", "piper", "en_US-joe-medium", characters=64, audio_s=3.2, compute_s=0.15),
)


def turn(turn_id: int) -> TurnDone:
    return TurnDone(
        turn_id=turn_id,
        user_text="What is the capital of France?",
        reply_text="The capital of France is Paris.",
        interrupted=False,
        timings=TurnTimings(stt_ms=160.0, llm_first_token_ms=170.0, tts_first_audio_ms=140.0),
        usage=USAGE,
        generated_text="The capital of France is Paris.",
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def open_store(url: str, data_dir: Path) -> tuple[Store, int]:
    store = await Store.open(Settings(data_dir=data_dir, database=DatabaseSettings(url=url)))
    device, _ = await store.devices.add(f"bench-{time.time_ns()}")
    store.writer.start()
    return store, device.id


async def loop_lateness(seconds: float) -> list[float]:
    """How late a 1 ms ticker wakes up, in ms."""
    late: list[float] = []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        await asyncio.sleep(0.001)
        late.append((time.perf_counter() - now - 0.001) * 1000)
    return late


async def audio_path(url: str, data_dir: Path, seconds: float, rate: int) -> dict[str, float]:
    store, device_id = await open_store(url, data_dir)
    recorder = ConversationRecorder(
        store.writer, new_conversation_id(), device_id, None, None, resumed=False
    )
    baseline = await loop_lateness(seconds)
    costs: list[float] = []

    async def record_at_rate() -> None:
        turn_id = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(max(1, rate // 100)):
                turn_id += 1
                event = turn(turn_id)
                started = time.perf_counter()
                recorder(event)
                costs.append((time.perf_counter() - started) * 1e6)
            await asyncio.sleep(0.01 if rate >= 100 else 1 / rate)

    lateness, _ = await asyncio.gather(loop_lateness(seconds), record_at_rate())
    await store.writer.flush(60)
    await store.close()
    return {
        "recorder_p50_us": statistics.median(costs),
        "recorder_p99_us": pct(costs, 99),
        "lateness_base_p50_ms": statistics.median(baseline),
        "lateness_base_p99_ms": pct(baseline, 99),
        "lateness_p50_ms": statistics.median(lateness),
        "lateness_p99_ms": pct(lateness, 99),
        "turns": len(costs),
    }


async def throughput(url: str, data_dir: Path, turns: int) -> dict[str, float]:
    store, device_id = await open_store(url, data_dir)
    recorder = ConversationRecorder(
        store.writer, new_conversation_id(), device_id, None, None, resumed=False
    )
    await store.writer.flush(10)
    started = time.perf_counter()
    for turn_id in range(1, turns + 1):
        recorder(turn(turn_id))
    submitted = time.perf_counter() - started
    assert await store.writer.flush(600), "not all turns were written"
    elapsed = time.perf_counter() - started
    assert store.writer.dropped == 0 and store.writer.healthy
    await store.close()
    return {
        "turns": turns,
        "turns_per_s": turns / elapsed,
        "submit_us_per_turn": submitted / turns * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--postgres-url")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        targets = {"sqlite": f"sqlite+aiosqlite:///{data_dir / 'bench.db'}"}
        if args.postgres_url:
            targets["postgresql"] = args.postgres_url
        elif not args.no_postgres:
            sys.path.insert(0, str(Path(__file__).parents[1]))
            from tests.postgres_server import PostgresServer

            server = stack.enter_context(PostgresServer())
            targets["postgresql"] = server.url()
        print(f"persistence benchmark: {args.turns} turns; {args.seconds:.0f} s per rate")
        for name, url in targets.items():
            print(f"\n{name}")
            for turns_per_s in (50, 1000):
                path = asyncio.run(audio_path(url, data_dir, args.seconds, turns_per_s))
                print(
                    f"  {turns_per_s:>5,} turns/s: handing a turn to the write queue "
                    f"p50 {path['recorder_p50_us']:.1f} µs, p99 {path['recorder_p99_us']:.1f} µs; "
                    f"event-loop lateness p50/p99 {path['lateness_p50_ms']:.3f}/"
                    f"{path['lateness_p99_ms']:.3f} ms (nothing written: "
                    f"{path['lateness_base_p50_ms']:.3f}/{path['lateness_base_p99_ms']:.3f})"
                )
            rate = asyncio.run(throughput(url, data_dir, args.turns))
            print(
                f"  sustained: {rate['turns_per_s']:,.0f} turns/s "
                f"({rate['turns']:.0f} turns, 2 messages + 3 usage rows each; "
                f"submitting {rate['submit_us_per_turn']:.1f} µs/turn)"
            )


if __name__ == "__main__":
    main()
