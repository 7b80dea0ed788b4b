"""Benchmark: many devices streaming at once against one server with instant stand-in engines.

Starts ``voxgate serve`` in its own process with the ``standin`` engines (no models: what is
measured is the server), connects N WebSocket clients on the voice-assistant-proxy ``/ws`` route
(raw PCM16, 100 ms frames, real-time pace: 1.5 s of "speech" then 1.5 s of silence, so turns keep
happening), and reports: time to take in one frame (p50/p99 from the server's own histogram),
frames lost (bytes the clients sent vs bytes the server counted), server CPU per session, and
server memory per session.

    python -m bench.server_load [--sessions 200] [--seconds 20] [--silero]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import websockets
from prometheus_client.parser import text_string_to_metric_families

FRAME_MS = 100
RATE_HZ = 16_000
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds used, RSS in MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    rss_mb = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    return cpu_s, rss_mb


def frames() -> tuple[bytes, bytes]:
    samples = RATE_HZ * FRAME_MS // 1000
    t = np.arange(samples) / RATE_HZ
    speech = (np.sin(2 * np.pi * 220 * t) * 6000).astype("<i2").tobytes()
    return speech, bytes(samples * 2)


async def device(url: str, seconds: float, sent: list[int], received: list[int]) -> None:
    speech, silence = frames()
    async with websockets.connect(url, max_size=None) as ws:

        async def read() -> None:
            async for message in ws:
                received[0] += len(message)

        reader = asyncio.create_task(read())
        start = time.monotonic()
        count = int(seconds * 1000 / FRAME_MS)
        for index in range(count):
            in_speech = (index * FRAME_MS) % 3000 < 1500
            frame = speech if in_speech else silence
            await ws.send(frame)
            sent[0] += len(frame)
            await asyncio.sleep(max(0.0, start + (index + 1) * FRAME_MS / 1000 - time.monotonic()))
        reader.cancel()


def histogram(metrics_text: str, name: str) -> tuple[list[tuple[float, float]], float]:
    """Cumulative (upper bound, count) buckets summed over labels, and the total count."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    ordered = sorted(buckets.items())
    return ordered, (ordered[-1][1] if ordered else 0.0)


def quantile(buckets: list[tuple[float, float]], total: float, q: float) -> float:
    """Upper bound of the bucket holding the q-quantile (a conservative estimate)."""
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def counter(metrics_text: str, name: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name == name:
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def run(sessions: int, seconds: float, silero: bool) -> dict[str, object]:
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="voxgate-bench-")
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": data_dir,
        "VOXGATE_SERVER__SHARED_TOKEN": TOKEN,
        "VOXGATE_SERVER__CONNECTIONS_PER_MINUTE": "100000",
        "VOXGATE_SERVER__TURNS_PER_MINUTE": "100000",
        **{f"VOXGATE_{cap}__PROVIDER": "standin" for cap in ("VAD", "STT", "LLM", "TTS")},
    }
    if silero:  # the real VAD: what one core of Silero does for this many streams
        env["VOXGATE_VAD__PROVIDER"] = "silero"
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "voxgate", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(200):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            cpu0, rss0 = proc_stats(server.pid)
            sent, received = [0], [0]
            url = f"ws://127.0.0.1:{port}/ws?token={TOKEN}"
            started = time.monotonic()
            clients = [
                asyncio.create_task(device(url, seconds, sent, received)) for _ in range(sessions)
            ]
            await asyncio.sleep(seconds / 2)
            _, rss_open = proc_stats(server.pid)
            await asyncio.gather(*clients)
            wall = time.monotonic() - started
            cpu1, _ = proc_stats(server.pid)
            await asyncio.sleep(0.5)  # let the server count the last frames
            text = (await http.get("/metrics")).text
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    buckets, frames_seen = histogram(text, "voxgate_frame_handle_seconds")
    within_5ms = next((c for b, c in buckets if b >= 0.005), 0.0) / max(1.0, frames_seen)
    bytes_in = counter(text, "voxgate_bytes_in")
    return {
        "vad": "silero" if silero else "standin",
        "sessions": sessions,
        "seconds": seconds,
        "frames_handled": frames_seen,
        "frame_p50_ms_at_most": quantile(buckets, frames_seen, 0.5) * 1000,
        "frame_p99_ms_at_most": quantile(buckets, frames_seen, 0.99) * 1000,
        "frames_within_5ms": round(within_5ms, 5),
        "bytes_sent_by_clients": sent[0],
        "bytes_counted_by_server": bytes_in,
        "frames_lost": round((sent[0] - bytes_in) / (RATE_HZ * FRAME_MS // 1000 * 2)),
        "bytes_received_by_clients": received[0],
        "server_cpu_percent_per_session": round((cpu1 - cpu0) / wall * 100 / sessions, 3),
        "server_cpu_percent_total": round((cpu1 - cpu0) / wall * 100, 1),
        "server_rss_mb_idle": round(rss0, 1),
        "server_rss_mb_per_session": round((rss_open - rss0) / sessions, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--silero", action="store_true", help="the real VAD instead of a stand-in")
    parser.add_argument("--json", type=Path, default=Path("bench/results/server_load.json"))
    args = parser.parse_args()
    results = asyncio.run(run(args.sessions, args.seconds, args.silero))
    for key, value in results.items():
        print(f"{key:34} {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"written to {args.json}")
