"""Engines as shared services: two ``voxgate serve`` replicas answer from one LLM server (and, in
the second test, hear and speak through one Wyoming engines server).

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


def start_replica(
    data_dir: Path, llm_url: str, **extra: str
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    env = standin_env(
        data_dir,
        VOXGATE_SERVER__ADMIN_TOKEN=ADMIN,
        VOXGATE_LLM__PROVIDER="openai",
        VOXGATE_LLM__BASE_URL=llm_url,
        VOXGATE_LLM__MODEL=MODEL,
        VOXGATE_LLM__MAX_TOKENS="24",
        **extra,
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


def start_engines(data_dir: Path, llm_url: str) -> tuple[int, subprocess.Popen[bytes]]:
    """``voxgate serve --wyoming``: the embedded whisper and Piper for every replica."""
    wyoming_port = free_port()
    env = {
        **standin_env(data_dir),
        "VOXGATE_MODEL_CACHE": str(load_settings().models_dir),
        "VOXGATE_STT__PROVIDER": "faster-whisper",
        "VOXGATE_TTS__PROVIDER": "piper",
        "VOXGATE_LLM__PROVIDER": "openai",
        "VOXGATE_LLM__BASE_URL": llm_url,
        "VOXGATE_LLM__MODEL": MODEL,
        "VOXGATE_WYOMING__PORT": str(wyoming_port),
        "VOXGATE_WYOMING__REQUESTS_PER_MINUTE": "1000",
    }
    command = ["serve", "--wyoming", "--port", str(free_port()), "--log-level", "warning"]
    process = subprocess.Popen([sys.executable, "-m", "voxgate", *command], env=env)
    return wyoming_port, process


async def spoken_turn(port: int) -> dict[str, object]:
    """The sample question over the relay protocol (``voxgate client``'s code); turn.done."""
    from voxgate.cli import SAMPLE_QUESTION
    from voxgate.client import converse
    from voxgate.core.audio import read_wav

    samples, rate = read_wav(SAMPLE_QUESTION)
    done: dict[str, object] = {}

    def on_event(_: float, name: str, payload: dict[str, object]) -> None:
        if name == "turn.done":
            done.update(payload)

    result = await converse(
        f"ws://127.0.0.1:{port}/v1/relay", samples, rate, token=ADMIN, on_event=on_event
    )
    assert result.turn_done and len(result.pcm) > 0, result.errors
    return done


async def test_replicas_share_the_llm_server_and_the_wyoming_engines(
    tmp_path: Path, llm_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    """The whole topology of docs/scaling.md on one machine: each replica keeps only its VAD;
    what it hears is transcribed, answered and spoken by the shared servers."""
    url, _ = llm_server
    wyoming_port, engines = start_engines(tmp_path / "engines", url)
    replicas: list[tuple[int, subprocess.Popen[bytes]]] = []
    try:
        wait_ready_tcp(wyoming_port, engines)
        for name in ("a", "b"):
            port, process = start_replica(
                tmp_path / name,
                url,
                VOXGATE_VAD__PROVIDER="silero",
                VOXGATE_MODEL_CACHE=str(load_settings().models_dir),
                VOXGATE_TURN__SEMANTIC_END_OF_TURN="false",
                VOXGATE_STT__PROVIDER="wyoming",
                VOXGATE_STT__PORT=str(wyoming_port),
                VOXGATE_TTS__PROVIDER="wyoming",
                VOXGATE_TTS__PORT=str(wyoming_port),
            )
            replicas.append((port, process))
        for port, process in replicas:
            wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        for port, _ in replicas:
            done = await spoken_turn(port)
            assert "capital" in str(done["user_text"]).lower(), done
            assert str(done["reply_text"]).strip(), done
            usage = done["usage"]
            assert isinstance(usage, dict)
            providers = {e["capability"]: e["provider"] for e in usage["engines"]}
            assert providers == {"stt": "wyoming", "llm": "openai", "tts": "wyoming"}, usage
        for _, process in replicas:
            assert not maps_file(process.pid, MODEL_FILE)
    finally:
        for _, process in [*replicas, (0, engines)]:
            process.terminate()
        for _, process in [*replicas, (0, engines)]:
            process.wait(30)


def wait_ready_tcp(port: int, process: subprocess.Popen[bytes], seconds: float = 300) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"nothing listens on {port} after {seconds} s")
