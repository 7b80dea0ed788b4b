"""Running the real server on a loopback socket inside a test's event loop."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from voxgate.core.config import Settings
from voxgate.pipeline import Engines
from voxgate.server.app import create_app
from voxgate.store import Store


@asynccontextmanager
async def running_server(settings: Settings, engines: Engines, store: Store) -> AsyncIterator[str]:
    """Serve on 127.0.0.1 (a free port); yields ``host:port``."""
    async with serving(create_app(settings, engines=engines, store=store)) as address:
        yield address


async def open_store(data_dir: Path) -> Store:
    """The embedded SQLite store in ``data_dir``, migrated."""
    return await Store.open(Settings(data_dir=data_dir))


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


def server_settings(tmp_path: Path, **server: object) -> Settings:
    """Settings with state in ``tmp_path`` and ``server`` overrides."""
    return Settings(data_dir=tmp_path, server=server)  # type: ignore[arg-type]


def free_port() -> int:
    """A TCP port nobody listens on right now (for a server in a subprocess)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def standin_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``voxgate serve`` subprocess: state in ``data_dir``, the instant
    stand-in engines, no configuration file."""
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": str(data_dir),
        "VOXGATE_VAD__PROVIDER": "standin",
        "VOXGATE_STT__PROVIDER": "standin",
        "VOXGATE_LLM__PROVIDER": "standin",
        "VOXGATE_TTS__PROVIDER": "standin",
        **extra,
    }
    env.pop("VOXGATE_CONFIG", None)
    return env
