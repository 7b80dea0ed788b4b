"""What the cluster test checks and the cluster benchmark measures, on a running cluster
(bench/cluster_harness.py): devices of every protocol talking through the balancer while a
replica is killed; one device's limits across replicas; a revoke on one replica ending a
session on another; chunked HTTP sessions spread over the replicas; the migration at start.

Each scenario returns plain data; the test asserts on it, the benchmark prints it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

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
MIGRATED = "migrated the database from None"
"""What a replica logs when it migrated an empty database."""


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
                    await device.close()
                    device = None
                    await asyncio.sleep(0.3)
                    continue
                if run.lost_at is not None and run.protocol != "proxy_http":
                    run.reconnect_s.append(time.monotonic() - run.lost_at)
                    run.lost_at = None
            index += 1
            run.step = f"turn {index} ({time.monotonic():.1f})"
            record = await device.turn(TurnRecord(index, utterance.text), utterance)
            if record.errors or record.first_audio_t is None:
                run.failed += 1
                run.errors.extend(record.errors or ["no reply audio"])
                cut_off = device.closed is not None or run.protocol == "proxy_http"
                if cut_off and run.lost_at is None:
                    run.lost_at = time.monotonic()
                    run.disconnects += 1
                if device.closed is not None:  # opened again, through the balancer
                    await device.close()
                    device = None
            else:
                run.completed += 1
                if run.protocol == "proxy_http" and run.lost_at is not None:
                    run.reconnect_s.append(time.monotonic() - run.lost_at)
                    run.lost_at = None
    finally:
        run.step = "done"
        if device is not None:
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
    }


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1], 2)


# -- limits, revocation, chunks -----------------------------------------------------------------


async def relay_attempt(address: str, token: str) -> tuple[bool, int | None]:
    """Open a relay session: (ready, the close code if refused). Left open when ready."""
    ws = await connect(
        f"ws://{address}/v1/relay", additional_headers={"Authorization": f"Bearer {token}"}
    )
    start = {"greeting": False, "input": {"sample_rate_hz": RATE_HZ}}
    await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": start}))
    try:
        reply = json.loads(await ws.recv())
    except ConnectionClosed:
        return False, ws.close_code
    if reply["event"] == "session.ready":
        OPEN.append(ws)
        return True, None
    with contextlib.suppress(ConnectionClosed):
        await ws.recv()
    return False, ws.close_code


OPEN: list[Any] = []
"""Sessions left open by :func:`relay_attempt` (closed by :func:`close_open`)."""


async def close_open() -> None:
    while OPEN:
        await OPEN.pop().close()


async def connection_limit_across_replicas(
    made: Cluster, attempts_per_replica: int
) -> dict[str, Any]:
    """One device connects to each replica directly, in turn: how many got in."""
    admin = Admin(made.balancer, made.admin_token)
    try:
        _, token = await admin.add_device("limited")
    finally:
        await admin.close()
    live = [replica for replica in made.replicas if replica.alive]
    outcomes = []
    for _ in range(attempts_per_replica):
        for replica in live:
            ready, code = await relay_attempt(replica.address, token)
            outcomes.append((replica.name, ready, code))
            if ready:
                await OPEN.pop().close()
    return {"replicas": len(live), "outcomes": outcomes, "admitted": sum(o[1] for o in outcomes)}


async def session_cap_across_replicas(made: Cluster) -> dict[str, Any]:
    """One device opens sessions on every replica and keeps them: how many are held."""
    admin = Admin(made.balancer, made.admin_token)
    try:
        _, token = await admin.add_device("capped")
    finally:
        await admin.close()
    live = [replica for replica in made.replicas if replica.alive]
    outcomes = []
    overviews = {}
    try:
        for _ in range(2):
            for replica in live:
                outcomes.append(await relay_attempt(replica.address, token))
        # Whichever replica the admin asks, it sees the sessions of all of them.
        for replica in live:
            admin = Admin(replica.address, made.admin_token)
            try:
                overview = (await admin.http.get("/api/admin/overview")).json()
            finally:
                await admin.close()
            overviews[replica.name] = (overview["devices_online"], overview["sessions_live"])
    finally:
        await close_open()
    return {
        "held": sum(ready for ready, _ in outcomes),
        "codes": [c for _, c in outcomes],
        "overviews": overviews,
    }


async def drain(made: Cluster, name: str) -> dict[str, Any]:
    """A session on replica ``name``; the admin drains it: how the session ends, what its
    /healthz says, and which replicas answer through the balancer afterwards."""
    replica = made.replica(name)
    admin = Admin(replica.address, made.admin_token)
    try:
        _, token = await admin.add_device(f"drained-{name}")
        ready, code = await relay_attempt(replica.address, token)
        assert ready, code
        ws = OPEN.pop()
        answer = await admin.http.post("/api/admin/drain")
        answer.raise_for_status()
        health = await admin.http.get("/healthz")
        try:
            async with asyncio.timeout(30):
                async for _ in ws:
                    pass
        except (ConnectionClosed, TimeoutError):
            pass
        await asyncio.sleep(2.0)  # HAProxy's checks (every 500 ms, two to fail) see it
        answered_by = []
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(10):
                found = await client.get(f"http://{made.balancer}/healthz")
                answered_by.append(found.json().get("replica"))
    finally:
        await admin.close()
    return {
        "health": (health.status_code, health.json()["status"]),
        "session_closed": ws.close_code,
        "balancer_answered_by": sorted(set(answered_by)),
    }


async def revoke_across_replicas(made: Cluster, on: str, revoke_via: str) -> dict[str, Any]:
    """A device talks on replica ``on``; the admin revokes it through ``revoke_via``: how long
    until ``on`` closed the session, and with which code."""
    admin = Admin(made.replica(revoke_via).address, made.admin_token)
    try:
        _, token = await admin.add_device("to-revoke")
        ready, code = await relay_attempt(made.replica(on).address, token)
        assert ready, code
        ws = OPEN.pop()
        revoked_t = time.monotonic()
        answer = await admin.http.post("/api/admin/devices/to-revoke/revoke")
        answer.raise_for_status()
        try:
            async with asyncio.timeout(30):
                async for _ in ws:
                    pass
        except (ConnectionClosed, TimeoutError):
            pass
        closed_s = time.monotonic() - revoked_t
    finally:
        await admin.close()
    return {"closed_after_s": round(closed_s, 3), "code": ws.close_code}


async def chunks_spread_over_replicas(made: Cluster, sessions: int = 3) -> dict[str, Any]:
    """Chunked HTTP sessions whose chunks go to every live replica in turn (as a balancer
    without stickiness would send them): each final chunk's answer."""
    admin = Admin(made.balancer, made.admin_token)
    try:
        _, token = await admin.add_device("chunky")
    finally:
        await admin.close()
    live = [replica for replica in made.replicas if replica.alive]
    clients = [
        httpx.AsyncClient(
            base_url=f"http://{replica.address}",
            headers={"X-Assistant-Token": token},
            trust_env=False,
            timeout=60,
        )
        for replica in live
    ]
    utterance = spoken_tone(1.2).samples.astype("<i2").tobytes() + bytes(16_000)
    results = []
    try:
        for number in range(sessions):
            step = 3200
            pieces = [utterance[i : i + step] for i in range(0, len(utterance), step)]
            for index, piece in enumerate(pieces):
                body = _chunk(f"spread-{number}", index, piece)
                answer = await clients[(index + number) % len(clients)].post("/v1/audio", json=body)
                answer.raise_for_status()
            final = _chunk(f"spread-{number}", len(pieces), b"", final=True)
            reply = await clients[(len(pieces) + number) % len(clients)].post(
                "/v1/audio", json=final
            )
            results.append(
                {
                    "status": reply.status_code,
                    "reply_bytes": len(reply.content),
                    "error": reply.headers.get("x-voxgate-error"),
                    "chunks": len(pieces),
                }
            )
    finally:
        for client in clients:
            await client.aclose()
    return {"sessions": results}


def _chunk(session_id: str, index: int, pcm: bytes, *, final: bool = False) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "chunk_index": index,
        "pcm_base64": base64.b64encode(pcm).decode(),
        "is_final": final,
    }


def migrations(made: Cluster) -> dict[str, Any]:
    """How many replicas migrated the empty database (each logs it when it does)."""
    logs = made.logs()
    return {"migrated_by": sorted(name for name, log in logs.items() if MIGRATED in log)}
