"""``voxgate db``: the database schema's migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from voxgate.commands.common import ConfigOption, fail, run, say, settings_from
from voxgate.core.errors import StoreError, UnavailableError
from voxgate.store.database import Database, database_url
from voxgate.store.errors import StoreInvalid
from voxgate.store.retention import Pruned, prune

T = TypeVar("T")

db_app = typer.Typer(help="The database's schema: migrate it up or down.", no_args_is_help=True)


def _on_database(config: Path | None, operation: Callable[[Database], Awaitable[T]]) -> T:
    settings = settings_from(config)

    async def opened() -> T:
        config = settings.database
        database = Database(
            database_url(config.url, settings.data_dir),
            pool_size=config.pool_size,
            max_overflow=config.max_overflow,
        )
        try:
            async with asyncio.timeout(settings.database.connect_timeout_s):
                return await operation(database)
        except StoreInvalid as exc:
            fail(str(exc))
        except (StoreError, UnavailableError, OSError, TimeoutError) as exc:
            fail(f"cannot use the database at {database.display_url}: {str(exc) or 'timed out'}")
        finally:
            await database.close()

    return run(opened())


def _shown(revision: str | None) -> str:
    return revision or "none (empty database)"


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Migrate up to this revision.")] = "head",
    config: ConfigOption = None,
) -> None:
    """Migrate the schema up (to the newest, by default); at it already, nothing changes."""

    async def upgrade(database: Database) -> tuple[str | None, str | None]:
        before = await database.upgrade(revision)
        return before, await database.revision()

    before, after = _on_database(config, upgrade)
    if before == after:
        say(f"already at revision {_shown(after)}")
    else:
        say(f"migrated from {_shown(before)} to {_shown(after)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="A revision, or 'base' to drop every table.")],
    config: ConfigOption = None,
) -> None:
    """Migrate the schema down to REVISION ('base': empty; what is in newer tables is lost)."""

    async def downgrade(database: Database) -> tuple[str | None, str | None]:
        before = await database.revision()
        await database.downgrade(revision)
        return before, await database.revision()

    before, after = _on_database(config, downgrade)
    say(f"migrated from {_shown(before)} down to {_shown(after)}")


@db_app.command("current")
def db_current(config: ConfigOption = None) -> None:
    """The schema's revision now, and the newest this voxgate knows."""

    async def current(database: Database) -> str | None:
        return await database.revision()

    now = _on_database(config, current)
    head = Database.head_revision()
    say(f"revision: {_shown(now)}")
    say(f"head:     {head}")
    if now == head:
        say("[green]up to date[/]")
    else:
        say("[yellow]behind[/]: run `voxgate db upgrade`")


@db_app.command("prune")
def db_prune(config: ConfigOption = None) -> None:
    """Delete what is past its retention period now (the server also does it every hour):
    errors after ``database.errors_retention_days``, conversations and usage after theirs."""
    settings = settings_from(config)

    async def pruned(database: Database) -> Pruned:
        return await prune(database, settings.database)

    result = _on_database(config, pruned)
    say(
        f"deleted {result.errors} errors, {result.conversations} conversations "
        f"and {result.usage} usage records"
    )
