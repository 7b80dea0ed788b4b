"""One process, no Redis: a revoke ends the device's live session; the admin's drain stops new
sessions, makes /healthz answer 503 "draining" and ends the sessions left."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes import Fakes
from tests.server_harness import open_store, running_server, server_settings

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


async def test_a_revoke_ends_the_device_s_live_session_and_no_other(tmp_path: Path) -> None:
    engines = Fakes().engines()
    store = await open_store(tmp_path)
    _, kitchen = await store.devices.add("kitchen")
    _, hall = await store.devices.add("hall")
    settings = server_settings(tmp_path, admin_token=ADMIN)
    try:
        async with running_server(settings, engines, store) as address:
            revoked_ws = await _relay(address, kitchen)
            other_ws = await _relay(address, hall)
            async with httpx.AsyncClient(
                base_url=f"http://{address}", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as admin:
                online = (await admin.get("/api/admin/overview")).json()
                assert online["devices_online"] == 2 and online["sessions_live"] == 2
                assert (await admin.post("/api/admin/devices/kitchen/revoke")).status_code == 200
                code, events = await _closed_with(revoked_ws)
                assert code == 4401 and events[-1] == "error"
                assert (await admin.get("/api/admin/overview")).json()["devices_online"] == 1
            await other_ws.ping()  # still open
            await other_ws.close()
    finally:
        engines.close()
        await store.close()


async def test_the_admin_s_drain_refuses_new_sessions_and_ends_the_others(tmp_path: Path) -> None:
    engines = Fakes().engines()
    store = await open_store(tmp_path)
    _, kitchen = await store.devices.add("kitchen")
    settings = server_settings(tmp_path, admin_token=ADMIN, shutdown_grace_s=1.0)
    try:
        async with running_server(settings, engines, store) as address:
            ws = await _relay(address, kitchen)
            async with httpx.AsyncClient(
                base_url=f"http://{address}", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as admin:
                assert (await admin.get("/healthz")).status_code == 200
                drained = await admin.post("/api/admin/drain")
                assert drained.status_code == 202 and drained.json()["sessions"] == 1
                health = await admin.get("/healthz")
                assert health.status_code == 503 and health.json()["status"] == "draining"
                code, _ = await _closed_with(ws)
                assert code == 1001  # going away: the device reconnects, elsewhere
                refused = await connect(
                    f"ws://{address}/v1/relay",
                    additional_headers={"Authorization": f"Bearer {kitchen}"},
                )
                code, events = await _closed_with(refused)
                assert code == 1013 and events == ["error"], (code, events)
    finally:
        engines.close()
        await store.close()


async def test_a_revoke_from_the_command_line_ends_the_live_session_at_the_next_check(
    tmp_path: Path,
) -> None:
    engines = Fakes().engines()
    store = await open_store(tmp_path)
    _, kitchen = await store.devices.add("kitchen")
    settings = server_settings(tmp_path, admin_token=ADMIN, revocation_check_s=0.2)
    try:
        async with running_server(settings, engines, store) as address:
            ws = await _relay(address, kitchen)
            # What `voxgate devices revoke kitchen` does: the database only, no notice.
            assert await store.devices.revoke("kitchen")
            async with asyncio.timeout(10):
                code, events = await _closed_with(ws)
            assert code == 4401 and events[-1] == "error"
    finally:
        engines.close()
        await store.close()
