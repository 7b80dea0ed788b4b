"""Fuzzer: generated frames for every device protocol, against a running server.

Starts ``voxgate serve`` in its own process with the ``standin`` engines, then for each protocol
sends ``--frames`` generated messages over real sockets: valid messages with corrupted bodies
(fields of the wrong type, huge numbers, lone surrogates, deep nesting, truncations, flipped
bytes), random JSON, random text and random binary. A connection the server closes is opened
again. It counts what would be a server bug: the process dying (a crash), tracebacks in its log
(unhandled exceptions), WebSocket closes with 1011 and HTTP 500s; and checks ``/healthz`` after
each protocol. Exit status 1 if any.

    python -m bench.fuzz [--frames 100000] [--seed 1] [--protocols relay,elato,proxy_ws,xiaozhi,proxy_http]

Every protocol's frames come from one ``random.Random(seed)``: a failure is reproducible.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.server_load import free_port

TOKEN = "fuzz-shared-token"
"""The firmware's shared token: /v1/audio and /ws."""
ADMIN = "fuzz-admin-token"
"""The relay takes no shared token: it talks as the web page does, with the admin token."""
MAC = "02:F0:22:00:00:01"
BURST = 250
"""Frames per connection before it is closed and a new one opened."""
XIAOZHI_MAC = "02:F0:22:00:00:02"
PROTOCOLS = ("relay", "elato", "proxy_ws", "xiaozhi", "proxy_http")
_BUG_MARKERS = ("Traceback (most recent call last)", "Exception in ASGI application")


@dataclass
class Tally:
    frames: int = 0
    connections: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def internal_errors(self) -> int:
        return self.closes["1011"] + self.statuses[500]

    @property
    def dropped(self) -> int:
        """Connections the server cut without a close frame: a bug, unless we closed first."""
        return self.closes["no close frame"]


# -- generated values --------------------------------------------------------------------------


def random_scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            rng.randint(-(2**63), 2**63),
            10 ** rng.randint(20, 400),  # beyond any float or C integer
            -(10 ** rng.randint(20, 400)),
            rng.uniform(-1e9, 1e9),
            1e308,
            "",
            "x" * rng.randint(1, 5000),
            "\ud800",  # a lone surrogate (json.dumps writes it as \\ud800)
            "nul\x00byte",
            "".join(_char(rng, 0x2FFFF) for _ in range(rng.randint(1, 40))),
        ]
    )


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.random()
    if depth > 4 or kind < 0.5:
        return random_scalar(rng)
    if kind < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    keys = ["event", "seq", "payload", "type", "msg", "text", rng.choice(["a", "é", "\u0000", ""])]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def corrupt_value(rng: random.Random, message: Any) -> Any:
    """``message`` with one value somewhere in it replaced by a random one."""
    if isinstance(message, dict) and message:
        key = rng.choice(list(message))
        if rng.random() < 0.5 and isinstance(message[key], dict | list):
            return {**message, key: corrupt_value(rng, message[key])}
        return {**message, key: random_json(rng)}
    if isinstance(message, list) and message:
        index = rng.randrange(len(message))
        return [*message[:index], random_json(rng), *message[index + 1 :]]
    return random_json(rng)


def _char(rng: random.Random, high: int = 0x10FFFF) -> str:
    """A random character a text frame can carry (UTF-8 has no surrogates)."""
    code = rng.randint(0, high)
    return "?" if 0xD800 <= code <= 0xDFFF else chr(code)


def mangle_text(rng: random.Random, text: str) -> str:
    match rng.randrange(4):
        case 0:
            return text[: rng.randrange(max(1, len(text)))]  # truncated
        case 1:
            chars = list(text)
            for _ in range(rng.randint(1, 4)):
                chars[rng.randrange(len(chars))] = _char(rng, 0xFFFF)
            return "".join(chars)
        case 2:
            return "[" * rng.randint(100, 5000) + "]" * rng.randint(0, 5000)  # deep nesting
        case _:
            return text + "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 30)))


def random_binary(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 2, 3, 63, 64, 320, 641, 3200, rng.randint(0, 70_000)])
    return rng.randbytes(size)


def pick_frame(rng: random.Random, templates: list[Any]) -> str | bytes:
    """One fuzzed frame: a valid message with a corrupted body, mangled text, random JSON,
    random text or random binary."""
    roll = rng.random()
    if roll < 0.45:
        return json.dumps(corrupt_value(rng, rng.choice(templates)))
    if roll < 0.6:
        return mangle_text(rng, json.dumps(rng.choice(templates)))
    if roll < 0.75:
        return json.dumps(random_json(rng))
    if roll < 0.8:
        return (
            "".join(chr(rng.randint(1, 0x10FFFF)) for _ in range(rng.randint(0, 200)))
            .encode("utf-8", "replace")
            .decode("utf-8", "replace")
        )
    return random_binary(rng)


# -- the protocols ---------------------------------------------------------------------------------


def relay_templates(seq: int) -> list[Any]:
    return [
        {"event": "text.input", "seq": seq, "payload": {"text": "hello"}},
        {"event": "input.commit", "seq": seq, "payload": {}},
        {"event": "reply.interrupt", "seq": seq},
        {"event": "playback.position", "seq": seq, "payload": {"turn_id": 1, "played_ms": 10}},
        {
            "event": "session.start",
            "seq": seq,
            "payload": {
                "input": {"sample_rate_hz": 16000},
                "output": {"sample_rate_hz": 24000},
                "turn_detection": "server_vad",
                "character": {"id": "toy", "system_prompt": "x"},
                "greeting": False,
            },
        },
    ]


ELATO_TEMPLATES: list[Any] = [
    {"type": "instruction", "msg": "end_of_speech"},
    {"type": "instruction", "msg": "INTERRUPT", "audio_end_ms": 100},
    {"type": "instruction", "msg": "END_SESSION"},
]
XIAOZHI_HELLO: dict[str, Any] = {
    "type": "hello",
    "version": 1,
    "features": {"mcp": True},
    "transport": "websocket",
    "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
}
XIAOZHI_TEMPLATES: list[Any] = [
    {"session_id": "s", "type": "listen", "state": "start", "mode": "auto"},
    {"session_id": "s", "type": "listen", "state": "stop"},
    {"session_id": "s", "type": "listen", "state": "detect", "text": "hello"},
    {"session_id": "s", "type": "abort", "reason": "wake_word_detected"},
    {"session_id": "s", "type": "mcp", "payload": {"jsonrpc": "2.0", "id": 2, "result": {}}},
    {"type": "ping"},
    XIAOZHI_HELLO,
]
PROXY_TEMPLATES: list[Any] = [
    {"type": "audio", "data": "AAAA"},
    {"session_id": "s", "chunk_index": 0, "pcm_base64": "AAAA", "is_final": False},
]


async def _drain(ws: Any, tally: Tally) -> None:
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    # What the server said when it closed (or that it said nothing: a dropped connection).
    received = ws.protocol.close_rcvd
    tally.closes[str(received.code) if received is not None else "no close frame"] += 1


async def _burst(
    rng: random.Random,
    url: str,
    headers: dict[str, str],
    frames: int,
    tally: Tally,
    first: Callable[[Any], Any] | None,
    templates: Callable[[int], list[Any]],
) -> None:
    """One connection: its opening message (if any), then up to ``frames`` fuzzed frames."""
    try:
        async with websockets.connect(
            url, additional_headers=headers, max_size=None, open_timeout=20, ping_interval=None
        ) as ws:
            tally.connections += 1
            if first is not None:
                await first(ws)
            drain = asyncio.create_task(_drain(ws, tally))
            for seq in range(2, frames + 2):
                if ws.close_code is not None:
                    break
                frame = pick_frame(rng, templates(seq))
                try:
                    await ws.send(frame)
                except ConnectionClosed:
                    break
                tally.frames += 1
            await ws.close()
            await asyncio.wait_for(drain, 20)
    except InvalidStatus as refused:
        tally.statuses[refused.response.status_code] += 1
    except ConnectionClosed as closed:  # before the fuzzing started (the opening message)
        tally.closes[str(closed.rcvd.code) if closed.rcvd else "no close frame"] += 1
    except (OSError, TimeoutError) as exc:
        tally.closes[f"connect failed: {type(exc).__name__}"] += 1


async def fuzz_websocket(
    rng: random.Random,
    url: str,
    headers: dict[str, str],
    total: int,
    tally: Tally,
    first: Callable[[Any], Any] | None,
    templates: Callable[[int], list[Any]],
    parallel: int = 4,
) -> None:
    while tally.frames < total:
        await asyncio.gather(
            *(
                _burst(random.Random(rng.random()), url, headers, BURST, tally, first, templates)
                for _ in range(parallel)
            )
        )


class RawHttp:
    """A bare HTTP/1.1 keep-alive client: httpx costs as much CPU per request as the server
    spends answering it, which on a small machine halves the requests one can send."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
            f"{head}\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionResetError("the server closed the connection")
        fields: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip().lower()
        if "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding") == "chunked":
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readline()
        if fields.get("connection") == "close":
            await self.close()
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def fuzz_http(
    base: str, rng: random.Random, total: int, tally: Tally, parallel: int = 32
) -> None:
    """POST /v1/audio bodies. Final chunks of real sessions get a reply streamed at the pace of
    speech, so many requests run at once and few chunks are final."""
    host, port = base.removeprefix("http://").split(":")

    async def worker(seed: float) -> None:
        local = random.Random(seed)
        http = RawHttp(host, int(port))
        try:
            while tally.frames < total:
                tally.frames += 1
                frame = pick_frame(local, PROXY_TEMPLATES)
                body = frame if isinstance(frame, bytes) else frame.encode()
                if local.random() < 0.2:  # a valid chunk now and then: sessions to confuse
                    pcm = base64.b64encode(local.randbytes(local.choice([0, 3, 320]))).decode()
                    chunk = {
                        "session_id": f"s{local.randrange(64)}",
                        "chunk_index": local.randrange(4),
                        "pcm_base64": pcm,
                        "is_final": local.random() < 0.02,
                    }
                    body = json.dumps(chunk).encode()
                headers = {"X-Assistant-Token": TOKEN, "Content-Type": "application/json"}
                try:
                    tally.statuses[await http.post("/v1/audio", body, headers)] += 1
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    tally.closes[f"http connection lost: {type(exc).__name__}"] += 1
                    await http.close()
        finally:
            await http.close()

    await asyncio.gather(*(worker(rng.random()) for _ in range(parallel)))


# -- the server ------------------------------------------------------------------------------------


@asynccontextmanager
async def voxgate_server(log: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = free_port()
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": tempfile.mkdtemp(prefix="voxgate-fuzz-"),
        "VOXGATE_SERVER__SHARED_TOKEN": TOKEN,
        "VOXGATE_SERVER__ADMIN_TOKEN": ADMIN,
        "VOXGATE_SERVER__AUTO_REGISTER_DEVICES": "true",
        "VOXGATE_SERVER__CONNECTIONS_PER_MINUTE": "1000000",
        "VOXGATE_SERVER__TURNS_PER_MINUTE": "1000000",
        "VOXGATE_SERVER__TOKEN_REQUESTS_PER_MINUTE": "1000",
        **{f"VOXGATE_{cap}__PROVIDER": "standin" for cap in ("VAD", "STT", "LLM", "TTS")},
    }
    with log.open("w") as sink:
        server = await asyncio.create_subprocess_exec(
            *[
                sys.executable,
                "-m",
                "voxgate",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=sink,
            stderr=sink,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(300):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the server did not start; see {log}")
        yield base, server
    finally:
        if server.returncode is None:
            server.terminate()
            await asyncio.wait_for(server.wait(), 60)


async def run(frames: int, seed: int, protocols: list[str], log: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"frames_per_protocol": frames, "seed": seed}
    async with voxgate_server(log) as (base, server):
        ws_base = base.replace("http://", "ws://")
        async with httpx.AsyncClient(base_url=base) as http:
            token = (await http.get("/api/generate_auth_token", params={"macAddress": MAC})).json()[
                "token"
            ]

            ota = await http.post("/xiaozhi/ota/", json={}, headers={"Device-Id": XIAOZHI_MAC})
            xiaozhi_token = ota.json()["websocket"]["token"]

        async def xiaozhi_hello(ws: Any) -> None:
            await ws.send(json.dumps(XIAOZHI_HELLO))
            await asyncio.wait_for(ws.recv(), 20)  # the server's hello
            await ws.send(json.dumps(XIAOZHI_TEMPLATES[0]))

        async def relay_start(ws: Any) -> None:
            await ws.send(
                json.dumps({"event": "session.start", "seq": 1, "payload": {"greeting": False}})
            )

        async def elato_auth(ws: Any) -> None:
            await asyncio.wait_for(ws.recv(), 20)  # the auth message

        plans = {
            "relay": (
                f"{ws_base}/v1/relay",
                {"Authorization": f"Bearer {ADMIN}"},
                relay_start,
                relay_templates,
            ),
            "elato": (
                f"{ws_base}/ws/esp32",
                {"Authorization": f"Bearer {token}", "X-Device-Mac": MAC, "X-Wifi-Rssi": "-50"},
                elato_auth,
                lambda _: ELATO_TEMPLATES,
            ),
            "xiaozhi": (
                f"{ws_base}/xiaozhi/v1/",
                {"Authorization": f"Bearer {xiaozhi_token}", "Device-Id": XIAOZHI_MAC},
                xiaozhi_hello,
                lambda _: XIAOZHI_TEMPLATES,
            ),
            "proxy_ws": (
                f"{ws_base}/ws",
                {"X-Assistant-Token": TOKEN},
                None,
                lambda _: PROXY_TEMPLATES,
            ),
        }
        rng = random.Random(seed)
        for name in protocols:
            tally = Tally()
            started = time.monotonic()
            if name == "proxy_http":
                await fuzz_http(base, rng, frames, tally)
            else:
                url, headers, first, templates = plans[name]
                await fuzz_websocket(rng, url, headers, frames, tally, first, templates)
            seconds = time.monotonic() - started
            alive = server.returncode is None
            healthy = False
            if alive:
                async with httpx.AsyncClient(base_url=base) as http:
                    healthy = (await http.get("/healthz")).status_code == 200
            results[name] = {
                "frames": tally.frames,
                "seconds": round(seconds, 1),
                "frames_per_s": round(tally.frames / seconds),
                "connections": tally.connections,
                "close_codes": dict(sorted(tally.closes.items())),
                "http_statuses": dict(sorted(tally.statuses.items())),
                "internal_errors": tally.internal_errors,
                "dropped_without_close_frame": tally.dropped,
                "server_alive": alive,
                "healthz_ok": healthy,
            }
            print(name, json.dumps(results[name]), flush=True)
            if not alive:
                break
    text = await asyncio.to_thread(log.read_text, errors="replace")
    results["unhandled_exceptions"] = sum(text.count(marker) for marker in _BUG_MARKERS)
    results["crashes"] = sum(
        1 for name in protocols if not results.get(name, {}).get("server_alive", False)
    )
    return results


def failed(results: dict[str, Any], protocols: list[str]) -> bool:
    return bool(
        results["unhandled_exceptions"]
        or results["crashes"]
        or any(
            results[name]["internal_errors"] or not results[name]["healthz_ok"]
            for name in protocols
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100_000, help="per protocol")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument(
        "--log", type=Path, default=Path(tempfile.gettempdir()) / "voxgate-fuzz.log"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    chosen = [name for name in args.protocols.split(",") if name]
    unknown = sorted(set(chosen) - set(PROTOCOLS))
    if unknown:
        parser.error(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
    outcome = asyncio.run(run(args.frames, args.seed, chosen, args.log))
    print(f"unhandled exceptions in the server log: {outcome['unhandled_exceptions']} ({args.log})")
    print(f"crashes: {outcome['crashes']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(outcome, indent=2))
    sys.exit(1 if failed(outcome, chosen) else 0)
