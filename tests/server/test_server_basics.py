"""The app's own routes: health and metrics, over a real socket."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import httpx
import uvicorn
import websockets

from tests.fakes import FakeLLM, Fakes
from tests.server_harness import open_store, running_server, server_settings, serving
from voxgate.server.app import create_app
from voxgate.server.serve import _DrainingServer


async def test_healthz_and_metrics_over_a_real_socket(tmp_path: Path) -> None:
    settings = server_settings(tmp_path)
    fakes = Fakes()
    engines = fakes.engines()
    store = await open_store(tmp_path)
    async with (
        running_server(settings, engines, store) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        health = await client.get("/healthz")
        metrics = await client.get("/metrics")
    engines.close()
    await store.close()
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["models_ready"] is True
    assert metrics.status_code == 200
    assert "voxgate_sessions_open" in metrics.text and "voxgate_stage_seconds" in metrics.text
    assert "voxgate_db_healthy 1.0" in metrics.text
    assert "voxgate_db_writes_pending 0.0" in metrics.text


def test_the_signing_key_and_admin_token_are_made_once_and_kept(tmp_path: Path) -> None:
    from voxgate.server.secrets_file import with_generated_secrets

    first = with_generated_secrets(server_settings(tmp_path))
    second = with_generated_secrets(server_settings(tmp_path))
    key = first.server.jwt_secret
    assert key is not None and len(key.get_secret_value()) >= 32
    assert second.server.jwt_secret == key
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o777 == 0o600
    given = with_generated_secrets(server_settings(tmp_path, jwt_secret="configured"))
    assert given.server.jwt_secret is not None
    assert given.server.jwt_secret.get_secret_value() == "configured"
    admin = first.server.admin_token
    assert admin is not None and admin != key and second.server.admin_token == admin
    assert (tmp_path / "admin_token").stat().st_mode & 0o777 == 0o600


async def test_shutdown_lets_a_reply_in_flight_finish_then_closes(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, shutdown_grace_s=10)
    fakes = Fakes(llm=FakeLLM(["One. ", "Two. ", "Three."], delay_s=0.3))
    engines = fakes.engines()
    store = await open_store(tmp_path)
    _, token = await store.devices.add("d")
    app = create_app(settings, engines=engines, store=store)
    received: list[str] = []
    servers: list[uvicorn.Server] = []

    def draining(config: uvicorn.Config) -> uvicorn.Server:
        servers.append(_DrainingServer(config, app, grace_s=10))
        return servers[-1]

    async with (
        serving(app, draining) as address,
        websockets.connect(f"ws://{address}/v1/relay?token={token}") as ws,
    ):
        await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": {}}))
        await ws.send(json.dumps({"event": "text.input", "seq": 2, "payload": {"text": "go"}}))
        while "reply.started" not in received:
            message = await ws.recv()
            if isinstance(message, str):
                received.append(json.loads(message)["event"])
        servers[0].should_exit = True  # as on SIGTERM, while the reply is being written
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                if isinstance(message, str):
                    received.append(json.loads(message)["event"])
    engines.close()
    await store.close()
    assert "turn.done" in received, received
    assert fakes.llm.completed == 1
