"""The app's own routes: health and metrics, over a real socket."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes import Fakes
from tests.server_harness import running_server, server_settings
from voxgate.store.devices import DeviceStore


async def test_healthz_and_metrics_over_a_real_socket(tmp_path: Path) -> None:
    settings = server_settings(tmp_path)
    fakes = Fakes()
    engines = fakes.engines()
    devices = DeviceStore(tmp_path / "devices.db")
    async with (
        running_server(settings, engines, devices) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        health = await client.get("/healthz")
        metrics = await client.get("/metrics")
    engines.close()
    devices.close()
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["models_ready"] is True
    assert metrics.status_code == 200
    assert "voxgate_sessions_open" in metrics.text and "voxgate_stage_seconds" in metrics.text


def test_a_signing_key_is_made_once_and_kept(tmp_path: Path) -> None:
    from voxgate.server.signing_key import with_signing_key

    first = with_signing_key(server_settings(tmp_path))
    second = with_signing_key(server_settings(tmp_path))
    key = first.server.jwt_secret
    assert key is not None and len(key.get_secret_value()) >= 32
    assert second.server.jwt_secret == key
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o777 == 0o600
    given = with_signing_key(server_settings(tmp_path, jwt_secret="configured"))
    assert given.server.jwt_secret is not None
    assert given.server.jwt_secret.get_secret_value() == "configured"
