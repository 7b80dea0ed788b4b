"""Running a voxgate server for a benchmark: in this process on a loopback socket
(:func:`serving`), or as a real ``voxgate serve`` subprocess with its own data directory
(:func:`voxgate_serve`). The tests use the same helpers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

STANDIN_ENGINES = {
    f"VOXGATE_{capability}__PROVIDER": "standin" for capability in ("VAD", "STT", "LLM", "TTS")
}
"""Environment that runs ``voxgate serve`` on the instant stand-in engines (no model at all)."""


@asynccontextmanager
async def serving(
    app: Starlette, make_server: Callable[[uvicorn.Config], uvicorn.Server] = uvicorn.Server
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yields ``host:port``. Leaving the block stops
    the server as a SIGTERM would."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", ws_per_message_deflate=False
    )
    server = make_server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    await task  # raises what went wrong
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=20)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def voxgate_serve(
    data_dir: Path, env: Mapping[str, str], *, ready_timeout_s: float = 300.0
) -> AsyncIterator[str]:
    """``python -m voxgate serve`` on a free loopback port with ``VOXGATE_DATA_DIR=data_dir``
    and ``env`` on top of this process's environment (``VOXGATE_CONFIG`` removed, so only
    ``env`` configures it); yields ``host:port`` once ``/healthz`` answers. Its output goes to
    ``data_dir/serve.log``. Leaving the block stops it with SIGTERM (SIGKILL after 20 s)."""
    port = free_port()
    full_env = {**os.environ, "VOXGATE_DATA_DIR": str(data_dir), **env}
    full_env.pop("VOXGATE_CONFIG", None)
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "voxgate", "serve", "--port", str(port)),
            *("--log-level", "warning"),
            env=full_env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    address = f"127.0.0.1:{port}"
    try:
        await _wait_ready(address, process, log_path, ready_timeout_s)
        yield address
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_ready(
    address: str, process: asyncio.subprocess.Process, log: Path, timeout_s: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(trust_env=False) as client:
        while loop.time() < deadline:
            if process.returncode is not None:
                output = await asyncio.to_thread(log.read_text, errors="replace")
                raise RuntimeError(f"voxgate serve exited:\n{output}")
            try:
                if (await client.get(f"http://{address}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"voxgate serve did not answer /healthz within {timeout_s:.0f} s")
