"""The wake word, measured: how often it is heard, how often it is heard when nobody said it,
how soon the device knows, what an always-listening device costs, and whether hours of it grow.

    python -m bench.wake [--hours 1] [--soak-minutes 30] [--latency-trials 20] [--word hey_jarvis]

1. Detection rate: the phrases of :mod:`bench.wake_audio` ("Hey Jarvis." ...) in 17 voices
   (4 flite, 4 espeak-ng accents at 3 speeds, Piper) = 51 utterances, each at gains 0, -6, -12 and
   -20 dB, clean and over pink noise and music (-40 dBFS: 20 dB under the speech at 0 dB,
   level with it at -20 dB). Each on a fresh stream.
2. False wakes per hour: ``--hours`` of speech without the wake word (LibriVox, and the same voices
   reading its transcripts and everyday sentences, some close to the word) over noise and music.
3. Latency at the device: a relay client streams "Hey Jarvis." at real-time pace to a server in
   this process (stand-in engines, the real wake-word engine); from the moment the last sample of
   the word is sent to ``wake.detected`` arriving.
4. CPU per always-on stream (the engine alone, and the whole relay path) and how many one core
   holds.
5. Soak: one relay device streams ``--soak-minutes`` of talk without the wake word (faster than
   real time); the process's RSS over time, and the rows in the database afterwards.

Timings on a busy machine are not comparable: say so with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import websockets

from bench import wake_audio as wa
from bench.harness import serving
from voxgate.core.capabilities import Int16Array, WakeWord
from voxgate.core.config import Settings
from voxgate.models import ModelStore
from voxgate.pipeline import load_engines
from voxgate.providers.micro_wakeword import MicroWakeWordSettings, create
from voxgate.server.app import create_app
from voxgate.store import Store

RATE_HZ = wa.RATE_HZ
FRAME = RATE_HZ // 50  # 20 ms, as devices send
GAINS_DB = (0.0, -6.0, -12.0, -20.0)
NOISE_DBFS = -40.0
"""The room's level: the speech (about -20 dBFS at 0 dB) is 20 dB over it near the microphone and
level with it at -20 dB."""


def fired(engine: WakeWord, word: str, audio: Int16Array) -> int:
    stream = engine.new_stream(word)
    return sum(
        stream.process(audio[i : i + FRAME]) is not None for i in range(0, len(audio), FRAME)
    )


def detection_rate(engine: WakeWord, word: str, models_dir: Path) -> None:
    utterances = wa.spoken(wa.PHRASES, models_dir)
    rng = np.random.default_rng(1)
    beds = {
        "clean": None,
        "pink": wa.noise("pink", 8, rng, NOISE_DBFS),
        "music": wa.noise("music", 8, rng, NOISE_DBFS),
    }
    voices = sorted({u.voice for u in utterances})
    print(f"\n## Detection rate: {len(utterances)} utterances, {len(voices)} voices, '{word}'")
    print("| background | " + " | ".join(f"{g:+.0f} dB" for g in GAINS_DB) + " |")
    print("| --- |" + " --- |" * len(GAINS_DB))
    misses: dict[str, int] = {}
    for name, bed in beds.items():
        cells = []
        for gain in GAINS_DB:
            hits = 0
            for u in utterances:
                ok = fired(engine, word, wa.mix(u.audio, gain, bed)) > 0
                hits += ok
                misses[u.voice] = misses.get(u.voice, 0) + (not ok)
            cells.append(f"{hits}/{len(utterances)} ({hits / len(utterances):.0%})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    runs = len(beds) * len(GAINS_DB) * len(wa.PHRASES)
    for family in ("flite", "piper", "espeak-ng"):
        mine = [v for v in voices if v.startswith(family)]
        heard = sum(runs - misses[v] for v in mine)
        print(f"{family}: {heard}/{runs * len(mine)} ({heard / (runs * len(mine)):.0%})")
    print("\nmisses by voice (of", runs, "runs each):")
    for voice in voices:
        print(f"  {voice:<28} {misses[voice]}")


def false_wakes(engine: WakeWord, word: str, hours: float, models_dir: Path) -> None:
    rng = np.random.default_rng(2)
    texts = wa.OTHER_TALK + wa.librivox_texts()
    synthetic = [u.audio for u in wa.spoken(texts, models_dir)]
    real = wa.librivox()
    sources = real * max(1, len(synthetic) // max(1, len(real))) + synthetic
    real_s = sum(len(a) for a in real) / RATE_HZ
    synth_s = sum(len(a) for a in synthetic) / RATE_HZ
    stream = engine.new_stream(word)
    wakes, total = 0, 0
    target = int(hours * 3600 * RATE_HZ)
    for piece in wa.endless_talk(sources, rng):
        for i in range(0, len(piece), FRAME):
            wakes += stream.process(piece[i : i + FRAME]) is not None
        total += len(piece)
        if total >= target:
            break
    audio_h = total / RATE_HZ / 3600
    print(f"\n## False wakes: {audio_h:.2f} h of speech and noise without '{word}'")
    print(
        f"sources: {len(real)} LibriVox clips ({real_s:.0f} s, real people), {len(synthetic)} "
        f"synthesized sentences ({synth_s:.0f} s, {len(texts)} texts x 17 voices), "
        "gains -20..0 dB, a third each clean / pink noise / music"
    )
    print(f"false wakes: {wakes} ({wakes / audio_h:.2f} per hour)")


def cpu_per_stream(engine: WakeWord, word: str) -> float:
    rng = np.random.default_rng(3)
    audio = np.concatenate([next(wa.endless_talk(wa.librivox(), rng)) for _ in range(40)])
    stream = engine.new_stream(word)
    started = time.process_time()
    for i in range(0, len(audio), FRAME):
        stream.process(audio[i : i + FRAME])
    cpu = time.process_time() - started
    share = cpu / (len(audio) / RATE_HZ)
    print(f"\n## CPU per always-on stream ({len(audio) / RATE_HZ:.0f} s of audio, 20 ms frames)")
    print(f"engine alone: {share * 1000:.2f} ms of CPU per second of audio = {share:.2%} of a core")
    print(f"  -> one core holds about {int(1 / share)} always-listening streams (engine only)")
    return share


async def relay(
    word: str,
    said: list[Int16Array],
    latency_trials: int,
    soak_minutes: float,
    models_dir: Path,
    data_dir: Path,
) -> None:
    """``said``: the wake word alone, trimmed to where it ends, in the voices that fire."""
    settings = Settings.model_validate(
        {
            "data_dir": str(data_dir),
            **{cap: {"provider": "standin"} for cap in ("vad", "stt", "llm", "tts")},
            "wake_word": {"provider": "micro", "wake_word": word},
        }
    )
    engines = load_engines(settings, ModelStore(models_dir, show_progress=False))
    store = await Store.open(settings)
    _, token = await store.devices.add("bench")
    headers = {"Authorization": f"Bearer {token}"}
    start = '{"event":"session.start","seq":1,"payload":{"listening":{"mode":"wake_word","follow_up":"turn"}}}'
    try:
        async with serving(create_app(settings, engines=engines, store=store)) as address:
            url = f"ws://{address}/v1/relay"
            await _latency(url, headers, start, latency_trials, said)
            await _soak(url, headers, start, soak_minutes, data_dir)
    finally:
        await store.close()
        engines.close()


async def _latency(
    url: str, headers: dict[str, str], start: str, trials: int, words: list[Int16Array]
) -> None:
    delays: list[float] = []
    missed = 0
    for trial in range(trials):
        word = words[trial % len(words)]
        audio = np.concatenate([np.zeros(RATE_HZ, np.int16), word, np.zeros(2 * RATE_HZ, np.int16)])
        word_end = RATE_HZ + len(word)
        async with websockets.connect(url, additional_headers=headers, proxy=None) as ws:
            await ws.send(start)
            await ws.recv()  # session.ready
            delay = await _stream_until_wake(ws, audio, word_end)
        if delay is None:
            missed += 1
        else:
            delays.append(delay)
    print(f"\n## Wake word end -> wake.detected at the device (relay, {trials} trials)")
    if delays:
        delays.sort()
        p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
        print(
            f"median {statistics.median(delays) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
            f"min {delays[0] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms "
            f"({len(delays)} heard, {missed} missed; {len(words)} voices in turn)"
        )


async def _stream_until_wake(ws: object, audio: Int16Array, word_end: int) -> float | None:
    """Send at real-time pace; seconds from the word's last sample leaving to wake.detected."""
    loop = asyncio.get_running_loop()
    ended_at: list[float] = []
    got: asyncio.Future[float] = loop.create_future()

    async def read() -> None:
        async for message in ws:  # type: ignore[attr-defined]
            if isinstance(message, str) and '"wake.detected"' in message:
                got.set_result(loop.time())
                return

    reader = asyncio.create_task(read())
    begin = loop.time()
    for index, offset in enumerate(range(0, len(audio), FRAME)):
        await ws.send(audio[offset : offset + FRAME].astype("<i2").tobytes())  # type: ignore[attr-defined]
        if offset + FRAME >= word_end and not ended_at:
            ended_at.append(loop.time())
        if got.done():
            break
        await asyncio.sleep(max(0.0, begin + (index + 1) * FRAME / RATE_HZ - loop.time()))
    try:
        async with asyncio.timeout(2):
            heard = await got
    except TimeoutError:
        return None
    finally:
        reader.cancel()
    return heard - ended_at[0] if ended_at else None


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if "VmRSS" in line) / 1024


async def _soak(
    url: str, headers: dict[str, str], start: str, minutes: float, data_dir: Path
) -> None:
    rng = np.random.default_rng(4)
    talk = wa.endless_talk(wa.librivox(), rng)
    samples: list[tuple[float, float]] = []
    sent = 0
    cpu_started = time.process_time()
    async with websockets.connect(url, additional_headers=headers, proxy=None) as ws:
        await ws.send(start)
        await ws.recv()
        while sent < minutes * 60 * RATE_HZ:
            piece = next(talk)
            for offset in range(0, len(piece), FRAME):
                await ws.send(piece[offset : offset + FRAME].astype("<i2").tobytes())
            sent += len(piece)
            if not samples or sent / RATE_HZ / 60 >= samples[-1][0] + 1:
                samples.append((sent / RATE_HZ / 60, _rss_mb()))
        await ws.send('{"event":"session.end","seq":2}')
    cpu = time.process_time() - cpu_started
    audio_s = sent / RATE_HZ
    with sqlite3.connect(data_dir / "voxgate.db") as db:
        counts = {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("conversations", "messages", "usage", "errors")
        }
    print(f"\n## Soak: one relay device in wake_word mode, {audio_s / 60:.0f} min of talk")
    print("RSS (MB) by minute of audio: " + ", ".join(f"{m:.0f}:{r:.0f}" for m, r in samples))
    warm = statistics.mean(r for m, r in samples[2:5]) if len(samples) > 5 else samples[0][1]
    print(f"growth after warm-up: {samples[-1][1] - warm:+.1f} MB; rows afterwards: {counts}")
    print(
        f"whole relay path (client in the same process, so an upper bound): "
        f"{cpu / audio_s * 1000:.2f} ms CPU per second of audio -> ~{int(audio_s / cpu)} "
        "always-listening devices per core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--word", default="hey_jarvis")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--latency-trials", type=int, default=20)
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument(
        "--parts", default="detection,false,cpu,relay", help="which of them to run, by name"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"# bench.wake ({os.cpu_count()} cores; on a busy machine timings are not comparable)")
    with tempfile.TemporaryDirectory() as folder:
        models_dir = Path(folder) / "models"
        engine = create(MicroWakeWordSettings(wake_word=args.word), ModelStore(models_dir))
        if "detection" in parts:
            detection_rate(engine, args.word, models_dir)
        if "false" in parts:
            false_wakes(engine, args.word, args.hours, models_dir)
        if "cpu" in parts:
            cpu_per_stream(engine, args.word)
        if "relay" not in parts:
            return
        said = [
            wa.trim(u.audio)
            for u in wa.spoken(("Hey Jarvis.",), models_dir)
            if not u.voice.startswith("espeak")  # it rarely hears espeak-ng's voices (above)
        ]
        data_dir = Path(folder) / "data"
        trials, minutes = args.latency_trials, args.soak_minutes
        asyncio.run(relay(args.word, said, trials, minutes, models_dir, data_dir))


if __name__ == "__main__":
    main()
