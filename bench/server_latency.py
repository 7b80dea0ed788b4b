"""Benchmark: end of speech → first reply audio byte at the device, for each protocol.

Runs the real server (embedded default engines) on loopback in this process, and for each
protocol a client written from its spec sends the same real speech clips at real-time pace. For
each turn it records, at the client, the time from sending the last voiced sample to receiving
the first byte of reply audio, and, from the server, the engine's own figure for that turn
(``speech_end_to_first_audio``). The difference is what the server and the protocol add:
pacing, encoding (Opus for Elato), framing, the socket.

    python -m bench.server_latency [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import websockets

from bench.turn import percentile
from tests.server_harness import serving
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.config import Settings, load_settings
from voxgate.models import ModelStore
from voxgate.pipeline import Engines, load_engines
from voxgate.pipeline.endpointing import Endpointer, EndpointerConfig, TurnEnded
from voxgate.pipeline.engines import warm_up
from voxgate.server.app import create_app
from voxgate.server.context import ServerContext
from voxgate.speech_corpus import librivox_clips
from voxgate.store.devices import DeviceStore

RATE = 16_000
FRAME_MS = 20


async def last_voiced_s(engines: Engines, samples: np.ndarray, settings: Settings) -> float:
    """Where the server's endpointer will put the end of the speech, in seconds from the start:
    the same VAD and the same decisions, run on the clip ahead of time."""
    audio = int16_to_float(np.concatenate([samples, np.zeros(RATE * 3 // 2, dtype=np.int16)]))
    usable = len(audio) // 512 * 512
    stream = engines.vad.new_stream()
    probabilities = await engines.speech_probabilities(stream, audio[:usable].reshape(-1, 512))
    turn = settings.turn
    endpointer = Endpointer(
        EndpointerConfig(
            chunk_ms=32,
            min_speech_ms=turn.min_speech_ms,
            end_of_turn_silence_ms=turn.end_of_turn_silence_ms,
            speculative_start_ms=turn.speculative_start_ms,
            max_utterance_ms=turn.max_utterance_ms,
        )
    )
    last = len(samples) / RATE
    for probability in probabilities:
        for decision in endpointer.feed(float(probability)):
            if isinstance(decision, TurnEnded):
                last = (decision.last_voiced_chunk + 1) * 512 / RATE
    return last


async def send_paced(
    send: Callable[[bytes], Awaitable[None]], samples: np.ndarray, frame: int
) -> float:
    """Send at real-time pace (with 1.5 s of silence after); returns the start time."""
    audio = np.concatenate([samples, np.zeros(RATE * 3 // 2, dtype=np.int16)])
    start = time.monotonic()
    for index, offset in enumerate(range(0, len(audio), frame)):
        await send(audio[offset : offset + frame].astype("<i2").tobytes())
        await asyncio.sleep(max(0.0, start + (index + 1) * frame / RATE - time.monotonic()))
    return start


async def relay_client(address: str, token: str, samples: np.ndarray, end_s: float) -> float:
    uri = f"ws://{address}/v1/relay?token={token}"
    async with websockets.connect(uri, max_size=None) as ws:
        await ws.send(
            json.dumps({"event": "session.start", "seq": 1, "payload": {"greeting": False}})
        )
        while json.loads(await ws.recv())["event"] != "session.ready":
            pass
        first_audio: list[float] = []

        async def read() -> None:
            async for message in ws:
                if isinstance(message, bytes) and not first_audio:
                    first_audio.append(time.monotonic())
                elif isinstance(message, str) and json.loads(message)["event"] == "turn.done":
                    return

        reader = asyncio.create_task(read())
        start = await send_paced(ws.send, samples, RATE * FRAME_MS // 1000)
        await asyncio.wait_for(reader, 60)
        return first_audio[0] - (start + end_s)


async def elato_client(address: str, mac: str, samples: np.ndarray, end_s: float) -> float:
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        token = (await http.get("/api/generate_auth_token", params={"macAddress": mac})).json()[
            "token"
        ]
    headers = {"Authorization": f"Bearer {token}", "X-Device-Mac": mac, "X-Wifi-Rssi": "-50"}
    async with websockets.connect(f"ws://{address}/ws/esp32", additional_headers=headers) as ws:
        greeting_started, packets = 0.0, 0
        while True:  # auth, then the greeting, until RESPONSE.COMPLETE
            message = await ws.recv()
            if isinstance(message, bytes):
                greeting_started = greeting_started or time.monotonic()
                packets += 1
            elif json.loads(message).get("msg") == "RESPONSE.COMPLETE":
                break
        # The firmware plays the greeting out, then listens 1 s after RESPONSE.COMPLETE.
        played_out = greeting_started + packets * 0.12 if packets else time.monotonic()
        await asyncio.sleep(max(0.0, played_out - time.monotonic()) + 1.0)
        first_audio: list[float] = []

        async def read() -> None:
            async for message in ws:
                if isinstance(message, bytes) and not first_audio:
                    first_audio.append(time.monotonic())
                elif isinstance(message, str) and json.loads(message).get("msg") in (
                    "RESPONSE.COMPLETE",
                    "RESPONSE.ERROR",
                ):
                    return

        reader = asyncio.create_task(read())
        start = await send_paced(ws.send, samples, 64)  # the firmware sends ~2 ms pieces
        await asyncio.wait_for(reader, 60)
        return first_audio[0] - (start + end_s)


async def proxy_http_client(address: str, token: str, samples: np.ndarray, end_s: float) -> float:
    chunk = RATE // 10  # 100 ms, as the firmware sends
    headers = {"X-Assistant-Token": token}
    session_id = f"esp32-{int(time.monotonic() * 1e6) & 0xFFFFFFFF:08x}"
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http:
        start = time.monotonic()
        pieces = list(range(0, len(samples), chunk))
        for index, offset in enumerate(pieces):
            body = {
                "session_id": session_id,
                "chunk_index": index,
                "pcm_base64": base64.b64encode(
                    samples[offset : offset + chunk].astype("<i2").tobytes()
                ).decode(),
                "is_final": index == len(pieces) - 1,
            }
            if body["is_final"]:
                await asyncio.sleep(max(0.0, start + (index + 1) * 0.1 - time.monotonic()))
                first_byte = 0.0
                async with http.stream("POST", "/v1/audio", json=body, headers=headers) as response:
                    async for _ in response.aiter_bytes():  # to the end: the turn is then done
                        first_byte = first_byte or time.monotonic()
                if not first_byte:
                    raise RuntimeError("the reply had no audio")
                return first_byte - (start + end_s)
            await http.post("/v1/audio", json=body, headers=headers)
            await asyncio.sleep(max(0.0, start + (index + 1) * 0.1 - time.monotonic()))
    raise RuntimeError("no chunks")


def engine_figures(ctx: ServerContext) -> tuple[float, float]:
    """(sum, count) of the engine's speech_end_to_first_audio observations so far."""
    total = count = 0.0
    for metric in ctx.metrics.stage_seconds.collect():
        for sample in metric.samples:
            if sample.labels.get("stage") != "speech_end_to_first_audio":
                continue
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return total, count


async def main(rounds: int) -> dict[str, object]:
    settings: Settings = load_settings()
    engines = load_engines(settings, ModelStore(settings.models_dir))
    await warm_up(engines, settings.character.system_prompt)
    clips = [SAMPLE_QUESTION, *[clip.path for clip in librivox_clips()[:3]]]
    data = Path(tempfile.mkdtemp(prefix="voxgate-latency-"))
    bench_settings = settings.model_copy(
        update={
            "data_dir": data,
            "server": settings.server.model_copy(
                update={"connections_per_minute": 1000, "turns_per_minute": 1000}
            ),
        }
    )
    devices = DeviceStore(data / "voxgate.db")
    _, token = devices.add("bench")
    devices.add("elato", "AA:BB:CC:00:00:01")
    results: dict[str, object] = {}
    app = create_app(bench_settings, engines=engines, devices=devices)
    async with serving(app) as address:
        ctx: ServerContext = app.state.ctx
        clients: dict[str, Callable[[np.ndarray, float], Awaitable[float]]] = {
            "relay": lambda s, e: relay_client(address, token, s, e),
            "elato": lambda s, e: elato_client(address, "AA:BB:CC:00:00:01", s, e),
            "assistant_proxy_http": lambda s, e: proxy_http_client(address, token, s, e),
        }
        for name, client in clients.items():
            at_client: list[float] = []
            at_engine: list[float] = []
            for _ in range(rounds):
                for path in clips:
                    samples, rate = read_wav(path)
                    samples = resample(samples, rate, RATE)
                    end_s = await last_voiced_s(engines, samples, settings)
                    before = engine_figures(ctx)
                    seconds = await client(samples, end_s)
                    after = engine_figures(ctx)
                    if after[1] > before[1]:
                        at_client.append(seconds * 1000)
                        at_engine.append((after[0] - before[0]) / (after[1] - before[1]) * 1000)
            added = [c - e for c, e in zip(at_client, at_engine, strict=True)]
            results[name] = {
                "turns": len(at_client),
                "client_median_ms": round(statistics.median(at_client), 1),
                "client_p95_ms": round(percentile(at_client, 95), 1),
                "engine_median_ms": round(statistics.median(at_engine), 1),
                "server_adds_median_ms": round(statistics.median(added), 1),
                "server_adds_p95_ms": round(percentile(added, 95), 1),
                "raw_client_ms": [round(v, 1) for v in at_client],
                "raw_engine_ms": [round(v, 1) for v in at_engine],
            }
            print(name, results[name], flush=True)
    devices.close()
    engines.close()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("bench/results/server_latency.json"))
    args = parser.parse_args()
    results = asyncio.run(main(args.rounds))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"written to {args.json}")
