"""Running the real server on a loopback socket inside a test's event loop (``serving`` lives in
bench/harness.py, shared with the benchmarks)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bench.harness import STANDIN_ENGINES, free_port, serving
from voxgate.core.config import Settings
from voxgate.pipeline import Engines
from voxgate.server.app import create_app
from voxgate.store import Store

__all__ = ["free_port", "open_store", "running_server", "server_settings", "serving", "standin_env"]


@asynccontextmanager
async def running_server(settings: Settings, engines: Engines, store: Store) -> AsyncIterator[str]:
    """Serve on 127.0.0.1 (a free port); yields ``host:port``."""
    async with serving(create_app(settings, engines=engines, store=store)) as address:
        yield address


async def open_store(data_dir: Path) -> Store:
    """The embedded SQLite store in ``data_dir``, migrated."""
    return await Store.open(Settings(data_dir=data_dir))


def server_settings(tmp_path: Path, **server: object) -> Settings:
    """Settings with state in ``tmp_path`` and ``server`` overrides."""
    return Settings(data_dir=tmp_path, server=server)  # type: ignore[arg-type]


def standin_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``voxgate serve`` subprocess: state in ``data_dir``, the instant
    stand-in engines, no configuration file."""
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": str(data_dir),
        **STANDIN_ENGINES,
        **extra,
    }
    env.pop("VOXGATE_CONFIG", None)
    return env
