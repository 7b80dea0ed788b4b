"""A device that stops reading is disconnected, not buffered for without bound."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fakes import FakeLLM, Fakes, FakeTTS
from tests.server_harness import open_store, running_server, server_settings


async def test_a_client_that_never_reads_is_dropped_and_the_server_goes_on(tmp_path: Path) -> None:
    # Ten "words" of 60 s of audio each, no pacing: far more than the socket buffers hold.
    fakes = Fakes(
        llm=FakeLLM(["one two three four five six seven eight nine ten."]),
        tts=FakeTTS(sample_rate_hz=24_000, ms_per_word=60_000),
    )
    engines = fakes.engines()
    store = await open_store(tmp_path)
    _, token = await store.devices.add("sleepy")
    settings = server_settings(
        tmp_path, send_timeout_s=1.0, prebuffer_ms=10_000_000, max_message_bytes=1 << 24
    )
    async with running_server(settings, engines, store) as address:
        url = f"ws://{address}/v1/relay?token={token}"
        # max_queue=1: the client library itself stops reading after one message.
        async with connect(url, max_queue=1, max_size=None) as ws:
            await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": {}}))
            await ws.send(json.dumps({"event": "text.input", "seq": 2, "payload": {"text": "go"}}))
            async with httpx.AsyncClient(base_url=f"http://{address}") as http:
                for _ in range(50):  # the session opens (it reads its history first)...
                    if (await http.get("/healthz")).json()["sessions"] == 1:
                        break
                    await asyncio.sleep(0.02)
                for _ in range(100):  # ...and is dropped, within 20 s
                    if (await http.get("/healthz")).json()["sessions"] == 0:
                        break
                    await asyncio.sleep(0.2)
                assert (await http.get("/healthz")).json()["sessions"] == 0
                # The server dropped the sleeper and still serves others.
                assert (await http.get("/healthz")).json()["status"] == "ok"
            closed = False
            try:
                async with asyncio.timeout(10):
                    async for _ in ws:
                        pass
            except ConnectionClosed:
                closed = True
            # 4408 if the close frame still fits in the buffers; usually it cannot, and the
            # server aborts the connection (1006 at the client).
            assert closed and ws.close_code in (4408, 1006), ws.close_code
    engines.close()
    await store.close()
