"""RAM of one gateway replica: with every model in the process, and with the engines as services.

Starts ``voxgate serve`` twice and reads its resident memory (``VmRSS``) once ``/healthz`` says
ready (models loaded and warmed up), and its peak (``VmHWM``):

- ``local``: the embedded defaults, all in the process (Silero VAD, smart-turn, whisper, the
  llama.cpp LLM, Piper);
- ``services``: what a replica keeps when STT, LLM and TTS are services it calls (Silero VAD and
  smart-turn stay local; the stand-in engines take the place of the HTTP/Wyoming clients, which
  hold no model).

    python -m bench.replica_ram
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.server_load import free_port
from voxgate.core.config import load_settings


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_rss_mb": round(fields["VmHWM"], 1)}


def measure(name: str, extra: dict[str, str]) -> dict[str, object]:
    port = free_port()
    env = {**os.environ, "VOXGATE_DATA_DIR": tempfile.mkdtemp(prefix="voxgate-ram-"), **extra}
    env.pop("VOXGATE_CONFIG", None)
    # The models from the shared cache, not prepared again into the temporary data directory.
    env.setdefault("VOXGATE_MODEL_CACHE", str(load_settings().models_dir))
    command = [sys.executable, "-m", "voxgate", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{name}: not ready")
        time.sleep(2)
        return {"replica": name, **memory_mb(process.pid)}
    finally:
        process.terminate()
        process.wait(60)


if __name__ == "__main__":
    services = {f"VOXGATE_{cap}__PROVIDER": "standin" for cap in ("STT", "LLM", "TTS")}
    rows = [measure("local", {}), measure("services", services)]
    for row in rows:
        print(
            f"{row['replica']:10} RSS {row['rss_mb']:8.1f} MB   peak {row['peak_rss_mb']:8.1f} MB"
        )
    out = Path("bench/results/replica_ram.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
