"""Issue 13 item 3: a busy or absent database is "try again", never "invalid token".

With another process holding SQLite's write lock, a device this server has not seen yet still
logs in at once (its ``last_seen_at`` waits in the write queue). With the database away, the
devices are told to try again: relay 1013 ``unavailable``, ``/v1/audio`` 503, ``/ws`` 1013."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fakes import Fakes, bounded
from tests.postgres_server import PostgresServer
from tests.server_harness import running_server, server_settings
from voxgate.core.config import DatabaseSettings, Settings
from voxgate.store import Store

_HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], timeout=1)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.rollback()
"""


async def _relay_start(url: str, token: str) -> tuple[str, int | None]:
    """The first event the relay answers ``session.start`` with, and the close code if any."""
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(
            json.dumps({"event": "session.start", "seq": 1, "payload": {"greeting": False}})
        )
        first = json.loads(await ws.recv())
        code = None
        if first["event"] == "error":
            try:
                await ws.recv()
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
        return (first["payload"].get("code") or first["event"]), code


@bounded(60)
async def test_a_locked_database_does_not_lock_out_a_device_it_has_not_seen(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, admin_token="admin-token-for-tests")
    store = await Store.open(settings)
    _, token = await store.devices.add("kitchen")
    await store.devices.ensure("browser")  # the page's device exists, as after its first visit
    engines = Fakes().engines()
    async with running_server(settings, engines, store) as address:
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLD_LOCK,
            str(tmp_path / "voxgate.db"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert (await holder.stdout.readline()).strip() == b"locked"
            loop = asyncio.get_running_loop()
            started = loop.time()
            event, code = await _relay_start(f"ws://{address}/v1/relay", token)
            # The web page (the admin token's pseudo-device) too: its "last seen" waits as well.
            page = await _relay_start(f"ws://{address}/v1/relay", "admin-token-for-tests")
            waited_s = loop.time() - started
            async with connect(
                f"ws://{address}/ws", additional_headers={"X-Assistant-Token": token}
            ) as ws:
                await ws.send(b"\x00\x00" * 160)
                proxy_open = ws.close_code is None
        finally:
            holder.stdin.write(b"\n")
            await holder.stdin.drain()
            await holder.wait()
        assert await store.writer.flush(15)
        seen = (await store.devices.by_name("kitchen")).last_seen_at
    engines.close()
    await store.close()
    assert (event, code) == ("session.ready", None)
    assert page == ("session.ready", None)
    assert waited_s < 4.0, "a login waited for the database's busy timeout"
    assert proxy_open
    assert seen is not None  # written once the lock was gone


@bounded(90)
async def test_a_database_that_is_away_says_try_again(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    settings = Settings(data_dir=tmp_path, database=DatabaseSettings(url=own_postgres.url()))
    store = await Store.open(settings)
    _, token = await store.devices.add("kitchen")
    engines = Fakes().engines()
    async with running_server(settings, engines, store) as address:
        await asyncio.to_thread(own_postgres.pause)
        try:
            relay = await _relay_start(f"ws://{address}/v1/relay", token)
            async with httpx.AsyncClient(base_url=f"http://{address}") as http:
                audio = await http.post(
                    "/v1/audio",
                    json={"session_id": "s", "chunk_index": 0, "pcm_base64": "", "final": True},
                    headers={"X-Assistant-Token": token},
                    timeout=30,
                )
            async with connect(
                f"ws://{address}/ws", additional_headers={"X-Assistant-Token": token}
            ) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
        finally:
            await asyncio.to_thread(own_postgres.resume)
    engines.close()
    await store.close()
    assert relay == ("unavailable", 1013)
    assert audio.status_code == 503 and "try again" in audio.json()["detail"]
    assert audio.headers["retry-after"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
