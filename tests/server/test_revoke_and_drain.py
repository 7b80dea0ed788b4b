"""One process, no Redis: a revoke ends the device's live session; the admin's drain stops new
sessions, makes /healthz answer 503 "draining" and ends the sessions left."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes import Fakes
from tests.server_harness import open_store, running_server, server_settings
from voxgate.store import Store

ADMIN = "admin-token-for-tests"


async def _relay(address: str, token: str) -> ClientConnection:
    ws = await connect(
        f"ws://{address}/v1/relay", additional_headers={"Authorization": f"Bearer {token}"}
    )
    start = {"greeting": False, "input": {"sample_rate_hz": 16000}}
    await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": start}))
    assert json.loads(await ws.recv())["event"] == "session.ready"
    return ws


async def _closed_with(ws: ClientConnection) -> tuple[int | None, list[str]]:
    events = []
    try:
        async for message in ws:
            if isinstance(message, str):
                events.append(json.loads(message)["event"])
    except ConnectionClosed:
        pass
    return ws.close_code, events


@asynccontextmanager
async def _server(
    tmp_path: Path, *devices: str, **server: object
) -> AsyncIterator[tuple[str, Store, list[str]]]:
    """A server on the fake engines with ``devices`` added: its address, store and their tokens."""
    engines = Fakes().engines()
    store = await open_store(tmp_path)
    tokens = [(await store.devices.add(name))[1] for name in devices]
    settings = server_settings(tmp_path, admin_token=ADMIN, **server)
    try:
        async with running_server(settings, engines, store) as address:
            yield address, store, tokens
    finally:
        engines.close()
        await store.close()


def _admin(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://{address}", headers={"Authorization": f"Bearer {ADMIN}"}
    )


async def test_a_revoke_ends_the_device_s_live_session_and_no_other(tmp_path: Path) -> None:
    async with _server(tmp_path, "kitchen", "hall") as (address, _, (kitchen, hall)):
        revoked_ws = await _relay(address, kitchen)
        other_ws = await _relay(address, hall)
        async with _admin(address) as admin:
            online = (await admin.get("/api/admin/overview")).json()
            assert online["devices_online"] == 2 and online["sessions_live"] == 2
            assert (await admin.post("/api/admin/devices/kitchen/revoke")).status_code == 200
            async with asyncio.timeout(10):
                code, events = await _closed_with(revoked_ws)
            assert code == 4401 and events[-1] == "error"
            assert (await admin.get("/api/admin/overview")).json()["devices_online"] == 1
        await other_ws.ping()  # still open
        await other_ws.close()


async def test_the_admin_s_drain_refuses_new_sessions_and_ends_the_others(tmp_path: Path) -> None:
    async with _server(tmp_path, "kitchen", shutdown_grace_s=1.0) as (address, _, (kitchen,)):
        ws = await _relay(address, kitchen)
        async with _admin(address) as admin:
            assert (await admin.get("/healthz")).status_code == 200
            drained = await admin.post("/api/admin/drain")
            assert drained.status_code == 202 and drained.json()["sessions"] == 1
            health = await admin.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "draining"
            async with asyncio.timeout(10):
                code, _ = await _closed_with(ws)
            assert code == 1001  # going away: the device reconnects, elsewhere
            refused = await connect(
                f"ws://{address}/v1/relay",
                additional_headers={"Authorization": f"Bearer {kitchen}"},
            )
            code, events = await _closed_with(refused)
            assert code == 1013 and events == ["error"], (code, events)


async def test_a_revoke_from_the_command_line_ends_the_live_session_at_the_next_check(
    tmp_path: Path,
) -> None:
    async with _server(tmp_path, "kitchen", revocation_check_s=0.2) as (address, store, tokens):
        ws = await _relay(address, tokens[0])
        # What `voxgate devices revoke kitchen` does: the database only, no notice.
        assert await store.devices.revoke("kitchen")
        async with asyncio.timeout(10):
            code, events = await _closed_with(ws)
        assert code == 4401 and events[-1] == "error"
