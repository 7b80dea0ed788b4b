"""kill -9 in the middle of a reply: every turn completed before it is in the history, the
database opens clean, and the restarted server continues the conversation.

The real ``voxgate serve`` in a subprocess (instant stand-in engines, the embedded SQLite store),
driven over a real socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fakes import bounded
from tests.server_harness import free_port, open_store, standin_env


@contextmanager
def _serve(data_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = standin_env(data_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "voxgate", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()


async def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if process.poll() is not None:
                assert process.stderr is not None
                raise AssertionError(f"the server exited: {process.stderr.read().decode()}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the server did not start")


async def _messages(ws: Any) -> dict[str, Any]:
    while True:
        frame = await ws.recv()
        if isinstance(frame, str):
            message: dict[str, Any] = json.loads(frame)
            return message


async def _start(ws: Any, token: str) -> dict[str, Any]:
    start = {"token": token, "greeting": False}
    await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": start}))
    ready = await _messages(ws)
    assert ready["event"] == "session.ready", ready
    payload: dict[str, Any] = ready["payload"]
    return payload


@bounded(90)
async def test_kill_9_mid_reply_keeps_every_completed_turn(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    _, token = await store.devices.add("toy")
    await store.close()
    port = free_port()
    url = f"ws://127.0.0.1:{port}/v1/relay"

    completed: list[str] = []
    with _serve(tmp_path, port) as server:
        await _wait_ready(port, server)
        async with connect(url, max_size=None) as ws:
            await _start(ws, token)
            seq = 1
            for turn in range(1, 6):
                seq += 1
                text = f"turn number {turn}"
                await ws.send(
                    json.dumps({"event": "text.input", "seq": seq, "payload": {"text": text}})
                )
                while True:
                    message = await _messages(ws)
                    if turn == 5 and message["event"] == "tts.audio":
                        # The fifth reply is being spoken: kill the server now.
                        os.kill(server.pid, signal.SIGKILL)
                        server.wait(10)
                        break
                    if message["event"] == "turn.done":
                        completed.append(text)
                        break
    assert server.returncode == -signal.SIGKILL
    assert completed == [f"turn number {n}" for n in range(1, 5)]

    # The database opens clean...
    with sqlite3.connect(tmp_path / "voxgate.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = await open_store(tmp_path)
    try:
        history = await store.conversations.history("toy", limit=100)
    finally:
        await store.close()
    said = [message.text for message in history if message.role == "user"]
    # ...with every turn the device saw completed (turn.done waits for the write), and the
    # one cut off may or may not have made it.
    assert said[: len(completed)] == completed and len(said) <= len(completed) + 1
    replies = [message for message in history if message.role == "assistant"]
    assert all(reply.text == "Hello to you too." for reply in replies[: len(completed)])

    # The restarted server continues the conversation.
    with _serve(tmp_path, port) as server:
        await _wait_ready(port, server)
        async with connect(url, max_size=None) as ws:
            ready = await _start(ws, token)
    assert ready["resumed"] is True and ready["resumed_turns"] >= len(completed)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM])
@bounded(60)
async def test_a_graceful_stop_writes_the_reply_in_flight(
    tmp_path: Path, signal_number: int
) -> None:
    store = await open_store(tmp_path)
    _, token = await store.devices.add("toy")
    await store.close()
    port = free_port()
    with _serve(tmp_path, port) as server:
        await _wait_ready(port, server)
        async with connect(f"ws://127.0.0.1:{port}/v1/relay", max_size=None) as ws:
            await _start(ws, token)
            text = {"event": "text.input", "seq": 2, "payload": {"text": "last words"}}
            await ws.send(json.dumps(text))
            while (await _messages(ws))["event"] != "tts.audio":
                pass
            server.send_signal(signal_number)
            server.wait(20)
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert server.returncode in (0, -signal_number)
    store = await open_store(tmp_path)
    try:
        history = await store.conversations.history("toy")
    finally:
        await store.close()
    assert [(m.role, m.text) for m in history] == [
        ("user", "last words"),
        ("assistant", "Hello to you too."),
    ]
