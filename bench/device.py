"""Benchmark: what a device sees — end of the user's speech → first reply audio at the device.

A real ``voxgate serve`` subprocess (the embedded default engines, or ``--engines standin``; the
embedded SQLite store in a fresh data directory that reuses the prepared models), devices
registered through the admin API (one device, so one token and one history, per conversation),
and for each protocol a client written from its spec (bench/device_clients.py: relay, ElatoAI
with Opus, voice-assistant-proxy ``/ws``; bench/xiaozhi_client.py: a xiaozhi-esp32 board, OTA then
Opus both ways; and on request the proxy's hold-to-talk ``POST /v1/audio``)
holding multi-turn conversations: real speech streamed at real-time pace, the next question asked
only after the reply has played out.

The speech is not the tests' tuning set: short conversations spoken by Debian's ``flite`` voices
slt, rms and awb, built at bench time (bench/conversations.py). The end of the user's speech is
found by the client from the clip itself (bench/voicing.py), not by the server's VAD.

Reported per protocol and per turn index: p50/p95 of end of speech → first reply audio byte at
the device; the server's own per-stage timings for the same turns (``messages.timings`` via
``/api/admin/conversations``); the delay of the server's end-of-turn signal at the device
(ElatoAI ``AUDIO.COMMITTED``, relay ``speech.stopped``, ``/ws`` ``speech_end``, xiaozhi ``stt``); and what the
device sees beyond the server's own figure (the server times from its VAD's end of speech).

    python -m bench.device                      # full: 3 conversations x 6 turns x 4 protocols
    python -m bench.device --conversations 1    # short (~3 minutes)
    python -m bench.device --engines standin --protocols relay,proxy_http --turns 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from bench.conversations import SCRIPTS, SPEECH_SOURCE, Script, Utterance, build
from bench.device_clients import (
    Device,
    ElatoDevice,
    ProxyHttpDevice,
    ProxyWsDevice,
    RelayDevice,
    TurnRecord,
)
from bench.device_report import render, summarise
from bench.harness import STANDIN_ENGINES, voxgate_serve
from bench.xiaozhi_client import XiaozhiDevice
from voxgate.core.config import load_settings

PROTOCOLS = ("relay", "elato", "proxy_ws", "xiaozhi", "proxy_http")
DEFAULT_PROTOCOLS = PROTOCOLS[:4]
"""``proxy_http`` (hold-to-talk: the device ends the turn) on request: the full run stays
within ten minutes."""


class Server:
    """The running server as the bench uses it: devices in, stored timings out."""

    def __init__(self, address: str, admin_token: str) -> None:
        self.address = address
        self._http = httpx.AsyncClient(
            base_url=f"http://{address}",
            headers={"Authorization": f"Bearer {admin_token}"},
            trust_env=False,
            timeout=30,
        )

    async def add_device(self, name: str, mac: str | None = None) -> str:
        body: dict[str, str] = {"name": name} | ({"mac": mac} if mac else {})
        response = await self._http.post("/api/admin/devices", json=body)
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    async def answered_turns(self, device: str) -> list[dict[str, Any]]:
        """The device's spoken turns as stored (not greetings), in order: what the server heard,
        what it answered, and its timings."""
        response = await self._http.get("/api/admin/conversations", params={"device": device})
        response.raise_for_status()
        turns: list[dict[str, Any]] = []
        for conversation in sorted(response.json()["conversations"], key=lambda c: c["started_at"]):
            detail = await self._http.get(f"/api/admin/conversations/{conversation['id']}")
            detail.raise_for_status()
            messages = sorted(detail.json()["messages"], key=lambda m: m["turn_id"])
            heard = {m["turn_id"]: m["text"] for m in messages if m["role"] == "user"}
            for message in messages:
                stages = message["timings"]
                if message["role"] == "assistant" and stages and stages.get("stt_ms") is not None:
                    turns.append(
                        {
                            "heard": heard.get(message["turn_id"]),
                            "reply_text": message["heard_text"] or message["text"],
                            "interrupted": message["interrupted"],
                            "timings": stages,
                        }
                    )
        return turns

    async def close(self) -> None:
        await self._http.aclose()


def make_device(protocol: str, server: Server, token: str, mac: str) -> Device:
    if protocol == "relay":
        return RelayDevice(server.address, token)
    if protocol == "elato":
        return ElatoDevice(server.address, mac)
    if protocol == "xiaozhi":
        return XiaozhiDevice(server.address, mac)
    if protocol == "proxy_http":
        return ProxyHttpDevice(server.address, token, f"esp32-{secrets.randbits(32):08x}")
    return ProxyWsDevice(server.address, token)


async def converse(
    server: Server, protocol: str, number: int, script: Script, speech: list[Utterance]
) -> dict[str, Any]:
    name = f"bench-{protocol}-{number}-{script.name}"
    mac = f"02:00:00:00:{number:02X}:{PROTOCOLS.index(protocol):02X}"
    token = await server.add_device(name, mac if protocol in ("elato", "xiaozhi") else None)
    device = make_device(protocol, server, token, mac)
    records: list[TurnRecord] = []
    await device.open()
    try:
        for index, utterance in enumerate(speech, start=1):
            record = await device.turn(TurnRecord(index, utterance.text), utterance)
            records.append(record)
            _progress(protocol, script, record)
            if device.closed:
                break
        # The last reply plays out before the device hangs up.
        await asyncio.sleep(max(0.0, records[-1].played_out_t - time.monotonic()))
    finally:
        await device.close()
    await asyncio.sleep(0.5)  # the store writes the last turn after the reply
    stored = await server.answered_turns(name)
    matched = len(stored) == len(records)
    turns = []
    for position, record in enumerate(records):
        server_turn = stored[position] if matched else {}
        row: dict[str, Any] = {
            "protocol": protocol,
            "conversation": script.name,
            "voice": script.voice,
            "turn": record.index,
            "asked": record.text,
            "heard": server_turn.get("heard"),
            "reply_text": server_turn.get("reply_text"),
            "interrupted": server_turn.get("interrupted"),
            "first_audio_ms": _round(record.first_audio_ms()),
            "turn_end_signal_ms": _round(record.turn_end_signal_ms()),
            "reply_audio_s": round(record.reply_audio_s, 2),
            "errors": record.errors,
            "server_timings": server_turn.get("timings"),
        }
        turns.append(row)
    return {
        "device": name,
        "protocol": protocol,
        "script": script.name,
        "server_turns": len(stored),
        "turns": turns,
    }


def _progress(protocol: str, script: Script, record: TurnRecord) -> None:
    first = record.first_audio_ms()
    shown = f"{first:7.0f} ms" if first is not None else "   none"
    heard = f" heard {record.heard!r}" if record.heard is not None else ""
    errors = f" errors {record.errors}" if record.errors else ""
    print(f"  {protocol:8} {script.name:7} turn {record.index}: {shown}{heard}{errors}", flush=True)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def server_env(engines: str, admin_token: str) -> dict[str, str]:
    env = {
        "VOXGATE_SERVER__ADMIN_TOKEN": admin_token,
        "VOXGATE_SERVER__JWT_SECRET": secrets.token_hex(32),
        "VOXGATE_SERVER__CONNECTIONS_PER_MINUTE": "1000",
        "VOXGATE_SERVER__TURNS_PER_MINUTE": "1000",
    }
    return env | (STANDIN_ENGINES if engines == "standin" else {})


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="voxgate-device-bench-"))
    if args.engines == "embedded":
        # The prepared models are reused, not copied: the data directory is otherwise fresh.
        (data_dir / "models").symlink_to(load_settings().models_dir, target_is_directory=True)
    scripts = SCRIPTS[: args.conversations]
    speech = {script.name: build(script, data_dir / "speech", args.turns) for script in scripts}
    admin_token = secrets.token_urlsafe(24)
    conversations: list[dict[str, Any]] = []
    started = time.monotonic()
    async with voxgate_serve(data_dir, server_env(args.engines, admin_token)) as address:
        print(f"voxgate serve ready at {address} ({time.monotonic() - started:.0f} s)", flush=True)
        server = Server(address, admin_token)
        try:
            # Protocols take turns within each conversation script, so a slow spell of a shared
            # machine does not land on one protocol only.
            for number, script in enumerate(scripts, start=1):
                for protocol in args.protocols:
                    conversations.append(
                        await converse(server, protocol, number, script, speech[script.name])
                    )
        finally:
            await server.close()
    return {
        "command": args.command_line,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "engines": args.engines,
        "speech": SPEECH_SOURCE,
        "cpus": os.cpu_count(),
        "data_dir": str(data_dir),
        "wall_s": round(time.monotonic() - started, 1),
        "summary": summarise(conversations),
        "conversations": conversations,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.device",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conversations", type=int, default=len(SCRIPTS), choices=range(1, 4))
    parser.add_argument("--turns", type=int, default=6, choices=range(1, 7))
    parser.add_argument(
        "--protocols", default=",".join(DEFAULT_PROTOCOLS), help=f"comma-separated, of {PROTOCOLS}"
    )
    parser.add_argument("--engines", choices=("embedded", "standin"), default="embedded")
    parser.add_argument("--json", type=Path, default=None, help="default: bench/results/device-…")
    args = parser.parse_args(argv)
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = set(args.protocols) - set(PROTOCOLS)
    if unknown or not args.protocols:
        parser.error(f"--protocols: unknown {sorted(unknown)}; choose from {PROTOCOLS}")
    args.command_line = shlex.join(["python", "-m", "bench.device", *argv])
    if args.json is None:
        stamp = time.strftime("%Y-%m-%d-%H%M%S")
        args.json = Path("bench/results") / f"device-{args.engines}-{stamp}.json"
    return args


def main(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    print(f"$ {args.command_line}", flush=True)
    print(f"speech: {SPEECH_SOURCE}", flush=True)
    results = asyncio.run(run(args))
    print(render(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=asdict))
    print(f"written to {args.json}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
