"""Several replicas starting at once on an empty PostgreSQL database migrate it once: the
migrations run under an advisory lock, and the built-in characters are added once."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg

from voxgate.core.config import Settings
from voxgate.store import Store


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_three_processes_on_an_empty_database_migrate_once(
    postgres_database_url: str,
) -> None:
    env = {**os.environ, "VOXGATE_DATABASE_URL": postgres_database_url}
    env.pop("VOXGATE_CONFIG", None)
    processes = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "voxgate", "db", "upgrade"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [(await process.communicate())[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    migrated = [output for output in outputs if "migrated from none" in output]
    assert len(migrated) == 1, outputs
    assert sum("already at revision" in output for output in outputs) == 2, outputs
    connection = await asyncpg.connect(_dsn(postgres_database_url))
    try:
        versions = await connection.fetch("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    assert len(versions) == 1


async def test_three_stores_opening_together_add_the_built_in_characters_once(
    postgres_database_url: str, tmp_path: object
) -> None:
    settings = Settings(database_url=postgres_database_url)
    stores = await asyncio.gather(*(Store.open(settings) for _ in range(3)))
    try:
        slugs = [character.slug for character in await stores[0].characters.all()]
        assert len(slugs) == len(set(slugs)) > 0
    finally:
        for store in stores:
            await store.close()
