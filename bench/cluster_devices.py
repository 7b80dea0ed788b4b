"""Devices of every protocol talking through the balancer of a running cluster
(bench/cluster_harness.py) while a replica is killed: what each saw, and what the database kept
of it. The cluster test asserts on it; bench/cluster.py prints it."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from bench.cluster_harness import Cluster
from bench.conversations import RATE_HZ, Utterance
from bench.device_clients import (
    TURN_TIMEOUT_S,
    Device,
    ElatoDevice,
    ProxyHttpDevice,
    ProxyWsDevice,
    RelayDevice,
    TurnRecord,
)

PROTOCOLS = ("relay", "elato", "proxy_ws", "proxy_http")
STRICT = frozenset({"relay", "elato", "proxy_http"})
"""Protocols whose "turn complete" at the device comes after the turn is written (relay
``turn.done``, ElatoAI ``RESPONSE.COMPLETE``, the end of the HTTP reply body). ``/ws`` has no
end-of-reply message: the device only hears the audio stop."""


def spoken_tone(seconds: float = 1.0) -> Utterance:
    """Loud enough for the stand-in VAD (what it calls speech), then the device's silence."""
    t = np.arange(round(seconds * RATE_HZ)) / RATE_HZ
    samples = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return Utterance("(a tone)", samples, len(samples))


class Admin:
    def __init__(self, address: str, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=f"http://{address}",
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
            timeout=30,
        )

    async def add_device(self, name: str, mac: str | None = None) -> tuple[int, str]:
        body: dict[str, str] = {"name": name} | ({"mac": mac} if mac else {})
        response = await self.http.post("/api/admin/devices", json=body)
        response.raise_for_status()
        data = response.json()
        return int(data["device"]["id"]), str(data["token"])

    async def stored(self, name: str) -> tuple[int, int]:
        """The device's conversations, and its answered (spoken, not greeting) turns."""
        response = await self.http.get("/api/admin/conversations", params={"device": name})
        response.raise_for_status()
        conversations = response.json()["conversations"]
        turns = 0
        for conversation in conversations:
            detail = await self.http.get(f"/api/admin/conversations/{conversation['id']}")
            detail.raise_for_status()
            turns += sum(
                1
                for message in detail.json()["messages"]
                if message["role"] == "assistant"
                and (message["timings"] or {}).get("stt_ms") is not None
            )
        return len(conversations), turns

    async def close(self) -> None:
        await self.http.aclose()


class LightElato(ElatoDevice):
    """ElatoAI's firmware sends 64-byte frames; here 20 ms a message, to spare the one client
    process playing sixty devices (the server takes any size)."""

    frame_samples = 320
    frames_per_send = 1


# -- devices through the balancer, a replica killed ---------------------------------------------


@dataclass
class DeviceRun:
    name: str
    protocol: str
    token: str
    mac: str
    session_id: str
    completed: int = 0
    failed: int = 0
    disconnects: int = 0
    reconnect_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lost_at: float | None = None
    stored_conversations: int = 0
    stored_turns: int = 0
    elato_token: str | None = None
    """ElatoAI: the token fetched while pairing, kept for reconnects (as the firmware does)."""
    step: str = ""
    """What it is doing now (for a run that does not end in time)."""

    def make(self, address: str) -> Device:
        if self.protocol == "relay":
            return RelayDevice(address, self.token)
        if self.protocol == "elato":
            return LightElato(address, self.mac, self.elato_token)
        if self.protocol == "proxy_http":
            return ProxyHttpDevice(address, self.token, self.session_id)
        return ProxyWsDevice(address, self.token)


async def _talk(run: DeviceRun, address: str, until: float, utterance: Utterance) -> None:
    """Turn after turn until ``until``; a lost connection is opened again (through the
    balancer) and the conversation goes on."""
    device: Device | None = None
    index = 0
    try:
        while time.monotonic() < until:
            if device is None:
                device = run.make(address)
                run.step = f"opening ({time.monotonic():.1f})"
                try:
                    await device.open()
                    if isinstance(device, ElatoDevice):
                        run.elato_token = device.token
                except Exception as exc:
                    run.errors.append(f"open: {type(exc).__name__}: {exc}")
                    await _hang_up(device)
                    device = None
                    await asyncio.sleep(0.3)
                    continue
                if run.lost_at is not None and run.protocol != "proxy_http":
                    run.reconnect_s.append(time.monotonic() - run.lost_at)
                    run.lost_at = None
            index += 1
            run.step = f"turn {index} ({time.monotonic():.1f})"
            record = TurnRecord(index, utterance.text)
            try:
                async with asyncio.timeout(utterance.duration_s + TURN_TIMEOUT_S + 10):
                    record = await device.turn(record, utterance)
            except TimeoutError:  # a send that never returns: the device gives up on it
                record.errors.append("the turn hung")
                device.closed = device.closed or "the turn hung"
            if record.errors or record.first_audio_t is None:
                run.failed += 1
                run.errors.extend(record.errors or ["no reply audio"])
                cut_off = device.closed is not None or run.protocol == "proxy_http"
                if cut_off and run.lost_at is None:
                    run.lost_at = time.monotonic()
                    run.disconnects += 1
                if device.closed is not None:  # opened again, through the balancer
                    await _hang_up(device)
                    device = None
            else:
                run.completed += 1
                if run.protocol == "proxy_http" and run.lost_at is not None:
                    run.reconnect_s.append(time.monotonic() - run.lost_at)
                    run.lost_at = None
    finally:
        run.step = "done"
        if device is not None:
            await _hang_up(device)


async def _hang_up(device: Device) -> None:
    """Close, but not for ever: the socket may be stuck."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await device.close()


async def devices_through_a_dying_replica(
    made: Cluster,
    devices: int,
    duration_s: float,
    *,
    kill: str | None = "a",
    kill_after_s: float | None = None,
) -> dict[str, Any]:
    """``devices`` devices (the protocols in turn) talk through the balancer for
    ``duration_s``; ``kill`` is killed ``kill_after_s`` in (default a third of the way)."""
    admin = Admin(made.balancer, made.admin_token)
    runs: list[DeviceRun] = []
    try:
        for number in range(devices):
            protocol = PROTOCOLS[number % len(PROTOCOLS)]
            mac = f"02:00:00:{number // 256:02X}:{number % 256:02X}:42"
            name = f"cluster-{protocol}-{number}"
            _, token = await admin.add_device(name, mac if protocol == "elato" else None)
            runs.append(DeviceRun(name, protocol, token, mac, f"sess-{number}"))
        utterance = spoken_tone()
        started = time.monotonic()
        until = started + duration_s
        talking = [
            asyncio.create_task(_staggered(run, made.balancer, until, utterance, i * 0.05))
            for i, run in enumerate(runs)
        ]
        killed_at = None
        if kill is not None:
            await asyncio.sleep(kill_after_s if kill_after_s is not None else duration_s / 3)
            killed_at = made.kill(kill) - started
        _, late = await asyncio.wait(talking, timeout=duration_s + 2 * TURN_TIMEOUT_S)
        for task in late:
            task.cancel()
        stuck = [f"{run.name}: {run.step}" for run in runs if run.step != "done"]
        if late:
            raise RuntimeError(f"devices did not finish (now {time.monotonic():.1f}): {stuck}")
        await asyncio.sleep(1.0)  # the last turns' writes
        for run in runs:
            run.stored_conversations, run.stored_turns = await admin.stored(run.name)
    finally:
        await admin.close()
    return {"runs": runs, "killed_at_s": killed_at, "duration_s": duration_s}


async def _staggered(
    run: DeviceRun, address: str, until: float, utterance: Utterance, delay_s: float
) -> None:
    await asyncio.sleep(delay_s)
    await _talk(run, address, until, utterance)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    runs: list[DeviceRun] = result["runs"]
    reconnects = sorted(s for run in runs for s in run.reconnect_s)
    hit = [run for run in runs if run.disconnects]
    return {
        "devices": len(runs),
        "devices_held": sum(1 for run in runs if run.completed and not run.lost_at),
        "devices_cut_off": len(hit),
        "turns_completed": sum(run.completed for run in runs),
        "turns_failed": sum(run.failed for run in runs),
        "reconnect_s_p50": _q(reconnects, 0.5),
        "reconnect_s_p95": _q(reconnects, 0.95),
        "reconnect_s_max": round(reconnects[-1], 2) if reconnects else None,
        "turns_lost": sum(
            max(0, run.completed - run.stored_turns) for run in runs if run.protocol in STRICT
        ),
        "conversations_per_device_max": max((run.stored_conversations for run in runs), default=0),
        "devices_with_new_conversation": sum(run.stored_conversations > 1 for run in runs),
    }


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1], 2)
