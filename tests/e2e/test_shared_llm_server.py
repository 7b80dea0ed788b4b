"""Engines as a shared service: two ``voxgate serve`` replicas answer from one LLM server.

``voxgate llm-server`` runs llama.cpp's HTTP server on the embedded GGUF; both replicas use the
OpenAI-compatible provider pointed at it, so neither loads the model: each turn's reply is the real
model's words (not the stand-in's), the server mapped the GGUF and the replicas did not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.server_harness import free_port, standin_env
from voxgate.core.config import load_settings
from voxgate.models import ModelStore

pytestmark = pytest.mark.models

ADMIN = "shared-llm-admin"
MODEL = "qwen2.5-0.5b-instruct"
MODEL_FILE = "model.gguf"  # its file name in the model cache


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {seconds} s")


def maps_file(pid: int, name: str) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return any(line.rstrip().endswith(name) for line in maps)


@pytest.fixture
def llm_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = standin_env(tmp_path / "llm")
    model = ModelStore(load_settings().models_dir, show_progress=False).resolve(MODEL)
    command = ["llm-server", "--model", str(model), "--port", str(port), "--parallel", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "voxgate", *command, "--threads", "1", "--context-tokens", "1024"],
        env=env,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}/v1", process
    finally:
        process.terminate()
        process.wait(30)


def start_replica(data_dir: Path, llm_url: str) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    env = standin_env(
        data_dir,
        VOXGATE_SERVER__ADMIN_TOKEN=ADMIN,
        VOXGATE_LLM__PROVIDER="openai",
        VOXGATE_LLM__BASE_URL=llm_url,
        VOXGATE_LLM__MODEL=MODEL,
        VOXGATE_LLM__MAX_TOKENS="24",
    )
    command = ["serve", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen([sys.executable, "-m", "voxgate", *command], env=env)
    return port, process


async def text_turn(port: int, text: str) -> dict[str, object]:
    """One typed turn over the relay protocol; the ``turn.done`` payload."""
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/v1/relay",
        additional_headers={"Authorization": f"Bearer {ADMIN}"},
        open_timeout=30,
    ) as ws:
        await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": {}}))
        await ws.send(json.dumps({"event": "text.input", "seq": 2, "payload": {"text": text}}))
        async for message in ws:
            if isinstance(message, str):
                event = json.loads(message)
                if event["event"] == "turn.done":
                    payload: dict[str, object] = event["payload"]
                    return payload
                assert event["event"] != "error", event
    raise AssertionError("the relay closed before turn.done")


async def test_two_replicas_share_one_llm_server(
    tmp_path: Path, llm_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, server = llm_server
    replicas = [start_replica(tmp_path / name, url) for name in ("a", "b")]
    try:
        for port, process in replicas:
            wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        replies = [
            await text_turn(port, "Name one colour of the sky. One word.") for port, _ in replicas
        ]
        for done in replies:
            reply = str(done["reply_text"]).strip()
            assert reply, done
            assert reply != "Hello to you too.", "the stand-in answered, not the shared server"
        assert maps_file(server.pid, MODEL_FILE)
        for _, process in replicas:
            assert not maps_file(process.pid, MODEL_FILE)  # the replicas hold no model
    finally:
        for _, process in replicas:
            process.terminate()
        for _, process in replicas:
            process.wait(30)
