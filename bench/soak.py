"""Soak: many sessions for a long time against one server with stand-in engines; does memory or
the number of open descriptors grow?

Starts ``voxgate serve`` in its own process with the ``standin`` engines and keeps ``--sessions``
clients talking for ``--minutes``: relay, ElatoAI and voice-assistant-proxy ``/ws`` clients in
turn, each streaming speech-like PCM at real-time pace (1.5 s of tone, 1.5 s of silence, so turns
keep happening), reading every reply, and reconnecting after 30-90 s so sessions come and go.
Every ``--every`` seconds it samples the server's RSS and open file descriptors. Reported: the
samples, and the growth from the warmed-up start (the mean of the samples in the second and third
minute) to the end (the mean of the last three); "flat" means within ``--tolerance`` (5%).

    python -m bench.soak [--sessions 200] [--minutes 10] [--every 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.server_load import counter, frames, free_port

TOKEN = "soak-shared-token"
"""The firmware's shared token: /ws."""
ADMIN = "soak-admin-token"
"""The relay takes no shared token: its clients talk as the web page does, with the admin token."""
MAC = "02:50:AC:00:00:01"
FRAME_S = 0.1


def sample(pid: int) -> tuple[float, int]:
    """(RSS in MB, open file descriptors) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


class Client:
    def __init__(self, index: int, base: str, elato_token: str, deadline: float) -> None:
        self.kind = ("relay", "elato", "proxy_ws")[index % 3]
        self.rng = random.Random(index)
        self.deadline = deadline
        ws = base.replace("http://", "ws://")
        self.url, self.headers = {
            "relay": (f"{ws}/v1/relay", {"Authorization": f"Bearer {ADMIN}"}),
            "elato": (
                f"{ws}/ws/esp32",
                {
                    "Authorization": f"Bearer {elato_token}",
                    "X-Device-Mac": MAC,
                    "X-Wifi-Rssi": "-50",
                },
            ),
            "proxy_ws": (f"{ws}/ws", {"X-Assistant-Token": TOKEN}),
        }[self.kind]

    async def run(self, tally: Counter[str]) -> None:
        speech, silence = frames()
        await asyncio.sleep(self.rng.uniform(0, 10))  # do not all connect at once
        while time.monotonic() < self.deadline:
            ends = min(self.deadline, time.monotonic() + self.rng.uniform(30, 90))
            try:
                await self._session(speech, silence, ends, tally)
                tally[f"{self.kind} sessions"] += 1
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
                tally[f"{self.kind} failed: {type(exc).__name__}"] += 1
                await asyncio.sleep(1)

    async def _session(
        self, speech: bytes, silence: bytes, ends: float, tally: Counter[str]
    ) -> None:
        async with websockets.connect(
            self.url,
            additional_headers=self.headers,
            max_size=None,
            open_timeout=30,
            ping_interval=None,
        ) as ws:
            if self.kind == "relay":
                start = {"event": "session.start", "seq": 1, "payload": {"greeting": False}}
                await ws.send(json.dumps(start))

            async def read() -> None:
                async for message in ws:
                    if isinstance(message, bytes):
                        tally["bytes received"] += len(message)
                    elif '"turn.done"' in message or "RESPONSE.COMPLETE" in message:
                        tally["replies"] += 1

            reader = asyncio.create_task(read())
            started, index = time.monotonic(), 0
            while time.monotonic() < ends and not reader.done():
                in_speech = (index * FRAME_S) % 3.0 < 1.5
                await ws.send(speech if in_speech else silence)
                index += 1
                await asyncio.sleep(max(0.0, started + index * FRAME_S - time.monotonic()))
            await ws.close()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def run(sessions: int, minutes: float, every_s: float) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": tempfile.mkdtemp(prefix="voxgate-soak-"),
        "VOXGATE_SERVER__SHARED_TOKEN": TOKEN,
        "VOXGATE_SERVER__ADMIN_TOKEN": ADMIN,
        # 200 sessions as three "devices" (the page, the Elato device, the shared token from one
        # address): the per-device cap is not what is soaked.
        "VOXGATE_SERVER__MAX_SESSIONS_PER_DEVICE": "1000",
        "VOXGATE_SERVER__AUTO_REGISTER_DEVICES": "true",
        "VOXGATE_SERVER__CONNECTIONS_PER_MINUTE": "1000000",
        "VOXGATE_SERVER__TURNS_PER_MINUTE": "1000000",
        **{f"VOXGATE_{cap}__PROVIDER": "standin" for cap in ("VAD", "STT", "LLM", "TTS")},
    }
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "voxgate", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    samples: list[dict[str, float]] = []
    tally: Counter[str] = Counter()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(300):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            token = (await http.get("/api/generate_auth_token", params={"macAddress": MAC})).json()[
                "token"
            ]
            started = time.monotonic()
            deadline = started + minutes * 60
            clients = [
                asyncio.create_task(Client(i, base, token, deadline).run(tally))
                for i in range(sessions)
            ]
            # The last sample comes before the clients leave (they all stop at the deadline).
            while time.monotonic() + every_s < deadline + 0.5:
                await asyncio.sleep(every_s)
                rss_mb, fds = sample(server.pid)
                open_sessions = (await http.get("/healthz")).json()["sessions"]
                samples.append(
                    {
                        "t_s": round(time.monotonic() - started),
                        "rss_mb": round(rss_mb, 1),
                        "fds": fds,
                        "sessions": open_sessions,
                    }
                )
                print(json.dumps(samples[-1]), flush=True)
            await asyncio.gather(*clients)
            metrics = (await http.get("/metrics")).text
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 60)
    return summary(samples, tally, metrics, sessions, minutes, every_s)


def summary(
    samples: list[dict[str, float]],
    tally: Counter[str],
    metrics: str,
    sessions: int,
    minutes: float,
    every_s: float,
) -> dict[str, Any]:
    warm = [s for s in samples if 60 <= s["t_s"] < 180] or samples[:3]
    end = samples[-3:]

    def growth(key: str) -> float:
        before = statistics.mean(s[key] for s in warm)
        after = statistics.mean(s[key] for s in end)
        return round((after - before) / before * 100, 2)

    return {
        "sessions": sessions,
        "minutes": minutes,
        "sample_every_s": every_s,
        "rss_mb_warm": round(statistics.mean(s["rss_mb"] for s in warm), 1),
        "rss_mb_end": round(statistics.mean(s["rss_mb"] for s in end), 1),
        "rss_growth_percent": growth("rss_mb"),
        "rss_mb_max": max(s["rss_mb"] for s in samples),
        "fds_warm": round(statistics.mean(s["fds"] for s in warm), 1),
        "fds_end": round(statistics.mean(s["fds"] for s in end), 1),
        "fds_growth_percent": growth("fds"),
        "fds_max": max(s["fds"] for s in samples),
        "sessions_open_min_after_warmup": min(s["sessions"] for s in samples if s["t_s"] >= 60),
        "turns": counter(metrics, "voxgate_turns"),
        "client_tally": dict(sorted(tally.items())),
        "samples": samples,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=10, help="seconds between samples")
    parser.add_argument("--tolerance", type=float, default=5.0, help="percent")
    parser.add_argument("--json", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args.sessions, args.minutes, args.every))
    for key, value in result.items():
        if key != "samples":
            print(f"{key:32} {value}")
    flat = all(
        abs(result[k]) <= args.tolerance for k in ("rss_growth_percent", "fds_growth_percent")
    )
    print(f"flat within {args.tolerance}%: {'yes' if flat else 'NO'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"written to {args.json}")
    sys.exit(0 if flat else 1)
