"""Single checks on a running cluster (bench/cluster_harness.py): one device's limits across
replicas; a revoke on one replica ending a session on another; a drain; chunked HTTP sessions
spread over the replicas; the migration at start. Each returns plain data; the test asserts on
it, the benchmark prints it (the devices under load: bench/cluster_devices.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.cluster_devices import Admin, spoken_tone
from bench.cluster_harness import Cluster
from bench.conversations import RATE_HZ

LIMITS = {
    "VOXGATE_SERVER__CONNECTIONS_PER_MINUTE": "5",
    "VOXGATE_SERVER__MAX_SESSIONS_PER_DEVICE": "2",
    "VOXGATE_SERVER__TURNS_PER_MINUTE": "100",
    "VOXGATE_SERVER__TOKEN_REQUESTS_PER_MINUTE": "1000",
    "VOXGATE_SERVER__SHUTDOWN_GRACE_S": "2",
    "VOXGATE_REDIS__HEARTBEAT_S": "1",
    "VOXGATE_REDIS__PRESENCE_TTL_S": "5",
}
"""The replicas' limits the scenarios count on (5 connections a minute, 2 sessions a device)."""

MIGRATED = "migrated the database from None"
"""What a replica logs when it migrated an empty database."""


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


async def device_token(made: Cluster, name: str) -> str:
    """A new device added through the balancer's admin API; its token."""
    admin = Admin(made.balancer, made.admin_token)
    try:
        _, token = await admin.add_device(name)
    finally:
        await admin.close()
    return token


async def connection_limit_across_replicas(
    made: Cluster, attempts_per_replica: int
) -> dict[str, Any]:
    """One device connects to each replica directly, in turn: how many got in."""
    token = await device_token(made, "limited")
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
    token = await device_token(made, "capped")
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
                listed = (await admin.http.get("/api/admin/devices")).json()["devices"]
            finally:
                await admin.close()
            (capped,) = [device for device in listed if device["name"] == "capped"]
            overviews[replica.name] = (
                overview["devices_online"],
                overview["sessions_live"],
                tuple(capped["replicas"]),
            )
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
    token = await device_token(made, "chunky")
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
