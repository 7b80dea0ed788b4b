"""What every command shares: the consoles, ``--config``, failing cleanly, running on the store."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from voxgate.core.config import Settings, load_settings
from voxgate.core.errors import VoxgateError
from voxgate.store import Store

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (or $VOXGATE_CONFIG).")
]


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit with status 1 (no traceback)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def say(text: str) -> None:
    """One line of output (rich markup allowed; escape what users typed), never wrapped."""
    console.print(text, highlight=False, soft_wrap=True)


def settings_from(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except VoxgateError as exc:
        fail(str(exc))


def run(operation: Coroutine[Any, Any, T]) -> T:
    """Run ``operation`` to the end; a VoxgateError becomes a clean error exit."""
    try:
        return asyncio.run(operation)
    except VoxgateError as exc:
        fail(str(exc))


def with_store(config: Path | None, operation: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store configured by ``config``, run ``operation`` on it, close it."""
    settings = settings_from(config)

    async def opened() -> T:
        store = await Store.open(settings)
        try:
            return await operation(store)
        finally:
            await store.close()

    return run(opened())


def when(timestamp: float | None) -> str:
    """Local time, to the minute; empty for never."""
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def day_start(day: str, option: str) -> float:
    """``YYYY-MM-DD`` → the start of that day (UTC, as usage days are), in epoch seconds."""
    try:
        parsed = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        fail(f"{option}: not a date: {day!r} (expected YYYY-MM-DD, e.g. 2025-01-31)")
    return parsed.timestamp()
