"""The database goes away mid-conversation and comes back: the device keeps talking, /healthz
says degraded, and the turns made meanwhile are written once it is back. Against a real
PostgreSQL server of its own (stopped and started again), over a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fakes import FakeLLM, Fakes, bounded
from tests.postgres_server import PostgresServer, PostgresServerError
from tests.server_harness import running_server
from voxgate.core.config import DatabaseSettings, ServerSettings, Settings
from voxgate.store import Store


@pytest.fixture
def own_postgres(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A server of this test's own (it is stopped and started); ``postgres_server`` is only
    asked for so that a machine without PostgreSQL skips (or fails in CI) the same way."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresServerError as exc:  # pragma: no cover - the shared one started
        pytest.fail(str(exc))
    yield server
    server.stop()


async def _turn(ws: Any, seq: int, text: str) -> dict[str, Any]:
    await ws.send(json.dumps({"event": "text.input", "seq": seq, "payload": {"text": text}}))
    while True:
        frame = await ws.recv()
        if isinstance(frame, str) and (message := json.loads(frame))["event"] == "turn.done":
            payload: dict[str, Any] = message["payload"]
            return payload


@bounded(90)
async def test_turns_made_while_the_database_is_away_are_written_when_it_is_back(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database=DatabaseSettings(url=own_postgres.url(), durable_wait_s=0.2),
        server=ServerSettings(turns_per_minute=100),
    )
    store = await Store.open(settings)
    _, token = await store.devices.add("toy")
    fakes = Fakes(llm=FakeLLM(["One."], ["Two."], ["Three."]))
    engines = fakes.engines()
    async with (
        running_server(settings, engines, store) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
        connect(f"ws://{address}/v1/relay?token={token}") as ws,
    ):
        await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": {}}))
        first = await _turn(ws, 2, "before")
        await asyncio.to_thread(own_postgres.pause)
        second = await _turn(ws, 3, "during")
        for _ in range(100):
            health = (await http.get("/healthz")).json()
            if health["status"] == "degraded":
                break
            await asyncio.sleep(0.05)
        third = await _turn(ws, 4, "still during")
        await asyncio.to_thread(own_postgres.resume)
        assert await store.writer.flush(30), "the queued turns were not written"
        healed = (await http.get("/healthz")).json()
    engines.close()
    history = await store.conversations.history("toy")
    await store.close()

    assert [t["reply_text"] for t in (first, second, third)] == ["One.", "Two.", "Three."]
    assert health["status"] == "degraded" and health["degraded"][0].startswith("database")
    assert health["writes_pending"] >= 1
    assert healed["status"] == "ok" and healed["writes_pending"] == 0
    said = [message.text for message in history if message.role == "user"]
    assert said == ["before", "during", "still during"]
