"""``[redis] url`` set but Redis away: devices still get in (the shared counts are skipped,
logged), the admin still sees this replica's devices online, and the proxy's chunked HTTP path,
which cannot keep its chunks, answers 503 so the device retries."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from bench.harness import free_port
from tests.fakes import Fakes
from tests.server_harness import open_store, running_server
from voxgate.core.config import Settings

ADMIN = "admin-token-for-tests"


async def test_with_redis_away_sessions_go_on_and_chunks_are_refused_with_503(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        server={"admin_token": ADMIN},  # type: ignore[arg-type]
        redis={"url": f"redis://127.0.0.1:{free_port()}/0", "timeout_s": 0.5},  # type: ignore[arg-type]
    )
    engines = Fakes().engines()
    store = await open_store(tmp_path)
    _, token = await store.devices.add("kitchen")
    try:
        async with running_server(settings, engines, store) as address:
            ws = await connect(
                f"ws://{address}/v1/relay", additional_headers={"Authorization": f"Bearer {token}"}
            )
            start = {"greeting": False, "input": {"sample_rate_hz": 16000}}
            await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": start}))
            assert json.loads(await ws.recv())["event"] == "session.ready"
            async with httpx.AsyncClient(base_url=f"http://{address}") as http:
                overview = await http.get(
                    "/api/admin/overview", headers={"Authorization": f"Bearer {ADMIN}"}
                )
                assert overview.status_code == 200
                assert overview.json()["devices_online"] == 1  # this replica's own
                chunk = {
                    "session_id": "s",
                    "chunk_index": 0,
                    "pcm_base64": base64.b64encode(b"\0\0" * 1600).decode(),
                    "is_final": False,
                }
                answer = await http.post(
                    "/v1/audio", json=chunk, headers={"X-Assistant-Token": token}
                )
                assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
            await ws.close()
    finally:
        engines.close()
        await store.close()
