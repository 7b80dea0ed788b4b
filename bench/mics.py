"""Live microphones per process: the real Silero VAD, batched vs one call per session.

Starts a real ``voxgate serve`` (stand-in STT, LLM and TTS; the real Silero VAD; the end-of-turn
model off unless ``--smart-turn``, so the VAD is what is measured) once with ``[vad] batch = true``
and once with ``false``, and for each N in ``--levels`` opens N WebSocket microphones over a real
socket on the voice-assistant-proxy ``/ws`` route. Each streams real speech (LibriVox clips from
``pocketsphinx-testdata``, each followed by 3 s of silence, so turns end and replies come back)
as raw PCM16 in 100 ms frames at real-time pace, each microphone at its own phase, as real devices
are. After a warm-up it reads, from the server's ``/metrics`` over ``--seconds``:

- frame take-in: ``voxgate_frame_handle_seconds`` (decode, resample, VAD) p50/p99, interpolated
  inside the histogram's buckets;
- event-loop lateness: ``voxgate_event_loop_lateness_seconds`` (a 50 ms timer) p50/p99;
- the server's CPU (% of one core) and RSS, frames sent vs taken in.

    python -m bench.mics [--levels 50,100,200,300] [--seconds 20] [--modes batched,unbatched]

The machine this runs on is shared: figures from a busy machine are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.server_load import free_port, proc_stats
from voxgate.core.audio import read_wav
from voxgate.speech_corpus import librivox_clips

TOKEN = "bench-mics-token"
FRAME_MS = 100
RATE_HZ = 16_000
FRAME_BYTES = RATE_HZ * FRAME_MS // 1000 * 2
FRAME_METRIC = "voxgate_frame_handle_seconds"
LATENESS_METRIC = "voxgate_event_loop_lateness_seconds"


def speech_loop() -> bytes:
    """Real speech, each clip followed by 3 s of silence (a turn each); a tone if the corpus is
    missing."""
    parts = []
    for clip in librivox_clips()[:4]:
        pcm, rate = read_wav(clip.path)
        if rate == RATE_HZ:
            parts += [pcm.astype("<i2").tobytes(), bytes(RATE_HZ * 3 * 2)]
    if not parts:
        print("pocketsphinx-testdata missing: a 220 Hz tone stands in for speech", file=sys.stderr)
        t = np.arange(RATE_HZ * 3) / RATE_HZ
        parts = [(np.sin(2 * np.pi * 220 * t) * 6000).astype("<i2").tobytes(), bytes(RATE_HZ * 6)]
    audio = b"".join(parts)
    return audio[: len(audio) - len(audio) % FRAME_BYTES]


def buckets(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative counts by upper bound, summed over labels."""
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == name:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    out[bound] = out.get(bound, 0.0) + sample.value
    return out


def quantile_ms(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of what was observed between two scrapes, linear inside its bucket (the
    last finite bound if it lies beyond)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    low_bound, low_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * total:
            if bound == float("inf"):
                return float("inf")  # beyond the last bucket: printed as ">" it
            share = (q * total - low_count) / max(count - low_count, 1e-9)
            return (low_bound + share * (bound - low_bound)) * 1000
        low_bound, low_count = bound, count
    return float("nan")


class Mic:
    def __init__(self, index: int, url: str, audio: bytes) -> None:
        self.url = url
        self.audio = audio
        rng = random.Random(index)
        self.offset = rng.randrange(len(audio) // FRAME_BYTES) * FRAME_BYTES
        self.phase_s = rng.uniform(0, FRAME_MS / 1000)
        self.sent = 0
        self.received = 0
        self.failure: str | None = None
        self.connected = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        for attempt in range(8):
            try:
                await self._stream()
                return
            except (ConnectionClosed, InvalidStatus, OSError, TimeoutError) as exc:
                self.failure = f"{type(exc).__name__}: {exc}"[:120]
                if self.connected.is_set() or self.stop.is_set():
                    return  # dropped mid-run: counted, not retried
                await asyncio.sleep(0.5 * (attempt + 1))

    async def _stream(self) -> None:
        async with websockets.connect(
            self.url, max_size=None, open_timeout=30, ping_interval=None
        ) as ws:
            self.connected.set()
            self.failure = None

            async def read() -> None:
                async for message in ws:
                    self.received += len(message)

            reader = asyncio.create_task(read())
            await asyncio.sleep(self.phase_s)
            start, index = time.monotonic(), 0
            while not self.stop.is_set() and not reader.done():
                at = (self.offset + index * FRAME_BYTES) % len(self.audio)
                await ws.send(self.audio[at : at + FRAME_BYTES])
                self.sent += FRAME_BYTES
                index += 1
                await asyncio.sleep(max(0.0, start + index * FRAME_MS / 1000 - time.monotonic()))
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def measure(
    http: httpx.AsyncClient, pid: int, url: str, audio: bytes, mics: int, seconds: float
) -> dict[str, Any]:
    clients = [Mic(i, url, audio) for i in range(mics)]
    tasks = []
    for start in range(0, mics, 25):  # a ramp: the token check is one database read each
        tasks += [asyncio.create_task(c.run()) for c in clients[start : start + 25]]
        await asyncio.sleep(0.25)
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.connected.wait() for c in clients))
    except TimeoutError:
        pass
    await asyncio.sleep(3)  # warm: every microphone streaming, turns under way
    text0 = (await http.get("/metrics")).text
    cpu0, _ = proc_stats(pid)
    sent0 = sum(c.sent for c in clients)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - started
    cpu1, rss = proc_stats(pid)
    sent1 = sum(c.sent for c in clients)
    text1 = (await http.get("/metrics")).text
    for client in clients:
        client.stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    f0, f1 = buckets(text0, FRAME_METRIC), buckets(text1, FRAME_METRIC)
    l0, l1 = buckets(text0, LATENESS_METRIC), buckets(text1, LATENESS_METRIC)
    frames_taken = f1.get(float("inf"), 0.0) - f0.get(float("inf"), 0.0)
    return {
        "mics": mics,
        "connected": sum(c.connected.is_set() for c in clients),
        "dropped": sum(c.failure is not None for c in clients),
        "frames_sent": round((sent1 - sent0) / FRAME_BYTES),
        "frames_taken_in": round(frames_taken),
        "frame_p50_ms": round(quantile_ms(f0, f1, 0.50), 2),
        "frame_p99_ms": round(quantile_ms(f0, f1, 0.99), 2),
        "lateness_p50_ms": round(quantile_ms(l0, l1, 0.50), 2),
        "lateness_p99_ms": round(quantile_ms(l0, l1, 0.99), 2),
        "server_cpu_percent": round((cpu1 - cpu0) / wall * 100, 1),
        "server_rss_mb": round(rss, 1),
        "bytes_received": sum(c.received for c in clients),
    }


async def serve_and_measure(
    batched: bool, levels: list[int], seconds: float, smart_turn: bool
) -> list[dict[str, Any]]:
    port = free_port()
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": tempfile.mkdtemp(prefix="voxgate-mics-"),
        "VOXGATE_SERVER__SHARED_TOKEN": TOKEN,
        # Every microphone is the one shared-token "device" from one address: lift its caps.
        "VOXGATE_SERVER__MAX_SESSIONS_PER_DEVICE": "100000",
        "VOXGATE_SERVER__CONNECTIONS_PER_MINUTE": "1000000",
        "VOXGATE_SERVER__TURNS_PER_MINUTE": "1000000",
        **{f"VOXGATE_{cap}__PROVIDER": "standin" for cap in ("STT", "LLM", "TTS")},
        "VOXGATE_VAD__PROVIDER": "silero",
        "VOXGATE_VAD__BATCH": "true" if batched else "false",
        "VOXGATE_TURN__SEMANTIC_END_OF_TURN": "true" if smart_turn else "false",
    }
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "voxgate", "serve", "--port", str(port), "--log-level", "error"],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    audio = speech_loop()
    results = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for _ in range(600):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("voxgate serve did not become ready")
            url = f"ws://127.0.0.1:{port}/ws?token={TOKEN}"
            for mics in levels:
                row = await measure(http, server.pid, url, audio, mics, seconds)
                row["vad"] = "batched" if batched else "unbatched"
                results.append(row)
                print(format_row(row), flush=True)
                await asyncio.sleep(2)  # the sessions close
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    return results


COLUMNS = (
    ("vad", "{:>9}"),
    ("mics", "{:>5}"),
    ("connected", "{:>5}"),
    ("frame_p50_ms", "{:>9}"),
    ("frame_p99_ms", "{:>9}"),
    ("lateness_p50_ms", "{:>9}"),
    ("lateness_p99_ms", "{:>9}"),
    ("server_cpu_percent", "{:>7}"),
    ("server_rss_mb", "{:>7}"),
    ("frames_sent", "{:>8}"),
    ("frames_taken_in", "{:>8}"),
)
HEADER = "      vad  mics  conn  frame50   frame99   late50    late99     cpu%     rss  sent  taken"


def format_row(row: dict[str, Any]) -> str:
    cells = []
    for key, fmt in COLUMNS:
        value = row[key]
        beyond = isinstance(value, float) and value == float("inf")
        cells.append(fmt.format(">" + LAST_BOUND[key] if beyond else value))
    return " ".join(cells)


LAST_BOUND = {"frame_p50_ms": "100", "frame_p99_ms": "100", "lateness_p50_ms": "1000"}
LAST_BOUND["lateness_p99_ms"] = "1000"


async def main(
    levels: list[int], seconds: float, modes: list[str], smart_turn: bool
) -> list[dict[str, Any]]:
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("frame/late: ms (p50, p99); cpu%: of one core; rss: MB; frames over the window")
    print(HEADER)
    results = []
    for mode in modes:
        results += await serve_and_measure(mode == "batched", levels, seconds, smart_turn)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="50,100,200,300")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--modes", default="batched,unbatched")
    parser.add_argument("--smart-turn", action="store_true", help="the end-of-turn model too")
    parser.add_argument("--json", type=Path, default=Path("bench/results/mics.json"))
    args = parser.parse_args()
    rows = asyncio.run(
        main(
            [int(n) for n in args.levels.split(",")],
            args.seconds,
            args.modes.split(","),
            args.smart_turn,
        )
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"written to {args.json}")
